/**
 * The gallery page of a folder of generated PNGs (index.html beside them): thumbnails grouped by
 * prompt, each with its infotext (seed, sampler, steps, CFG, size, model, LoRAs and embeddings)
 * and the `painter generate` line that makes it again. Pure: entries in, page out.
 */
import type { GenerationParams } from '../../core/infotext.js';
import { shellQuote } from './command-line.js';
import { copyLine, escapeHtml, fileHref, htmlPage } from './html.js';

export interface GalleryEntry {
  /** The PNG's name, relative to the page. */
  file: string;
  /** Its parameters (A1111 infotext), when it has them. */
  parameters?: GenerationParams;
  /** The generate flags that make it again, or why painter cannot / why it has no parameters. */
  rerun?: { flags: string } | { problem: string };
}

export interface PromptGroup {
  /** undefined: the PNGs without generation parameters. */
  prompt: string | undefined;
  entries: GalleryEntry[];
}

/** Entries grouped by prompt, groups in the order their first image comes; PNGs without parameters last. */
export function groupByPrompt(entries: readonly GalleryEntry[]): PromptGroup[] {
  const groups = new Map<string | undefined, GalleryEntry[]>();
  for (const e of entries) {
    const key = e.parameters?.prompt;
    groups.set(key, [...(groups.get(key) ?? []), e]);
  }
  const all = [...groups].map(([prompt, list]) => ({ prompt, entries: list }));
  return [...all.filter((g) => g.prompt !== undefined), ...all.filter((g) => g.prompt === undefined)];
}

/** `painter generate 'PROMPT' --negative … FLAGS`: what makes the image again. */
export function rerunLine(p: GenerationParams, flags: string): string {
  const words = ['painter', 'generate', shellQuote(p.prompt)];
  if (p.negativePrompt) words.push('--negative', shellQuote(p.negativePrompt));
  if (flags) words.push(flags);
  return words.join(' ');
}

const hashes = (h: Record<string, string> | undefined) =>
  h && Object.keys(h).length > 0
    ? Object.entries(h)
        .map(([k, v]) => `${k} (${v})`)
        .join(', ')
    : undefined;

/** The infotext a card shows, as (label, text) rows. */
export function infotextRows(p: GenerationParams): [string, string][] {
  const rows: [string, string | undefined][] = [
    ['seed', String(p.seed)],
    ['sampler', p.sampler ? `${p.sampler}${p.scheduleType ? ` (${p.scheduleType})` : ''}` : undefined],
    ['steps', p.steps > 0 ? String(p.steps) : undefined],
    ['CFG', p.cfgScale > 0 ? String(p.cfgScale) : undefined],
    ['size', p.width > 0 ? `${p.width}×${p.height}` : undefined],
    ['negative', p.negativePrompt || undefined],
    ['model', [p.model, p.modelHash && `hash ${p.modelHash}`].filter(Boolean).join(', ') || undefined],
    ['LoRA', hashes(p.loraHashes)],
    ['embeddings', hashes(p.tiHashes)],
    ['variation', p.variationStrength ? `seed ${p.variationSeed}, strength ${p.variationStrength}` : undefined],
    ['clip skip', p.clipSkip && p.clipSkip > 1 ? String(p.clipSkip) : undefined],
  ];
  return rows.filter((r): r is [string, string] => r[1] !== undefined);
}

function card(e: GalleryEntry): string {
  const p = e.parameters;
  const info = p ? `<dl class="info">${infotextRows(p).map(([k, v]) => `<dt>${escapeHtml(k)}</dt><dd>${escapeHtml(v)}</dd>`).join('')}</dl>` : '';
  const rerun = e.rerun === undefined ? '' : 'flags' in e.rerun && p ? copyLine(rerunLine(p, e.rerun.flags)) : 'problem' in e.rerun ? `<p class="sub">${escapeHtml(e.rerun.problem)}</p>` : '';
  return `<figure><a href="${fileHref(e.file)}"><img src="${fileHref(e.file)}" alt="${escapeHtml(p?.prompt ?? e.file)}" loading="lazy"></a><figcaption><div class="step">${escapeHtml(e.file)}</div>${info}${rerun}</figcaption></figure>`;
}

/** The gallery page of `entries` in the folder `dir`. */
export function galleryHtml(dir: string, entries: readonly GalleryEntry[]): string {
  const groups = groupByPrompt(entries);
  const sections = groups.map((g) => {
    const head = g.prompt !== undefined ? escapeHtml(g.prompt) : '<em>no generation parameters</em>';
    return `<section><h2>${head} <span class="sub">(${g.entries.length})</span></h2><div class="cards">${g.entries.map(card).join('\n')}</div></section>`;
  });
  const prompts = groups.filter((g) => g.prompt !== undefined).length;
  const body = [
    `<header><h1>Generated images</h1><p class="sub">${escapeHtml(dir)} · ${entries.length} image${entries.length === 1 ? '' : 's'}, ${prompts} prompt${prompts === 1 ? '' : 's'}</p></header>`,
    ...sections,
    `<footer>written by painter report; each line makes its image again (with the same model, embeddings and LoRAs)</footer>`,
  ];
  return htmlPage({ title: `Generated images — ${dir}` }, body.join('\n'));
}
