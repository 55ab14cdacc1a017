/**
 * Trains painter-mini's attribute classifier (classifier.ts) on scenes rendered on the fly, with
 * AdamW, deterministically from a seed; evaluates per-attribute accuracy on a fixed held-out test
 * set and saves `config.json` + `model.safetensors` (default under runs/classifier). Training draws from
 * the whole world, held-out subjects and accessories included (`includeHeldOut`), because the
 * benchmark must classify exactly those. Run through `scripts/train-classifier.mjs`:
 *
 *   node scripts/train-classifier.mjs [--out DIR] [--steps N] [--batch N] [--size 32|64]
 *     [--widths 16,32,64] [--lr 0.01] [--seed 0] [--blur PX] [--noise LEVELS] [--test N] [--backend wasm]
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import * as tf from '@tensorflow/tfjs';
import { numberArg } from './script-args.js';
import {
  CLASSIFIER_DEFAULTS,
  classifierConfigJson,
  classifierForward,
  classifierLoss,
  classifierParamShapes,
  imagesToTensor,
  parseClassifierConfig,
  predict,
  type ClassifierConfig,
  type ClassifierLabels,
} from './classifier.js';
import { renderScene } from './render.js';
import { labelIndices, LABEL_NAMES, sampleScene, sceneLabels, type LabelName, type Scene } from './world.js';
import { ADAMW_DEFAULTS, BACKEND_CHOICES, Rng, UsageError, adamWStep, clipGradNorm, createAdamWState, disposeAdamWState, initParams, learningRate, loadWeights, readJson, selectBackend, writeBytesAtomic, writeParams, type BackendChoice, type Params } from '../../src/index.js';

/** Rendered scenes with their class indices. */
export interface LabelledImages {
  size: number;
  images: Uint8Array[];
  labels: Record<LabelName, Int32Array>;
}

export async function renderLabelled(scenes: readonly Scene[], size: number): Promise<LabelledImages> {
  const images: Uint8Array[] = [];
  // One at a time: sharp's thread pool would otherwise take every core of a shared machine.
  for (const s of scenes) images.push(await renderScene(s, size));
  const labels = {} as Record<LabelName, Int32Array>;
  for (const name of LABEL_NAMES) labels[name] = new Int32Array(scenes.length);
  scenes.forEach((s, i) => {
    const idx = labelIndices(sceneLabels(s));
    for (const name of LABEL_NAMES) labels[name][i] = idx[name];
  });
  return { size, images, labels };
}

/** `n` scenes of the whole world (held-out subjects included), deterministic from `seed`. */
export function worldScenes(seed: number, n: number): Scene[] {
  const rng = new Rng(seed);
  return Array.from({ length: n }, () => sampleScene(rng, { includeHeldOut: true }));
}

/** Seed of the fixed test set: a stream no training seed below 10⁶ draws from. */
export const TEST_SEED = 7_000_001;

export type Accuracy = Record<LabelName, number>;

/** Fraction of images whose predicted class matches the label, per attribute. */
export function evaluate(params: Params, cfg: ClassifierConfig, data: LabelledImages, batch = 64): Accuracy {
  const correct = Object.fromEntries(LABEL_NAMES.map((n) => [n, 0])) as Accuracy;
  for (let i = 0; i < data.images.length; i += batch) {
    const x = imagesToTensor(data.images.slice(i, i + batch), data.size);
    const pred = predict(params, cfg, x);
    x.dispose();
    for (const name of LABEL_NAMES) pred[name].forEach((p, j) => (correct[name] += p === data.labels[name][i + j] ? 1 : 0));
  }
  for (const name of LABEL_NAMES) correct[name] /= Math.max(1, data.images.length);
  return correct;
}

export interface ClassifierTrainSettings {
  config: ClassifierConfig;
  steps: number;
  batch: number;
  lr: number;
  warmupSteps: number;
  weightDecay: number;
  maxGradNorm: number;
  seed: number;
  /**
   * Largest σ in pixels of the Gaussian blur, and in 8-bit levels of the Gaussian noise, each
   * training image gets (σ drawn uniformly per image; 0: none): the benchmark reads generated
   * samples, which are softer than the renders, and a classifier of crisp renders alone misreads them.
   */
  blur: number;
  noise: number;
}

export const TRAIN_DEFAULTS: Omit<ClassifierTrainSettings, 'config'> = { steps: 3000, batch: 32, lr: 1e-2, warmupSteps: 100, weightDecay: 1e-4, maxGradNorm: 5, seed: 0, blur: 0, noise: 0 };

