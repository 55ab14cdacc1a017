/**
 * bench:concepts' settings: the parts it can run, their defaults (with the measurements that chose
 * them) and the command line that overrides them, parsed into one typed object.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import { numberArg } from './script-args.js';
import { BACKEND_CHOICES, PainterError, UsageError, bundledModelPath, packageRoot, type BackendChoice, type SchedulerKind } from '../../src/index.js';

export interface SamplingSettings {
  steps: number;
  guidance: number;
  scheduler: SchedulerKind;
}

/** Pivotal tuning's run: a DreamBooth-LoRA whose identifier is an embedding learnt with it. */
export interface PivotalSettings {
  steps: number;
  /** The LoRA's learning rate. */
  lr: number;
  rank: number;
  /** The embedding's learning rate. */
  tiLr: number;
  /** The share of the steps (the first ones) in which the embedding trains. */
  tiFraction: number;
}

export interface ConceptBenchSettings {
  seed: number;
  model: string;
  classifier: string;
  out: string;
  /** Samples per measured prompt (subject prompts and class prompts). */
  samples: number;
  /** Distinct captions for prompt fidelity (one sample each). */
  prompts: number;
  psnrScenes: number;
  /** Photos of the subject given to Textual Inversion and DreamBooth. */
  photos: number;
  sampling: SamplingSettings;
  /** Textual Inversion's steps and learning rate (its masked-loss run too). */
  tiSteps: number;
  tiLr: number;
  dbSteps: number;
  dbLr: number;
  dbMode: 'full' | 'lora';
  /** DreamBooth also trains the text encoder (the paper fine-tunes every layer). */
  dbTextEncoder: boolean;
  pivotal: PivotalSettings;
  classImages: number;
  backend: BackendChoice;
  /** Parts to run (default all). */
  only: readonly BenchPart[];
}

/**
 * vae: reconstruction PSNR; prompts: prompt fidelity; ti: Textual Inversion; dreambooth: with and
 * without prior preservation; pivotal: pivotal tuning; masked: Textual Inversion with masked loss.
 */
export const BENCH_PARTS = ['vae', 'prompts', 'ti', 'dreambooth', 'pivotal', 'masked'] as const;
export type BenchPart = (typeof BENCH_PARTS)[number];

export const BENCH_DEFAULTS: Omit<ConceptBenchSettings, 'model' | 'classifier' | 'out'> = {
  seed: 0,
  samples: 32,
  // 60 captions read object fidelity 43% on seed 0 and 150 read 61% on seed 1 for one model: with
  // few captions the sample's mix of sizes and kinds moves the score more than the model does.
  prompts: 150,
  psnrScenes: 64,
  photos: 5,
  sampling: { steps: 30, guidance: 7.5, scheduler: 'dpm++2m' },
  tiSteps: 1000,
  // Measured on a 32×32 painter-mini: TI lr 5e-3 left the embedding at 4× the norm of the
  // vocabulary's words and the samples' object right 63% of the time; 1e-3: 1.4×, 97%.
  tiLr: 1e-3,
  dbSteps: 400,
  // painter-mini was trained from scratch at lr 5e-4: diffusers' 5e-6 for SD (and 5e-5) left
  // its samples at the class prior; 2e-4 learns the subject's colour. With a frozen text
  // encoder the identifier barely moves the conditioning (relative change 0.16, a colour word
  // 0.45) and prior preservation wins over the five photos (colour 0%); training it too: 56%.
  dbLr: 2e-4,
  dbMode: 'full',
  dbTextEncoder: true,
  // The pivotal-lora preset's recipe (diffusers' advanced script: embedding for the first half,
  // UNet LoRA, prior preservation) at painter-mini's scale: a LoRA starts from zero and moves
  // less per step than full weights, so it takes 5× DreamBooth's full-model lr (diffusers' LoRA
  // examples use 1e-4 where full DreamBooth uses 5e-6); rank 8 of attention widths 64–128; the
  // embedding at Textual Inversion's measured 1e-3. As many steps as the DreamBooth rows. Seed 0
  // (bench/concepts-table.md): LoRA lr 1e-3 gave likeness 25% and PRES 25%; 5e-4 gave 33% and
  // 10% — both under Textual Inversion's 40%.
  pivotal: { steps: 400, lr: 1e-3, rank: 8, tiLr: 1e-3, tiFraction: 0.5 },
  classImages: 100,
  backend: 'auto',
  only: BENCH_PARTS,
};

