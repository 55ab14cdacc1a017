/**
 * `npm run bench:edits [-- --seeds N]`: what `painter edit` and Prompt-to-Prompt do on the bundled
 * painter-mini, scored by the attribute classifier (fixtures/mini-classifier), over N scenes of
 * its world (seed k draws scene k):
 *
 *   - masked edit (Blended Latent Diffusion, the object's silhouette as mask): the prompt asks
 *     another colour — is it read inside the mask? Do the pixels outside stay within the VAE's own
 *     reconstruction error of the input?
 *   - Prompt-to-Prompt object swap ("… cat …" → "… dog …" from the same noise): does the edited
 *     image keep the source's background colour, and show the new object — against the plain
 *     target prompt from the same seed? And with local blending of the swapped words
 *     (`--local-blend cat,dog`), which keeps the source's latents outside their attention?
 *
 * Writes results.json, table.md and a picture sheet (input, mask, edit; source, swap, swap with
 * local blending at the last --blend-threshold) to --out.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import sharp from 'sharp';
import * as tf from '@tensorflow/tfjs';
import { classify, type Classifier, type Reading } from './bench-concepts.js';
import { objectMask, renderScene } from './render.js';
import { numberArg } from './script-args.js';
import { loadClassifier } from './train-classifier.js';
import { caption, COLOUR_NAMES, OBJECT_KINDS, sampleScene, type Scene } from './world.js';
import {
  applyConcepts,
  bundledModelPath,
  classifierGuidance,
  loadImageClassifier,
  parseClassifierTarget,
  decodeLatents,
  disposeModel,
  disposeConditioning,
  editLoop,
  encodeEditPrompts,
  imageGrid,
  loadModel,
  LOCAL_BLEND_THRESHOLD,
  modelImageSize,
  packageRoot,
  Rng,
  sampleImages,
  samplePromptToPrompt,
  selectBackend,
  vaeDecode,
  vaeEncode,
  vaeLatentFactor,
  vaeSample,
  writeBytesAtomic,
  type EditRequest,
  type StableDiffusion,
} from '../../src/index.js';

export interface EditBenchSettings {
  seeds: number;
  steps: number;
  guidance: number;
  model: string;
  classifier: string;
  out: string;
  classifierScale: number;
  crossReplace: number;
  selfReplace: number;
  /** Thresholds of the local-blend swaps (one row each; the pipeline's 0.3 first). */
  blendThresholds: number[];
  /** A learned embedding (e.g. the quick start's <cat>) to paint into each scene's object mask. */
  embedding?: { file: string; token: string; object: string; colour: string };
}

interface SceneResult {
  seed: number;
  caption: string;
  concept?: { prompt: string; object: string; colour: string };
  maskedEdit: { asked: string; read: string; outsideError: number; vaeError: number; awayError: number; vaeAwayError: number };
  guidance: { prompt: string; asked: string; without: string; with: string };
  swap: { source: string; target: string; object: string; background: string; sourceBackground: string; plainBackground: string; plainObject: string };
  /** The swap with --local-blend SOURCE_OBJECT,TARGET_OBJECT, per threshold: what the classifier reads. */
  blended: { threshold: number; object: string; background: string }[];
}

/** Mean absolute error (0–255) over the pixels where `where` is 1. */
export function meanError(a: Uint8Array, b: Uint8Array, where: Float32Array): number {
  let sum = 0;
  let n = 0;
  for (let p = 0; p < where.length; p++) {
    if (!where[p]) continue;
    for (let c = 0; c < 3; c++) sum += Math.abs(a[p * 3 + c]! - b[p * 3 + c]!);
    n += 3;
  }
  return n > 0 ? sum / n : 0;
}

export function toUint8(images: tf.Tensor4D): Uint8Array {
  return tf.tidy(() => Uint8Array.from(tf.round(tf.mul(images, 255)).dataSync()));
}

