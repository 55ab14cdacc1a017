/**
 * `npm run bench:concepts [-- --seed N]`: what painter's concept learning achieves on the bundled
 * painter-mini, scored by the shipped attribute classifier (fixtures/mini-classifier):
 *
 *   - VAE reconstruction PSNR on held-out scenes;
 *   - prompt fidelity of generation (classified object / colour / background colour = prompt's);
 *   - Textual Inversion of a held-out subject against its init-token baseline;
 *   - DreamBooth on the same subject, which also wears a never-seen accessory: subject fidelity,
 *     and PRES (how much plain class-prompt samples look like the subject: the share of its
 *     colour, pattern and accessory they carry) with and without prior preservation — and
 *     against Textual Inversion (DreamBooth's Table 1 in small);
 *   - pivotal tuning (a DreamBooth-LoRA whose identifier is a new embedding learnt with it),
 *     scored as DreamBooth is, against both;
 *   - Textual Inversion with masked loss (a mask of the subject beside each photo), and how
 *     often each method's samples carry the training photos' background colours.
 *
 * The seed picks the subject (a held-out combination plus an accessory) and draws every photo,
 * prompt and sample. Training runs through the library's `invert` and `dreambooth` (what the
 * commands run); sampling and scoring run here on the files they write. Everything lands in --out:
 * the subject's photos, runs, sample grids, results.json, table.md and index.html (the table and
 * the sample grids as a page).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { backgroundLeak, benchRows, formatTable, pct, scoreSubject, type ConceptBenchResult, type MethodResult, type Reading } from './bench-concepts-results.js';
import { parseBenchArgs, type BenchPart, type ConceptBenchSettings, type SamplingSettings } from './bench-concepts-settings.js';
import { conceptBenchHtml } from './bench-page.js';
import { imagesToTensor, predict, type ClassifierConfig } from './classifier.js';
import { renderScene } from './render.js';
import { writeSubjectMasks } from './subject-masks.js';
import { subjectScenes, writeScenePngs } from './subject-photos.js';
import { loadClassifier } from './train-classifier.js';
import { caption, COLOUR_NAMES, HELD_OUT_COMBINATIONS, heldOutSubject, isHeldOut, LABEL_CLASSES, LABEL_NAMES, sampleScene, sceneLabels, subjectPhrase, type Scene, type FeatureKind, type Subject } from './world.js';
import { PainterError, Rng, applyConcepts, disposeModel, dreambooth, imageGrid, invert, loadModel, modelImageSize, sampleImages, selectBackend, vaeDecode, vaeEncode, writeBytesAtomic, type Hooks, type Params, type StableDiffusion } from '../../src/index.js';

export * from './bench-concepts-results.js';
export * from './bench-concepts-settings.js';

// ---------------------------------------------------------------------------------------------
// Subject, readings and scores (pure)

/**
 * Accessories the classifier reads reliably enough to score. On photos of the held-out subjects
 * the shipped 64×64 classifier recognises a hat 95% of the time, a bow 94%, a collar 75% and a
 * crown 73% (64 photos each); the 32×32 one it replaced read the
 * hat 88% and the others ≤ 35%. The hat, the largest of them, is the never-seen feature.
 */
export const SCORED_FEATURES: readonly FeatureKind[] = ['hat'];

/** The benchmark's subject for a seed: a held-out combination wearing a never-seen accessory. */
export function benchSubject(seed: number): Subject {
  const rng = new Rng(seed * 4 + 1);
  const c = HELD_OUT_COMBINATIONS[rng.int(HELD_OUT_COMBINATIONS.length)]!;
  const kind = SCORED_FEATURES[rng.int(SCORED_FEATURES.length)]!;
  const colours = COLOUR_NAMES.filter((x) => x !== c.colour && x !== c.patternColour);
  return heldOutSubject(c, [{ kind, colour: colours[rng.int(colours.length)]! }]);
}

/** Mean per-image PSNR in dB of 8-bit images (identical images count as 99 dB). */
export function psnr(a: Uint8Array, b: Uint8Array): number {
  if (a.length !== b.length) throw new Error('psnr: images differ in size');
  let se = 0;
  for (let i = 0; i < a.length; i++) se += (a[i]! - b[i]!) ** 2;
  const mse = se / a.length;
  return mse === 0 ? 99 : 10 * Math.log10((255 * 255) / mse);
}

