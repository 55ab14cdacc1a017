/**
 * AUTOMATIC1111's "infotext": the generation parameters text stored in a PNG's "parameters"
 * chunk. Layout: the prompt (may span lines), "Negative prompt: …", and a last line of
 * "Key: value" pairs where values holding ',', ':' or newlines are JSON-quoted.
 */

export interface GenerationParams {
  prompt: string;
  negativePrompt: string;
  steps: number;
  /** A1111 sampler name: "DDIM", "PLMS", "Euler a", "DPM++ 2M". */
  sampler: string;
  /** A1111's "Schedule type" ("Karras", "Exponential", "SGM Uniform", …), where it records one. */
  scheduleType?: string;
  cfgScale: number;
  seed: number;
  width: number;
  height: number;
  modelHash?: string;
  model?: string;
  /** A1111's variation seed and its strength (written when the strength is above 0). */
  variationSeed?: number;
  variationStrength?: number;
  /** A1111 numbering: 1 = last layer (painter --clip-skip 0), 2 = penultimate, … */
  clipSkip?: number;
  tiHashes?: Record<string, string>;
  loraHashes?: Record<string, string>;
  /** Other pairs, kept as read (e.g. "Version"). */
  extra: Record<string, string>;
}

function quote(v: string): string {
  return /[,:\n"]/.test(v) ? JSON.stringify(v) : v;
}

function hashList(h: Record<string, string>): string {
  return Object.entries(h)
    .map(([k, v]) => `${k}: ${v}`)
    .join(', ');
}

function parseHashList(s: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const part of s.split(',')) {
    const i = part.lastIndexOf(':');
    if (i > 0) out[part.slice(0, i).trim()] = part.slice(i + 1).trim();
  }
  return out;
}

export function formatInfotext(p: GenerationParams): string {
  const pairs: [string, string | number][] = [
    ['Steps', p.steps],
    ['Sampler', p.sampler],
  ];
  // The order of A1111's create_infotext.
  if (p.scheduleType) pairs.push(['Schedule type', p.scheduleType]);
  pairs.push(['CFG scale', p.cfgScale], ['Seed', p.seed], ['Size', `${p.width}x${p.height}`]);
  if (p.modelHash) pairs.push(['Model hash', p.modelHash]);
  if (p.model) pairs.push(['Model', p.model]);
  if (p.variationStrength && p.variationSeed !== undefined) pairs.push(['Variation seed', p.variationSeed], ['Variation seed strength', p.variationStrength]);
  if (p.clipSkip && p.clipSkip > 1) pairs.push(['Clip skip', p.clipSkip]);
  if (p.tiHashes && Object.keys(p.tiHashes).length > 0) pairs.push(['TI hashes', hashList(p.tiHashes)]);
  if (p.loraHashes && Object.keys(p.loraHashes).length > 0) pairs.push(['Lora hashes', hashList(p.loraHashes)]);
  for (const [k, v] of Object.entries(p.extra)) pairs.push([k, v]);
  const lines = [p.prompt];
  if (p.negativePrompt) lines.push(`Negative prompt: ${p.negativePrompt}`);
  lines.push(pairs.map(([k, v]) => `${k}: ${quote(String(v))}`).join(', '));
  return lines.join('\n');
}

const PAIR = /\s*([\w][\w \-/+]*?):\s*("(?:\\.|[^\\"])*"|[^,]*)(?:,|$)/g;

/** A quoted value as A1111 writes it (JSON string syntax); a malformed one (another tool's) stays as written. */
function unquote(raw: string): string {
  try {
    const v: unknown = JSON.parse(raw);
    return typeof v === 'string' ? v : raw;
  } catch {
    return raw;
  }
}

export function parseInfotext(text: string): GenerationParams {
  const lines = text.replace(/\r\n/g, '\n').split('\n');
  let last = lines.length > 1 || /Steps: \d+/.test(lines[0] ?? '') ? lines.pop()! : '';
  if (!/Steps: \d+/.test(last)) {
    lines.push(last);
    last = '';
  }
  const prompt: string[] = [];
  const negative: string[] = [];
  let inNegative = false;
  for (const line of lines) {
    if (line.startsWith('Negative prompt:')) {
      inNegative = true;
      negative.push(line.slice('Negative prompt:'.length).trim());
    } else (inNegative ? negative : prompt).push(line);
  }
  const fields: Record<string, string> = {};
  for (const m of last.matchAll(PAIR)) {
    const raw = m[2]!.trim();
    fields[m[1]!.trim()] = raw.startsWith('"') ? unquote(raw) : raw;
  }
  const take = (k: string) => {
    const v = fields[k];
    delete fields[k];
    return v;
  };
  const [w, h] = (take('Size') ?? '0x0').split('x').map(Number);
  const clip = take('Clip skip');
  const scheduleType = take('Schedule type');
  const variationSeed = take('Variation seed');
  const variationStrength = take('Variation seed strength');
  const ti = take('TI hashes');
  const lora = take('Lora hashes');
  return {
    prompt: prompt.join('\n'),
    negativePrompt: negative.join('\n'),
    steps: Number(take('Steps') ?? 0),
    sampler: take('Sampler') ?? '',
    scheduleType,
    cfgScale: Number(take('CFG scale') ?? 0),
    seed: Number(take('Seed') ?? 0),
    width: w ?? 0,
    height: h ?? 0,
    modelHash: take('Model hash'),
    model: take('Model'),
    clipSkip: clip === undefined ? undefined : Number(clip),
    variationSeed: variationSeed === undefined ? undefined : Number(variationSeed),
    variationStrength: variationStrength === undefined ? undefined : Number(variationStrength),
    tiHashes: ti === undefined ? undefined : parseHashList(ti),
    loraHashes: lora === undefined ? undefined : parseHashList(lora),
    extra: fields,
  };
}