/** `img` (size×size RGB) blurred by a Gaussian of σ = `blur` px (separable, edges clamped) plus noise of σ = `noise` levels. */
export function degrade(img: Uint8Array, size: number, blur: number, noise: number, rng: Rng): Uint8Array {
  let px = Float32Array.from(img);
  if (blur >= 0.2) {
    const r = Math.ceil(3 * blur);
    const k = Array.from({ length: 2 * r + 1 }, (_, i) => Math.exp(-((i - r) ** 2) / (2 * blur * blur)));
    const total = k.reduce((a, b) => a + b, 0);
    for (const [dx, dy] of [[1, 0], [0, 1]] as const) {
      const out = new Float32Array(px.length);
      for (let y = 0; y < size; y++) {
        for (let x = 0; x < size; x++) {
          for (let c = 0; c < 3; c++) {
            let acc = 0;
            for (let i = -r; i <= r; i++) {
              const xx = Math.min(size - 1, Math.max(0, x + i * dx));
              const yy = Math.min(size - 1, Math.max(0, y + i * dy));
              acc += k[i + r]! * px[(yy * size + xx) * 3 + c]!;
            }
            out[(y * size + x) * 3 + c] = acc / total;
          }
        }
      }
      px = out;
    }
  }
  const out = new Uint8Array(px.length);
  const n = noise > 0 ? rng.normals(px.length) : undefined;
  for (let i = 0; i < px.length; i++) out[i] = Math.min(255, Math.max(0, Math.round(px[i]! + (n ? noise * n[i]! : 0))));
  return out;
}

export interface StepReport {
  step: number;
  steps: number;
  loss: number;
  msPerStep: number;
}

export interface TrainedClassifier {
  /** Plain tensors (not variables), owned by the caller. */
  params: Params;
  config: ClassifierConfig;
  losses: number[];
}

let created = 0;

/**
 * Trains from seeded random weights. Each step renders a fresh batch from `Rng(seed)`, so a run
 * is reproducible; `onStep` sees every step (progress, timing).
 */
export async function trainClassifier(s: ClassifierTrainSettings, onStep?: (r: StepReport) => void): Promise<TrainedClassifier> {
  const cfg = s.config;
  const init = initParams(classifierParamShapes(cfg), s.seed + 1);
  const prefix = `classifier_${created++}`;
  const vars = new Map<string, tf.Variable>();
  for (const [k, t] of init) {
    vars.set(k, tf.variable(t, true, `${prefix}/${k}`));
    t.dispose();
  }
  const params: Params = new Map(vars);
  const adam = createAdamWState(vars);
  const adamCfg = { ...ADAMW_DEFAULTS, lr: s.lr, weightDecay: s.weightDecay };
  const rng = new Rng(s.seed);
  const losses: number[] = [];
  try {
    for (let step = 0; step < s.steps; step++) {
      const t0 = performance.now();
      const scenes = Array.from({ length: s.batch }, () => sampleScene(rng, { includeHeldOut: true }));
      const data = await renderLabelled(scenes, cfg.imageSize);
      if (s.blur > 0 || s.noise > 0) data.images = data.images.map((img) => degrade(img, cfg.imageSize, s.blur * rng.uniform(), s.noise * rng.uniform(), rng));
      const labels: ClassifierLabels = data.labels;
      const x = imagesToTensor(data.images, cfg.imageSize);
      const { value, grads: g } = tf.variableGrads(() => classifierLoss(classifierForward(params, cfg, x), labels), [...vars.values()]);
      x.dispose();
      const loss = value.dataSync()[0]!;
      value.dispose();
      const grads = new Map<string, tf.Tensor>();
      for (const [k, v] of vars) if (g[v.name]) grads.set(k, g[v.name]!);
      if (!Number.isFinite(loss)) {
        for (const t of grads.values()) t.dispose();
        throw new Error(`classifier training: loss became ${loss} at step ${step + 1}; try a lower --lr`);
      }
      await clipGradNorm(grads, s.maxGradNorm);
      adamWStep(vars, grads, adam, adamCfg, learningRate(s.lr, 'cosine', step, s.steps, s.warmupSteps));
      for (const t of grads.values()) t.dispose();
      losses.push(loss);
      onStep?.({ step: step + 1, steps: s.steps, loss, msPerStep: performance.now() - t0 });
    }
    const out: Params = new Map();
    for (const [k, v] of vars) out.set(k, tf.clone(v));
    return { params: out, config: cfg, losses };
  } finally {
    disposeAdamWState(adam);
    for (const v of vars.values()) v.dispose();
  }
}