/** The object's silhouette grown by `grow` pixels (so its outline is repainted too), 1 = repaint. */
export async function grownMask(scene: Scene, size: number, grow: number): Promise<Float32Array> {
  const m = await objectMask(scene, size);
  const out = new Float32Array(size * size);
  for (let y = 0; y < size; y++) {
    for (let x = 0; x < size; x++) {
      let hit = 0;
      for (let dy = -grow; dy <= grow && !hit; dy++) for (let dx = -grow; dx <= grow && !hit; dx++) hit = m[Math.min(size - 1, Math.max(0, y + dy)) * size + Math.min(size - 1, Math.max(0, x + dx))]! >= 128 ? 1 : 0;
      out[y * size + x] = hit;
    }
  }
  return out;
}

/** 1 where a pixel is more than `band` pixels (in both axes) from every masked pixel. */
export function awayFromMask(mask: Float32Array, size: number, band: number): Float32Array {
  const out = new Float32Array(size * size).fill(1);
  for (let y = 0; y < size; y++) {
    for (let x = 0; x < size; x++) {
      if (!mask[y * size + x]) continue;
      for (let dy = -band; dy <= band; dy++) for (let dx = -band; dx <= band; dx++) {
        const yy = y + dy;
        const xx = x + dx;
        if (yy >= 0 && yy < size && xx >= 0 && xx < size) out[yy * size + xx] = 0;
      }
    }
  }
  return out;
}

/**
 * The VAE's reconstruction of an image as the edit encodes it — a posterior sample with the
 * edit's own first draw (its seeded generator draws the image posterior first) — as 8-bit RGB.
 */
export function reconstruct(model: StableDiffusion, rgb: Uint8Array, size: number, seed: number): Uint8Array {
  return tf.tidy(() => {
    const f = vaeLatentFactor(model.vae.config);
    const c = model.vae.config.latent_channels;
    const x = tf.sub(tf.mul(tf.tensor4d(rgb, [1, size, size, 3], 'float32'), 2 / 255), 1) as tf.Tensor4D;
    const noise = tf.tensor4d(new Rng(seed).normals(c * (size / f) ** 2), [1, c, size / f, size / f]).transpose([0, 2, 3, 1]) as tf.Tensor4D;
    const back = vaeDecode(model.vae.params, model.vae.config, vaeSample(vaeEncode(model.vae.params, model.vae.config, x), noise));
    return Uint8Array.from(tf.round(tf.mul(tf.clipByValue(tf.add(tf.mul(back, 0.5), 0.5), 0, 1), 255)).dataSync());
  });
}

async function maskedEdit(model: StableDiffusion, rgb: Uint8Array, mask: Float32Array, prompt: string, seed: number, s: EditBenchSettings): Promise<Uint8Array> {
  const latents = maskedEditLatents(model, rgb, mask, prompt, seed, s);
  const image = decodeLatents(model, latents);
  const out = toUint8(image);
  tf.dispose([image, latents]);
  return out;
}

/** The masked edit's final latents (strength 1, DPM++ 2M, the bench's steps and guidance). */
export function maskedEditLatents(model: StableDiffusion, rgb: Uint8Array, mask: Float32Array, prompt: string, seed: number, s: Pick<EditBenchSettings, 'steps' | 'guidance'>): tf.Tensor4D {
  const size = modelImageSize(model);
  const req: EditRequest = {
    prompt,
    negativePrompt: '',
    steps: s.steps,
    guidance: s.guidance,
    scheduler: 'dpm++2m',
    seed,
    clipSkip: 0,
    strength: 1,
    width: size,
    height: size,
    image: Float32Array.from(rgb, (v) => (2 * v) / 255 - 1),
    mask,
  };
  const cond = encodeEditPrompts(model, req);
  const loop = editLoop(model, req, 0, cond);
  let r = loop.next();
  while (!r.done) r = loop.next();
  disposeConditioning(cond);
  return r.value;
}

async function collect(events: AsyncGenerator<{ kind: string; image?: { pixels: Uint8Array } }>): Promise<Uint8Array[]> {
  const images: Uint8Array[] = [];
  for await (const e of events) if (e.kind === 'image') images.push(e.image!.pixels);
  return images;
}