/** Box-filter downscale of a square RGB image by an integer factor (what SVG rendering at the small size approximates). */
export function downscale(pixels: Uint8Array, size: number, factor: number): Uint8Array {
  if (factor === 1) return pixels;
  if (size % factor !== 0) throw new Error(`downscale: ${size} is not a multiple of ${factor}`);
  const out = new Uint8Array((size / factor) ** 2 * 3);
  const n = size / factor;
  for (let y = 0; y < n; y++) {
    for (let x = 0; x < n; x++) {
      for (let c = 0; c < 3; c++) {
        let sum = 0;
        for (let dy = 0; dy < factor; dy++) for (let dx = 0; dx < factor; dx++) sum += pixels[((y * factor + dy) * size + x * factor + dx) * 3 + c]!;
        out[(y * n + x) * 3 + c] = Math.round(sum / (factor * factor));
      }
    }
  }
  return out;
}

/**
 * A square RGB image of `size` pixels at the classifier's `to`: box-averaged down, or repeated
 * up (a 32×32 model read by a 64×64 classifier).
 */
export function toClassifierSize(pixels: Uint8Array, size: number, to: number): Uint8Array {
  if (size >= to) {
    if (size % to !== 0) throw new PainterError(`the classifier reads ${to}px images; ${size}px samples do not scale to it`);
    return downscale(pixels, size, size / to);
  }
  if (to % size !== 0) throw new PainterError(`the classifier reads ${to}px images; ${size}px samples do not scale to it`);
  const f = to / size;
  const out = new Uint8Array(to * to * 3);
  for (let y = 0; y < to; y++) for (let x = 0; x < to; x++) for (let c = 0; c < 3; c++) out[(y * to + x) * 3 + c] = pixels[(Math.floor(y / f) * size + Math.floor(x / f)) * 3 + c]!;
  return out;
}

// ---------------------------------------------------------------------------------------------
// Measurements

export interface Classifier {
  params: Params;
  config: ClassifierConfig;
}

export function classify(clf: Classifier, images: readonly Uint8Array[], size: number): Reading[] {
  const s = clf.config.imageSize;
  const readings: Reading[] = [];
  for (let i = 0; i < images.length; i += 64) {
    const x = imagesToTensor(images.slice(i, i + 64).map((im) => toClassifierSize(im, size, s)), s);
    const pred = predict(clf.params, clf.config, x);
    x.dispose();
    for (let j = 0; j < x.shape[0]; j++) {
      const r = {} as Reading;
      for (const name of LABEL_NAMES) r[name] = (LABEL_CLASSES[name] as readonly string[])[pred[name][j]!]!;
      readings.push(r);
    }
  }
  return readings;
}

async function sample(model: StableDiffusion, prompt: string, count: number, seed: number, s: SamplingSettings): Promise<Uint8Array[]> {
  const size = modelImageSize(model);
  const images: Uint8Array[] = [];
  const req = { prompt, negativePrompt: '', ...s, seed, count, batch: Math.min(count, 8), width: size, height: size, clipSkip: 0 };
  for await (const e of sampleImages(model, req)) if (e.kind === 'image') images.push(e.image.pixels);
  return images;
}

/** Held-out scenes (held-out subjects, accessories) that pretraining never saw. */
function heldOutScenes(seed: number, n: number): Scene[] {
  const rng = new Rng(seed * 4 + 2);
  const scenes: Scene[] = [];
  while (scenes.length < n) {
    const s = sampleScene(rng, { includeHeldOut: true });
    if (isHeldOut(s)) scenes.push(s);
  }
  return scenes;
}