export const CONFIG_FILE = 'config.json';
export const WEIGHTS_FILE = 'model.safetensors';

/** Writes `dir/config.json` (config, plus `extra` such as accuracies) and `dir/model.safetensors`. */
export async function saveClassifier(dir: string, params: Params, cfg: ClassifierConfig, extra: Record<string, unknown> = {}): Promise<void> {
  fs.mkdirSync(dir, { recursive: true });
  await writeParams(path.join(dir, WEIGHTS_FILE), params);
  await writeBytesAtomic(path.join(dir, CONFIG_FILE), JSON.stringify({ ...classifierConfigJson(cfg), ...extra }, null, 2) + '\n');
}

/** Strictly loads a classifier saved by `saveClassifier`. */
export function loadClassifier(dir: string): { params: Params; config: ClassifierConfig } {
  const configFile = path.join(dir, CONFIG_FILE);
  const config = parseClassifierConfig(readJson(configFile), configFile);
  const params = loadWeights([path.join(dir, WEIGHTS_FILE)], classifierParamShapes(config), 'classifier');
  return { params, config };
}

// ---------------------------------------------------------------------------------------------
// Command line

const OPTIONS = {
  out: { type: 'string' },
  steps: { type: 'string' },
  batch: { type: 'string' },
  size: { type: 'string' },
  widths: { type: 'string' },
  lr: { type: 'string' },
  seed: { type: 'string' },
  blur: { type: 'string' },
  noise: { type: 'string' },
  test: { type: 'string' },
  backend: { type: 'string' },
} as const;

function formatAccuracy(a: Accuracy): string {
  return LABEL_NAMES.map((n) => `${n} ${(100 * a[n]).toFixed(1)}%`).join(', ');
}

/**
 * Trains, evaluates and saves; progress lines go to `log` (stderr in the script). Returns a
 * one-line summary.
 */
export async function main(argv: string[], log: (line: string) => void = () => {}): Promise<string> {
  let values;
  try {
    values = parseArgs({ args: argv, options: OPTIONS, strict: true }).values;
  } catch (e) {
    throw new UsageError(`${(e as Error).message.split('\n')[0]} (options: --out DIR --steps N --batch N --size N --widths A,B,C --lr X --seed N --blur PX --noise LEVELS --test N --backend NAME)`);
  }
  const backend = (values.backend ?? 'wasm') as BackendChoice;
  if (!BACKEND_CHOICES.includes(backend)) throw new UsageError(`--backend must be one of ${BACKEND_CHOICES.join(', ')}`);
  const widths = values.widths === undefined ? CLASSIFIER_DEFAULTS.widths : values.widths.split(',').map((w) => numberArg(w, 'widths', 0, 'count'));
  const config = parseClassifierConfig({ image_size: numberArg(values.size, 'size', CLASSIFIER_DEFAULTS.imageSize, 'count'), widths }, '--size/--widths');
  const settings: ClassifierTrainSettings = {
    ...TRAIN_DEFAULTS,
    config,
    steps: numberArg(values.steps, 'steps', TRAIN_DEFAULTS.steps, 'count'),
    batch: numberArg(values.batch, 'batch', TRAIN_DEFAULTS.batch, 'count'),
    lr: numberArg(values.lr, 'lr', TRAIN_DEFAULTS.lr, 'positive'),
    seed: numberArg(values.seed, 'seed', TRAIN_DEFAULTS.seed, 'seed'),
    blur: numberArg(values.blur, 'blur', TRAIN_DEFAULTS.blur, 'weight'),
    noise: numberArg(values.noise, 'noise', TRAIN_DEFAULTS.noise, 'weight'),
  };
  const out = values.out ?? path.join('runs', 'classifier');
  await selectBackend(backend);
  const test = await renderLabelled(worldScenes(TEST_SEED, numberArg(values.test, 'test', 1000, 'count')), config.imageSize);
  const trained = await trainClassifier(settings, (r) => {
    if (r.step % 100 === 0 || r.step === r.steps) log(`step ${r.step}/${r.steps} loss ${r.loss.toFixed(4)} ${r.msPerStep.toFixed(0)} ms/step`);
  });
  const accuracy = evaluate(trained.params, config, test);
  log(`test accuracy (${test.images.length} scenes): ${formatAccuracy(accuracy)}`);
  await saveClassifier(out, trained.params, config, { training: { ...settings, config: undefined, test_scenes: test.images.length, test_seed: TEST_SEED }, test_accuracy: accuracy });
  for (const t of trained.params.values()) t.dispose();
  return `wrote ${out} (${formatAccuracy(accuracy)})`;
}