/** A caption's object word replaced by another object (same word count: a word swap). */
function swapObject(text: string, from: string, to: string): string {
  return text
    .split(' ')
    .map((w) => (w === from ? to : w.replace(new RegExp(`^${from}([,.]?)$`), `${to}$1`)))
    .join(' ');
}

/** The word of `text` (split at spaces) that names `object`, with its punctuation ("cat," for cat). */
function wordOf(text: string, object: string): string {
  return text.split(' ').find((w) => w.replace(/[,.]$/, '') === object) ?? object;
}

export async function runEditBench(s: EditBenchSettings, log: (line: string) => void): Promise<{ results: SceneResult[]; table: string }> {
  await selectBackend('auto');
  fs.mkdirSync(s.out, { recursive: true });
  const clf: Classifier = loadClassifier(s.classifier);
  const guideClf = loadImageClassifier(s.classifier);
  const model = loadModel(s.model);
  const size = modelImageSize(model);
  const results: SceneResult[] = [];
  const concept = s.embedding ? applyConcepts(model, { embeddings: [s.embedding.file], token: s.embedding.token, loras: [] }) : undefined;
  const conceptSheet: Uint8Array[] = [];
  const sheet: Uint8Array[] = [];
  const read = (images: Uint8Array[]): Reading[] => classify(clf, images, size);
  try {
    for (let k = 0; k < s.seeds; k++) {
      const rng = new Rng(9000 + k);
      const scene = sampleScene(rng);
      const text = caption(scene);
      const rgb = Uint8Array.from(await renderScene(scene, size));
      const mask = await grownMask(scene, size, 1);
      // Masked edit: the same caption with another colour for the object.
      const others = COLOUR_NAMES.filter((c) => c !== scene.subject.colour && c !== scene.background.colour);
      const asked = others[rng.int(others.length)]!;
      const recoloured = caption({ ...scene, subject: { ...scene.subject, colour: asked } });
      const edited = await maskedEdit(model, rgb, mask, recoloured, 100 + k, s);
      const recon = reconstruct(model, rgb, size, 100 + k);
      const outside = Float32Array.from(mask, (m) => 1 - m);
      const away = awayFromMask(mask, size, 4);
      // Prompt-to-Prompt: the object swapped for another, from the same noise; the prompts leave
      // the background out, so the noise decides it and only attention control can keep it.
      const bare = text.replace(/ (on|against) an? .*$/, '').replace(/,.*$/, '');
      const objects = OBJECT_KINDS.filter((o) => o !== scene.subject.object && bare.split(' ').length === swapObject(bare, scene.subject.object, o).split(' ').length);
      const newObject = objects[rng.int(objects.length)]!;
      const target = swapObject(bare, scene.subject.object, newObject);
      const req = { prompt: bare, negativePrompt: '', steps: s.steps, guidance: s.guidance, scheduler: 'dpm++2m' as const, seed: 200 + k, count: 1, batch: 1, width: size, height: size, clipSkip: 0 };
      const [source, swapped] = await collect(samplePromptToPrompt(model, req, { target, crossReplace: s.crossReplace, selfReplace: s.selfReplace }));
      // The same swap with local blending of the swapped words (the mask is read from the blend).
      const blendedSwaps: Uint8Array[] = [];
      for (const threshold of s.blendThresholds) {
        const localBlend = { words: [wordOf(bare, scene.subject.object), wordOf(target, newObject)], threshold };
        const [, image] = await collect(samplePromptToPrompt(model, req, { target, crossReplace: s.crossReplace, selfReplace: s.selfReplace, localBlend }));
        blendedSwaps.push(image!);
      }
      const [plain] = await collect(sampleImages(model, { ...req, prompt: target }));
      // Classifier guidance toward the asked colour, on a prompt that names no colour.
      const plainPrompt = `a ${scene.subject.object}`;
      const cgReq = { ...req, prompt: plainPrompt, seed: 300 + k };
      const [unguided] = await collect(sampleImages(model, cgReq));
      const [guided] = await collect(sampleImages(model, { ...cgReq, guide: classifierGuidance(model, guideClf, [parseClassifierTarget(guideClf, `colour=${asked}`)], s.classifierScale) }));
      const [rEdit, rSource, rSwap, rPlain, rUnguided, rGuided, ...rBlended] = read([edited, source!, swapped!, plain!, unguided!, guided!, ...blendedSwaps]);
      // The learned subject painted into the scene, where its object was (a roomier mask).
      let conceptResult: SceneResult['concept'];
      if (concept && s.embedding) {
        const where = text.match(/ (on|against) an? .*$/)?.[0] ?? '';
        const prompt = `a ${s.embedding.token}${where}`;
        const painted = await maskedEdit(concept.model, rgb, await grownMask(scene, size, 3), prompt, 400 + k, s);
        const [rc] = read([painted]);
        conceptResult = { prompt, object: rc!['object']!, colour: rc!['colour']! };
        if (k < 6) conceptSheet.push(rgb, painted);
      }
      results.push({
        seed: k,
        caption: text,
        maskedEdit: {
          asked,
          read: rEdit!['colour']!,
          outsideError: meanError(edited, rgb, outside),
          vaeError: meanError(recon, rgb, outside),
          awayError: meanError(edited, rgb, away),
          vaeAwayError: meanError(recon, rgb, away),
        },
        ...(conceptResult && { concept: conceptResult }),
        guidance: { prompt: plainPrompt, asked, without: rUnguided!['colour']!, with: rGuided!['colour']! },
        swap: { source: bare, target, object: rSwap!['object']!, background: rSwap!['backgroundColour']!, sourceBackground: rSource!['backgroundColour']!, plainBackground: rPlain!['backgroundColour']!, plainObject: rPlain!['object']! },
        blended: rBlended.map((r, i) => ({ threshold: s.blendThresholds[i]!, object: r['object']!, background: r['backgroundColour']! })),
      });
      const maskRgb = Uint8Array.from({ length: size * size * 3 }, (_, i) => (mask[Math.floor(i / 3)] ? 255 : 0));
      if (k < 6) sheet.push(rgb, maskRgb, edited, source!, swapped!, blendedSwaps.at(-1) ?? swapped!);
      log(`scene ${k}: "${text}" → colour ${asked} read ${rEdit!['colour']}; swap to "${target}": object ${rSwap!['object']}, background ${rSwap!['backgroundColour']} (source ${rSource!['backgroundColour']})`);
    }
  } finally {
    concept?.dispose();
    disposeModel(model);
  }
  const n = results.length;
  const share = (f: (r: SceneResult) => boolean) => results.filter(f).length / n;
  const mean = (f: (r: SceneResult) => number) => results.reduce((a, r) => a + f(r), 0) / n;
  const pct = (x: number) => `${Math.round(100 * x)}%`;
  const objectOf = (r: SceneResult) => OBJECT_KINDS.find((o) => r.swap.target.split(/[ ,.]/).includes(o) && !r.swap.source.split(/[ ,.]/).includes(o));
  const table = [
    `| painter-mini, ${n} scenes, ${s.steps} steps, guidance ${s.guidance} | |`,
    '|---|---|',
    `| masked edit: the asked colour read inside the mask | ${pct(share((r) => r.maskedEdit.read === r.maskedEdit.asked))} |`,
    `| masked edit: mean error outside the mask / the VAE's reconstruction error there (same posterior draw; 0–255) | ${mean((r) => r.maskedEdit.outsideError).toFixed(2)} / ${mean((r) => r.maskedEdit.vaeError).toFixed(2)} |`,
    `| … more than one latent cell (4 px) from the mask | ${mean((r) => r.maskedEdit.awayError).toFixed(2)} / ${mean((r) => r.maskedEdit.vaeAwayError).toFixed(2)} |`,
    `| classifier guidance (--classify colour=C, scale ${s.classifierScale}) on "a OBJECT": C read | ${pct(share((r) => r.guidance.with === r.guidance.asked))} (without: ${pct(share((r) => r.guidance.without === r.guidance.asked))}) |`,
    ...(s.embedding
      ? [
          `| ${s.embedding.token} painted into the object's mask: ${s.embedding.object} read / ${s.embedding.colour} read | ${pct(share((r) => r.concept?.object === s.embedding!.object))} / ${pct(share((r) => r.concept?.colour === s.embedding!.colour))} |`,
        ]
      : []),
    `| Prompt-to-Prompt (cross ${s.crossReplace}, self ${s.selfReplace}) swap keeps the source's background colour | ${pct(share((r) => r.swap.background === r.swap.sourceBackground))} (plain target prompt, same seed: ${pct(share((r) => r.swap.plainBackground === r.swap.sourceBackground))}) |`,
    `| Prompt-to-Prompt swap shows the new object | ${pct(share((r) => r.swap.object === objectOf(r)))} (plain target prompt: ${pct(share((r) => r.swap.plainObject === objectOf(r)))}) |`,
    ...s.blendThresholds.map((t, i) => {
      const kept = pct(share((r) => r.blended[i]!.background === r.swap.sourceBackground));
      return `| … with --local-blend OLD,NEW (the swapped words), --blend-threshold ${t}: background colour kept / new object shown | ${kept} / ${pct(share((r) => r.blended[i]!.object === objectOf(r)))} |`;
    }),
  ].join('\n');
  await writeBytesAtomic(path.join(s.out, 'results.json'), JSON.stringify({ settings: s, results }, null, 1) + '\n');
  await writeBytesAtomic(path.join(s.out, 'table.md'), table + '\n');
  if (conceptSheet.length > 0) {
    const g = await imageGrid(conceptSheet, size, size, 4);
    await writeBytesAtomic(path.join(s.out, 'concept-edits.png'), await sharp(g).resize({ width: 4 * 128, kernel: 'nearest' }).png().toBuffer());
  }
  const grid = await imageGrid(sheet, size, size, 6);
  await writeBytesAtomic(path.join(s.out, 'edits.png'), await sharp(grid).resize({ width: 6 * 128, kernel: 'nearest' }).png().toBuffer());
  return { results, table };
}