const OPTIONS = {
  seed: { type: 'string' },
  model: { type: 'string' },
  classifier: { type: 'string' },
  out: { type: 'string' },
  samples: { type: 'string' },
  prompts: { type: 'string' },
  'psnr-scenes': { type: 'string' },
  'sample-steps': { type: 'string' },
  guidance: { type: 'string' },
  'ti-steps': { type: 'string' },
  'ti-lr': { type: 'string' },
  'db-steps': { type: 'string' },
  'db-lr': { type: 'string' },
  'db-mode': { type: 'string' },
  'db-frozen-text-encoder': { type: 'boolean' },
  'pivotal-steps': { type: 'string' },
  'pivotal-lr': { type: 'string' },
  'pivotal-rank': { type: 'string' },
  'pivotal-ti-lr': { type: 'string' },
  'pivotal-ti-fraction': { type: 'string' },
  'class-images': { type: 'string' },
  only: { type: 'string' },
  json: { type: 'boolean' },
  backend: { type: 'string' },
} as const;

export function parseBenchArgs(argv: string[]): ConceptBenchSettings & { json: boolean } {
  let values: Record<string, unknown>;
  try {
    values = parseArgs({ args: argv, options: OPTIONS, strict: true }).values;
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
  const d = BENCH_DEFAULTS;
  const backend = (values['backend'] as string | undefined) ?? d.backend;
  if (!BACKEND_CHOICES.includes(backend as BackendChoice)) throw new UsageError(`--backend ${backend}: choose one of ${BACKEND_CHOICES.join(', ')}`);
  const dbMode = (values['db-mode'] as string | undefined) ?? d.dbMode;
  if (dbMode !== 'full' && dbMode !== 'lora') throw new UsageError(`--db-mode ${dbMode}: choose full or lora`);
  const seed = numberArg(values['seed'], 'seed', d.seed, 'seed');
  const only = values['only'] === undefined ? d.only : String(values['only']).split(',').map((x) => x.trim());
  const unknown = only.filter((x) => !(BENCH_PARTS as readonly string[]).includes(x));
  if (unknown.length > 0 || only.length === 0) throw new UsageError(`--only ${String(values['only'])}: give a comma-separated list of ${BENCH_PARTS.join(', ')}`);
  const model = (values['model'] as string | undefined) ?? bundledModelPath();
  const classifier = (values['classifier'] as string | undefined) ?? path.join(packageRoot(), 'fixtures', 'mini-classifier');
  const pivotal: PivotalSettings = {
    steps: numberArg(values['pivotal-steps'], 'pivotal-steps', d.pivotal.steps, 'count'),
    lr: numberArg(values['pivotal-lr'], 'pivotal-lr', d.pivotal.lr, 'positive'),
    rank: numberArg(values['pivotal-rank'], 'pivotal-rank', d.pivotal.rank, 'count'),
    tiLr: numberArg(values['pivotal-ti-lr'], 'pivotal-ti-lr', d.pivotal.tiLr, 'positive'),
    tiFraction: numberArg(values['pivotal-ti-fraction'], 'pivotal-ti-fraction', d.pivotal.tiFraction, 'fraction'),
  };
  if (pivotal.tiFraction === 0) throw new UsageError('--pivotal-ti-fraction 0 would leave the embedding untrained; give a fraction above 0 (e.g. 0.5)');
  const settings: ConceptBenchSettings & { json: boolean } = {
    seed,
    model,
    classifier,
    out: (values['out'] as string | undefined) ?? path.join('runs', `bench-concepts-seed${seed}`),
    samples: numberArg(values['samples'], 'samples', d.samples, 'count'),
    prompts: numberArg(values['prompts'], 'prompts', d.prompts, 'count'),
    psnrScenes: numberArg(values['psnr-scenes'], 'psnr-scenes', d.psnrScenes, 'count'),
    photos: d.photos,
    sampling: { ...d.sampling, steps: numberArg(values['sample-steps'], 'sample-steps', d.sampling.steps, 'count'), guidance: numberArg(values['guidance'], 'guidance', d.sampling.guidance, 'positive') },
    tiSteps: numberArg(values['ti-steps'], 'ti-steps', d.tiSteps, 'count'),
    tiLr: numberArg(values['ti-lr'], 'ti-lr', d.tiLr, 'positive'),
    dbSteps: numberArg(values['db-steps'], 'db-steps', d.dbSteps, 'count'),
    dbLr: numberArg(values['db-lr'], 'db-lr', d.dbLr, 'positive'),
    dbMode,
    dbTextEncoder: values['db-frozen-text-encoder'] === true ? false : d.dbTextEncoder,
    pivotal,
    classImages: numberArg(values['class-images'], 'class-images', d.classImages, 'count'),
    backend: backend as BackendChoice,
    only: only as BenchPart[],
    json: values['json'] === true,
  };
  if (!fs.existsSync(path.join(model, 'model_index.json'))) throw new PainterError(`--model ${model}: no model_index.json; give a painter-mini-shaped diffusers folder (the bundled one is built by npm run pretrain:mini)`);
  if (!fs.existsSync(path.join(classifier, 'config.json'))) throw new PainterError(`--classifier ${classifier}: no config.json; give the folder npm run train:classifier wrote`);
  return settings;
}