async function measurePsnr(model: StableDiffusion, scenes: readonly Scene[]): Promise<{ mean: number; min: number; originals: Uint8Array[]; recon: Uint8Array[] }> {
  const size = modelImageSize(model);
  const originals: Uint8Array[] = [];
  for (const s of scenes) originals.push(await renderScene(s, size));
  const recon: Uint8Array[] = [];
  for (let i = 0; i < originals.length; i += 16) {
    const batch = originals.slice(i, i + 16);
    const out = tf.tidy(() => {
      const x = imagesToTensor(batch, size);
      // The posterior mean, decoded: the deterministic reconstruction.
      const y = vaeDecode(model.vae.params, model.vae.config, vaeEncode(model.vae.params, model.vae.config, x).mean as tf.Tensor4D);
      return tf.round(tf.mul(tf.clipByValue(tf.add(tf.mul(y, 0.5), 0.5), 0, 1), 255));
    });
    const data = await out.data();
    out.dispose();
    const per = size * size * 3;
    for (let j = 0; j < batch.length; j++) recon.push(Uint8Array.from(data.subarray(j * per, (j + 1) * per)));
  }
  const values = originals.map((o, i) => psnr(o, recon[i]!));
  return { mean: values.reduce((a, b) => a + b, 0) / values.length, min: Math.min(...values), originals, recon };
}

/** Hooks that append a training run's notes and warnings to `logFile` (the runs' own logs hold their steps). */
function logHooks(logFile: string, what: string): Hooks {
  const write = (line: string) => fs.appendFileSync(logFile, `${what}: ${line}\n`);
  return { info: write, warn: (m) => write(`warning: ${m}`) };
}

/** A fresh run folder each time, never a resumed one. */
function freshRun(dir: string): string {
  fs.rmSync(dir, { recursive: true, force: true });
  return dir;
}

// ---------------------------------------------------------------------------------------------
// The benchmark

/** The parts that train on the subject's photos (and so need them, the reference and the baseline). */
const PERSONALISATION_PARTS: readonly BenchPart[] = ['ti', 'dreambooth', 'pivotal', 'masked'];