export async function main(argv: string[], log: (line: string) => void = () => {}): Promise<string> {
  const { values } = parseArgs({
    args: argv,
    options: {
      seeds: { type: 'string' },
      steps: { type: 'string' },
      guidance: { type: 'string' },
      'cross-replace': { type: 'string' },
      'self-replace': { type: 'string' },
      'blend-threshold': { type: 'string' },
      embedding: { type: 'string' },
      token: { type: 'string' },
      model: { type: 'string' },
      out: { type: 'string' },
    },
    strict: true,
  });
  const s: EditBenchSettings = {
    seeds: numberArg(values.seeds, 'seeds', 16, 'count'),
    steps: numberArg(values.steps, 'steps', 30, 'count'),
    guidance: numberArg(values.guidance, 'guidance', 7.5, 'positive'),
    model: values.model ?? bundledModelPath(),
    classifier: path.join(packageRoot(), 'fixtures', 'mini-classifier'),
    out: values.out ?? path.join('runs', 'bench-edits'),
    classifierScale: 10,
    // The quick start's subject: an orange cat (with purple stripes).
    ...(values.embedding !== undefined && { embedding: { file: values.embedding, token: values.token ?? '<cat>', object: 'cat', colour: 'orange' } }),
    crossReplace: numberArg(values['cross-replace'], 'cross-replace', 0.4, 'weight'),
    selfReplace: numberArg(values['self-replace'], 'self-replace', 0.4, 'weight'),
    blendThresholds: (values['blend-threshold'] ?? String(LOCAL_BLEND_THRESHOLD)).split(',').map((t) => numberArg(t, 'blend-threshold', LOCAL_BLEND_THRESHOLD, 'fraction')),
  };
  const r = await runEditBench(s, log);
  process.stdout.write(r.table + '\n');
  return `bench:edits: results in ${s.out} (results.json, table.md, edits.png)`;
}