export async function runConceptBench(s: ConceptBenchSettings, log: (line: string) => void): Promise<ConceptBenchResult> {
  const t0 = performance.now();
  const backend = await selectBackend(s.backend);
  fs.mkdirSync(s.out, { recursive: true });
  const logFile = path.join(s.out, 'commands.log');
  const subject = benchSubject(s.seed);
  const phrase = subjectPhrase(subject);
  const className = subject.object;
  log(`subject: ${phrase} (seed ${s.seed}); output in ${s.out}`);
  const clf = loadClassifier(s.classifier);
  const base = loadModel(s.model);
  const size = modelImageSize(base);
  const grid = async (name: string, images: readonly Uint8Array[]) => writeBytesAtomic(path.join(s.out, `${name}.png`), await imageGrid(images, size, size, 8));
  const seedOf = (k: number) => s.seed * 100_000 + k * 1000;
  const want = new Set(s.only);
  const result: ConceptBenchResult = { seed: s.seed, subject: phrase, backend: backend.name, seconds: 0 };
  try {
    // 1. VAE
    if (want.has('vae')) {
      const v = await measurePsnr(base, heldOutScenes(s.seed, s.psnrScenes));
      await grid('vae-reconstruction', v.originals.slice(0, 8).flatMap((o, i) => [o, v.recon[i]!]));
      result.psnr = { scenes: s.psnrScenes, mean: v.mean, min: v.min };
      log(`VAE PSNR ${v.mean.toFixed(2)} dB`);
    }

    // 2. Prompt fidelity
    if (want.has('prompts')) {
      const rng = new Rng(s.seed * 4 + 3);
      const scenes = Array.from({ length: s.prompts }, () => sampleScene(rng));
      const captions = scenes.map((sc) => caption(sc, rng));
      const images: Uint8Array[] = [];
      for (const [i, c] of captions.entries()) images.push((await sample(base, c, 1, seedOf(1) + i, s.sampling))[0]!);
      const readings = classify(clf, images, size);
      const frac = (f: (r: Reading, l: ReturnType<typeof sceneLabels>) => boolean) => readings.filter((r, i) => f(r, sceneLabels(scenes[i]!))).length / readings.length;
      result.promptFidelity = {
        prompts: s.prompts,
        object: frac((r, l) => r['object'] === l.object),
        colour: frac((r, l) => r['colour'] === l.colour),
        background: frac((r, l) => r['backgroundColour'] === l.backgroundColour),
      };
      await grid('prompt-fidelity', images.slice(0, 32));
      await writeBytesAtomic(path.join(s.out, 'prompt-fidelity.json'), JSON.stringify(captions.map((c, i) => ({ caption: c, read: readings[i] })), null, 1));
      const pf = result.promptFidelity;
      log(`prompt fidelity: object ${pct(pf.object)}, colour ${pct(pf.colour)}, background ${pct(pf.background)}`);
    }
    if (PERSONALISATION_PARTS.some((p) => want.has(p))) await personalisation();
    result.seconds = (performance.now() - t0) / 1000;
    await writeBytesAtomic(path.join(s.out, 'results.json'), JSON.stringify({ settings: s, ...result }, null, 2) + '\n');
    await writeBytesAtomic(path.join(s.out, 'table.md'), formatTable(result) + '\n');
    await writeBytesAtomic(path.join(s.out, 'index.html'), conceptBenchHtml(result, benchRows(result)));
    return result;
  } finally {
    disposeModel(base);
    for (const p of clf.params.values()) p.dispose();
  }

  /** Parts 3–7: Textual Inversion, DreamBooth, pivotal tuning and masked Textual Inversion on the seed's subject. */
  async function personalisation(): Promise<void> {
    // 3. The subject's photos, what the classifier makes of real ones, and the baseline
    const photosDir = path.join(s.out, 'photos');
    fs.rmSync(photosDir, { recursive: true, force: true });
    const photoScenes = subjectScenes(subject, s.photos, s.seed * 4 + 4);
    await writeScenePngs(photosDir, 'photo', photoScenes, size);
    const refImages: Uint8Array[] = [];
    for (const sc of subjectScenes(subject, s.samples, s.seed * 4 + 5)) refImages.push(await renderScene(sc, size));
    result.reference = scoreSubject(classify(clf, refImages, size), subject);
    const trainingBackgrounds = [...new Set(photoScenes.map((sc) => sceneLabels(sc).backgroundColour))].sort();
    result.trainingBackgrounds = trainingBackgrounds;
    const classPrompt = `a photo of a ${className}`;
    const scoreSamples = async (model: StableDiffusion, prompt: string, k: number, name: string) => {
      const images = await sample(model, prompt, s.samples, seedOf(k), s.sampling);
      await grid(name, images);
      const readings = classify(clf, images, size);
      return { score: scoreSubject(readings, subject), backgroundLeak: backgroundLeak(readings, trainingBackgrounds) };
    };
    result.baseline = { label: 'baseline', prompt: classPrompt, ...(await scoreSamples(base, classPrompt, 2, 'baseline')) };
    log(`baseline "${classPrompt}": subject ${pct(result.baseline.score.subject)}, combination ${pct(result.baseline.score.combination)}`);
    const common = { model: s.model, seed: s.seed, validationEvery: 0, backend: backend.name };
    const embeddingsDir = path.join(s.out, 'embeddings');

    // 4. Textual Inversion; 7. the same with a mask of the subject beside each photo
    const trainInversion = async (dir: string, token: string, runName: string, gridName: string): Promise<MethodResult> => {
      const t = performance.now();
      const ti = await invert(
        { dir, ...common, token, initToken: className, steps: s.tiSteps, lr: s.tiLr, checkpointEvery: s.tiSteps, out: freshRun(path.join(s.out, runName)), embeddingsDir },
        logHooks(logFile, runName),
      );
      const trainSeconds = (performance.now() - t) / 1000;
      const tiModel = applyConcepts(base, { embeddings: [ti.output], loras: [] });
      const prompt = `a photo of ${token}`;
      try {
        // Both runs sample from the same seeds, so sampling noise does not tell them apart.
        const r: MethodResult = { label: runName, prompt, ...(await scoreSamples(tiModel.model, prompt, 3, gridName)), trainSeconds };
        log(`${runName} (${trainSeconds.toFixed(0)} s): subject ${pct(r.score.subject)}, combination ${pct(r.score.combination)}, likeness ${pct(r.score.likeness)}, training backgrounds ${pct(r.backgroundLeak!)}`);
        return r;
      } finally {
        tiModel.dispose();
      }
    };
    if (want.has('ti')) result.textualInversion = await trainInversion(photosDir, `<${subject.object}-${s.seed}>`, 'ti', 'textual-inversion');

    // 5. DreamBooth with and without prior preservation; 6. pivotal tuning (with prior)
    const trainDreambooth = async (name: 'dreambooth-prior' | 'dreambooth-no-prior' | 'pivotal', seeds: readonly [number, number]): Promise<MethodResult> => {
      const prior = name !== 'dreambooth-no-prior';
      const pv = s.pivotal;
      const method =
        name === 'pivotal'
          ? { mode: 'lora' as const, steps: pv.steps, lr: pv.lr, rank: pv.rank, trainTextEncoder: false, tiToken: `<${subject.object}-${s.seed}-pivotal>`, tiStepsFraction: pv.tiFraction, tiLr: pv.tiLr, embeddingsDir }
          : { mode: s.dbMode, steps: s.dbSteps, lr: s.dbLr, trainTextEncoder: s.dbTextEncoder };
      const t = performance.now();
      const r = await dreambooth(
        {
          dir: photosDir,
          ...common,
          ...method,
          class: className,
          priorPreservation: prior,
          classImages: s.classImages,
          classDir: path.join(s.out, 'class-images'),
          checkpointEvery: method.steps,
          out: freshRun(path.join(s.out, name)),
        },
        logHooks(logFile, name),
      );
      const trainSeconds = (performance.now() - t) / 1000;
      const output = r.output;
      const tuned = method.mode === 'full' ? loadModel(output) : undefined;
      // A pivotal LoRA brings its embedding: applyConcepts loads the one written beside it.
      const lora = tuned ? undefined : applyConcepts(base, { embeddings: [], loras: [output] });
      const model = tuned ?? lora!.model;
      try {
        const prompt = r.instancePrompt;
        const { score, backgroundLeak } = await scoreSamples(model, prompt, seeds[0], name);
        const classScore = (await scoreSamples(model, classPrompt, seeds[1], `${name}-class-prompt`)).score;
        const pres = classScore.likeness;
        log(`${name} (${trainSeconds.toFixed(0)} s): subject ${pct(score.subject)}, likeness ${pct(score.likeness)}, PRES ${pct(pres)} (class samples reading as the whole subject ${pct(classScore.subject)})`);
        return { label: name, prompt, score, pres, classScore, backgroundLeak, trainSeconds };
      } finally {
        if (tuned) disposeModel(tuned);
        lora?.dispose();
      }
    };
    if (want.has('dreambooth')) {
      result.dreamboothPrior = await trainDreambooth('dreambooth-prior', [4, 5]);
      result.dreamboothNoPrior = await trainDreambooth('dreambooth-no-prior', [6, 7]);
    }
    // The same sampling seeds as DreamBooth with prior, so sampling noise does not tell them apart.
    if (want.has('pivotal')) result.pivotal = await trainDreambooth('pivotal', [4, 5]);

    // 7. Masked loss: the photos again, each with its subject's mask beside it (white = learn)
    if (want.has('masked')) {
      const maskedDir = path.join(s.out, 'photos-masked');
      fs.rmSync(maskedDir, { recursive: true, force: true });
      const maskedFiles = await writeScenePngs(maskedDir, 'photo', photoScenes, size);
      const masks = await writeSubjectMasks(maskedFiles, photoScenes, size);
      // Each photo, then its mask: the masks can be checked by eye on the report page.
      const pairs: Uint8Array[] = [];
      for (const [i, sc] of photoScenes.entries()) pairs.push(await renderScene(sc, size), Uint8Array.from({ length: size * size * 3 }, (_, j) => masks[i]![Math.floor(j / 3)]!));
      await grid('masked-photos', pairs);
      result.maskedTextualInversion = await trainInversion(maskedDir, `<${subject.object}-${s.seed}-masked>`, 'ti-masked', 'textual-inversion-masked');
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Command line

/** `npm run bench:concepts`: prints the table (or JSON) on stdout; returns the summary line. */
export async function main(argv: string[], log: (line: string) => void = () => {}): Promise<string> {
  const { json, ...settings } = parseBenchArgs(argv);
  const r = await runConceptBench(settings, log);
  process.stdout.write(json ? JSON.stringify(r, null, 2) + '\n' : formatTable(r) + '\n');
  return `bench:concepts: results in ${settings.out} (results.json, table.md, sample grids; index.html shows them)`;
}
