/**
 * What `invert` and `dreambooth` share around their methods: the run folder and what a resume
 * takes from its checkpoint, the memory check, the base model, the training resolution and
 * images, the engine's settings, the run config, and progress reports from the engine.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { BackendReport } from '../backend/select.js';
import { disposeModel, type StableDiffusion } from '../core/model.js';
import { modelImageSize, modelLatentGrid } from '../core/sizes.js';
import { groupByBucket, makeBuckets, type Bucket } from '../core/training/buckets.js';
import { Rng } from '../core/random.js';
import { PainterError, UsageError } from '../errors.js';
import { writeBytesAtomic } from '../io/atomic.js';
import { readImageFolder, scanImageFolder, type SourceImage } from '../io/dataset.js';
import { loadModel } from '../io/load-model.js';
import { checkOutputDir } from '../io/output-dir.js';
import { chosenOptions, resolveConfig } from '../options/resolve.js';
import type { CommandOptions, OptionInput } from '../options/types.js';
import { latestCheckpoint, readCheckpointMeta, type EngineConfig, type EngineHooks, type MethodSettings } from '../train/engine.js';
import type { ConceptDataset } from '../io/concept-dataset.js';
import { breathe, phaseClock, type Hooks } from './hooks.js';
import { conceptSummaries, describeConcept, readConceptImages, type ConceptSummary } from './training-concepts.js';
import { checkMemoryBudget } from './memory-check.js';
import { resolveModelPath } from '../io/paths.js';

export type TrainCommand = 'invert' | 'dreambooth';

/**
 * Options that may differ on resume: how long, how often, and where outputs go. Every other
 * option changes the result, so a resumed run keeps the checkpoint's.
 */
const RESUME_OVERRIDABLE: ReadonlySet<string> = new Set(['steps', 'checkpointEvery', 'validationEvery', 'keepCheckpoints', 'out', 'resume', 'overwrite', 'preset', 'embeddingsDir', 'force']);
/** Options that hold for one command only: a resume does not inherit them from the run. */
const PER_COMMAND = ['force', 'overwrite'];
/** Options that hold paths: compared as absolute paths on resume. */
const PATH_OPTIONS: ReadonlySet<string> = new Set(['model', 'config', 'classDir', 'validationDir', 'dataset']);

export interface TrainingRun<C extends TrainCommand> {
  options: CommandOptions[C];
  runDir: string;
  resumeFrom?: string;
  /** The step the resumed checkpoint holds. */
  resumeStep?: number;
}

/** What painter writes into a run folder; a folder holding any of them holds a run. */
const RUN_FILES = ['config.json', 'train.log', 'checkpoints', 'samples', 'loss.svg'];

function heldRun(runDir: string): string[] {
  return fs.existsSync(runDir) ? RUN_FILES.filter((f) => fs.existsSync(path.join(runDir, f))) : [];
}

/** --overwrite: removes the run painter wrote into `runDir` (its files and results, nothing else). */
export function clearRun(runDir: string, results: readonly string[]): void {
  for (const f of [...RUN_FILES, ...results]) fs.rmSync(path.join(runDir, f), { recursive: true, force: true });
}

/** The options a resume was given that differ from the run's own, as "--lr 0.001 (the run has 0.0005)". */
function changedOnResume(chosen: Record<string, unknown>, saved: Record<string, unknown>): string[] {
  const out: string[] = [];
  for (const [key, value] of Object.entries(chosen)) {
    if (value === undefined || RESUME_OVERRIDABLE.has(key)) continue;
    const given = PATH_OPTIONS.has(key) && typeof value === 'string' ? path.resolve(key === 'model' ? resolveModelPath(value) : value) : value;
    if (JSON.stringify(given) !== JSON.stringify(saved[key])) {
      const flag = `--${key.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`;
      out.push(`${flag} ${JSON.stringify(value)} (the run has ${saved[key] === undefined ? 'none' : JSON.stringify(saved[key])})`);
    }
  }
  return out;
}

function timestamp(): string {
  return new Date().toISOString().replace(/[-:]/g, '').replace(/\..*/, '').replace('T', '-');
}

/**
 * Resolves options, run folder and checkpoint to resume. A new run refuses a folder that holds a
 * run (unless --overwrite); a resume takes the checkpoint's options and refuses options that would
 * change its result, or fewer --steps than it has done.
 */
export function resolveRun<C extends TrainCommand>(command: C, passed: OptionInput<C>, defaultName: (o: CommandOptions[C]) => string): TrainingRun<C> {
  const chosen = chosenOptions(command, passed);
  let options = resolveConfig(command, passed);
  const resume = options.resume;
  let runDir = options.out !== undefined ? path.resolve(options.out) : undefined;
  let resumeFrom: string | undefined;
  let resumeStep: number | undefined;
  if (resume !== undefined) {
    if (resume === 'latest') {
      if (!runDir) throw new UsageError('--resume latest needs --out RUN_FOLDER (the folder of the run to continue)');
      const latest = latestCheckpoint(runDir);
      if (!latest) throw new PainterError(`--resume latest: no checkpoint in ${path.join(runDir, 'checkpoints')}; start without --resume`);
      resumeFrom = latest.dir;
    } else {
      resumeFrom = path.resolve(resume);
      runDir ??= path.dirname(path.dirname(resumeFrom));
    }
    // The checkpoint stores the options this run resolved when it started (written by painter).
    const meta = readCheckpointMeta(resumeFrom);
    const saved = meta.config as CommandOptions[C];
    resumeStep = meta.step;
    const changed = changedOnResume(chosen, saved);
    if (changed.length > 0) {
      throw new UsageError(
        `--resume continues the run in ${runDir} with its own settings, but ${changed.join(', ')} ${changed.length > 1 ? 'differ' : 'differs'}; drop ${changed.length > 1 ? 'them' : 'it'}, or start a new run with another --out`,
      );
    }
    if (chosen.steps !== undefined && chosen.steps < meta.step) {
      throw new UsageError(`--steps ${chosen.steps} is fewer than the ${meta.step} steps ${resumeFrom} has done; give more --steps to train further`);
    }
    const overrides = Object.fromEntries(Object.entries(chosen).filter(([k, v]) => v !== undefined && RESUME_OVERRIDABLE.has(k)));
    // --force and --overwrite hold for the command that says them, not for later resumes of the run.
    const perCommand = Object.fromEntries(PER_COMMAND.filter((k) => k in saved).map((k) => [k, false]));
    options = { ...saved, ...perCommand, ...overrides };
  } else {
    // Paths are stored absolute so a resumed run finds them from any working directory; an absent
    // --model is recorded as the bundled model's path, so the run config names what trained.
    options.model = path.resolve(resolveModelPath(options.model));
    if (options.config !== undefined) options.config = path.resolve(options.config);
    if (options.dataset !== undefined) options.dataset = path.resolve(options.dataset);
  }
  runDir ??= path.resolve('runs', `${defaultName(options)}-${timestamp()}`);
  checkOutputDir(runDir, '--out');
  // A resume writes into the run's own folder; another folder that holds a run is refused as for a new run.
  const ownFolder = resumeFrom !== undefined && path.resolve(runDir) === path.dirname(path.dirname(resumeFrom));
  const held = ownFolder ? [] : heldRun(runDir);
  if (held.length > 0 && !options.overwrite) {
    throw new PainterError(
      `--out ${runDir} already holds a run (${held.join(', ')}); continue it with --resume latest --out ${runDir}, choose another --out, or pass --overwrite to replace it`,
    );
  }
  return { options, runDir, resumeFrom, resumeStep };
}

/** The training resolution: --resolution or the model's native size, checked against the latent factor. */
export function trainingResolution(model: StableDiffusion, resolution: number | undefined): number {
  const res = resolution ?? modelImageSize(model);
  try {
    modelLatentGrid(model, res, res);
  } catch (e) {
    throw new PainterError(`--resolution ${res}: ${(e as Error).message}`);
  }
  return res;
}

/** Reads every training image of a folder; bad ones are errors, or warnings with --skip-bad-images. */
export async function readTrainingImages(
  dir: string,
  resolution: number,
  skipBad: boolean,
  warn: (m: string) => void,
  opts: { alphaMask?: boolean; recursive?: boolean; buckets?: readonly Bucket[]; captionExtensions?: readonly string[] } = {},
): Promise<SourceImage[]> {
  const recursive = opts.recursive ?? true;
  const images = await readImageFolder(dir, resolution, { skipBad, warn, ...opts });
  if (images.length === 0 && !recursive) {
    throw new PainterError(`the current folder (${path.resolve(dir)}) holds no usable image; name the folder of training images (painter invert DIR …), or run painter where the images are`);
  }
  if (images.length === 0) throw new PainterError(`${dir}: no usable image found; put 3–10 .jpg/.png/.webp pictures of the training image in it`);
  return images;
}

/** The engine's settings from a training command's options (DreamBooth's lr resolved by then). */
export function engineConfig(o: CommandOptions[TrainCommand], lr: number): EngineConfig {
  return {
    steps: o.steps,
    gradAccum: o.gradAccum,
    lr: lr * (o.scaleLr ? o.batch * o.gradAccum : 1),
    lrSchedule: o.lrSchedule,
    warmupSteps: o.warmupSteps,
    weightDecay: o.weightDecay,
    maxGradNorm: o.maxGradNorm,
    checkpointEvery: o.checkpointEvery,
    keepCheckpoints: o.keepCheckpoints,
    validationEvery: o.validationEvery,
    seed: o.seed,
    emaDecay: o.emaDecay ?? 0,
  };
}

/** The data, loss and validation settings every method takes, from a training command's options. */
export function methodSettings(o: CommandOptions[TrainCommand], resolution: number, validationPrompt: string, baseModelHash: string): MethodSettings {
  return {
    resolution,
    centerCrop: o.centerCrop,
    flip: o.flip,
    batch: o.batch,
    minSnrGamma: o.minSnrGamma,
    noiseOffset: o.noiseOffset,
    gradientCheckpointing: o.gradientCheckpointing,
    releaseUnused: o.validationEvery === 0,
    seed: o.seed,
    validationPrompt,
    baseModelHash,
    // A run begun before these options existed resumes without them.
    captions: { shuffleCaptions: o.shuffleCaptions ?? false, keepTokens: o.keepTokens ?? 0, captionDropout: o.captionDropout ?? 0, tagDropout: o.tagDropout ?? 0 },
  };
}

/** What the images bring beyond pixels (loss masks), and caption options they give nothing to act on. */
export function dataNotes(o: CommandOptions[TrainCommand], images: readonly SourceImage[], hooks: Hooks): void {
  const warn = (m: string) => hooks.warn?.(m);
  const masked = images.filter((i) => i.mask !== undefined).length;
  if (masked > 0) hooks.info?.(`masked loss: ${masked} of ${images.length} image(s) have a mask (${o.alphaMask ? 'their alpha channel' : 'NAME.mask.png'}); only what it keeps is learnt`);
  const tagOptions = [o.shuffleCaptions && '--shuffle-captions', o.tagDropout > 0 && '--tag-dropout'].filter(Boolean);
  if (tagOptions.length > 0 && images.every((i) => i.caption === undefined)) {
    warn(`${tagOptions.join(' and ')}: no training image has a caption file (NAME.txt or NAME.caption beside it), so there are no tags to ${o.shuffleCaptions ? 'shuffle' : 'drop'}`);
  }
}

export async function writeRunConfig(runDir: string, options: object, extra: Record<string, unknown>): Promise<void> {
  fs.mkdirSync(runDir, { recursive: true });
  await writeBytesAtomic(path.join(runDir, 'config.json'), JSON.stringify({ ...options, ...extra }, null, 2) + '\n');
}

/** The engine's hooks: each step reported (with a smoothed loss, speed and ETA), stops, the resume hint. */
export function engineHooks(hooks: Hooks, runDir: string): EngineHooks {
  const clock = phaseClock(hooks, 'train');
  let avg = 0;
  return {
    onStep(r) {
      avg = avg === 0 ? r.loss : 0.9 * avg + 0.1 * r.loss;
      hooks.step?.(r);
      clock(r.step, r.steps, `loss ${avg.toFixed(4)} · ${(1000 / r.msPerStep).toFixed(2)} step/s · step`);
    },
    shouldStop: () => hooks.shouldStop?.() === true,
    breathe,
    resumeHint: `run the same command with --resume latest --out ${runDir}`,
    info: (m) => hooks.info?.(m),
    warn: (m) => hooks.warn?.(m),
    file: (kind, file, step) => hooks.file?.({ kind, path: file, step }),
  };
}

export type TrainingRequest = { command: 'invert'; options: CommandOptions['invert'] } | { command: 'dreambooth'; options: CommandOptions['dreambooth'] };

export interface TrainingInputs {
  modelPath: string;
  model: StableDiffusion;
  resolution: number;
  images: SourceImage[];
  /** Images kept out of training for the validation loss (--validation-split, --validation-dir). */
  heldOut: SourceImage[];
  /** The aspect-ratio buckets (--buckets). */
  buckets?: Bucket[];
  /** The concepts of a concept dataset, with their image counts (images and held-out ones carry their concept). */
  concepts?: ConceptSummary[];
}

/** How many images each bucket holds, as "W×H" → count (the run log and config.json list them). */
export function bucketCounts(images: readonly SourceImage[]): Record<string, number> {
  return Object.fromEntries(groupByBucket(images.map((i) => i.bucket)).map((g) => [`${g.bucket[0]}×${g.bucket[1]}`, g.images.length]));
}

/** The buckets of --buckets (undefined without it), checked against the model's sizes. */
export function trainingBuckets(model: StableDiffusion, o: CommandOptions[TrainCommand], resolution: number): Bucket[] | undefined {
  if (!o.buckets) {
    const stray = (['minBucket', 'maxBucket', 'bucketStep'] as const).find((k) => o[k] !== undefined);
    if (stray) throw new UsageError(`--${stray.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)} sets aspect-ratio buckets; add --buckets`);
    return undefined;
  }
  const factor = modelLatentGrid(model, resolution, resolution).factor;
  const step = o.bucketStep ?? factor * 2 ** (model.unet.config.block_out_channels.length - 1);
  const round = (v: number) => Math.max(step, Math.round(v / step) * step);
  const spec = { resolution, step, min: o.minBucket ?? round(resolution / 2), max: o.maxBucket ?? round(2 * resolution) };
  for (const [flag, v] of [['--bucket-step', spec.step], ['--min-bucket', spec.min], ['--max-bucket', spec.max]] as const) {
    if (v % factor !== 0) throw new UsageError(`${flag} ${v}: bucket sides must be multiples of the model's latent factor ${factor}`);
  }
  if (spec.min > spec.max) throw new UsageError(`--min-bucket ${spec.min} is above --max-bucket ${spec.max}`);
  return makeBuckets(spec);
}

/**
 * The held-out images: --validation-dir's, or max(1, round(P·N)) of the training images chosen
 * by the seed (--validation-split P), leaving at least one to train on.
 */
async function splitHeldOut(o: CommandOptions[TrainCommand], images: SourceImage[], resolution: number, buckets: readonly Bucket[] | undefined, hooks: Hooks): Promise<{ train: SourceImage[]; heldOut: SourceImage[] }> {
  if (o.validationDir !== undefined) {
    if ((o.validationSplit ?? 0) > 0) throw new UsageError('--validation-split and --validation-dir both choose held-out images; give one');
    const heldOut = await readImageFolder(o.validationDir, resolution, { skipBad: o.skipBadImages, warn: (m) => hooks.warn?.(m), what: 'validation images', alphaMask: o.alphaMask ?? false, buckets });
    if (heldOut.length === 0) throw new PainterError(`--validation-dir ${o.validationDir}: no usable image found; put held-out pictures of the subject in it`);
    return { train: images, heldOut };
  }
  const split = o.validationSplit ?? 0;
  if (split <= 0) return { train: images, heldOut: [] };
  const n = Math.max(1, Math.round(split * images.length));
  if (images.length - n < 1) throw new PainterError(`--validation-split ${split}: ${images.length} image(s) leave none to train on; add images or give --validation-dir`);
  const chosen = new Set(new Rng(o.seed + 0x5971).shuffle(images.map((_, i) => i)).slice(0, n));
  return { train: images.filter((_, i) => !chosen.has(i)), heldOut: images.filter((_, i) => chosen.has(i)) };
}

/**
 * The steps every training command takes before its method: the memory check, the base model,
 * the training resolution and the images of `dir` (the model is freed if a later step fails).
 */
export async function openTrainingInputs(request: TrainingRequest, folder: string | undefined, backend: BackendReport, hooks: Hooks, dataset?: ConceptDataset): Promise<TrainingInputs> {
  const options = request.options;
  // No folder named: the images in the current folder itself (its subfolders, run folders among
  // them, are not read), as the usage line promises.
  const dir = folder === undefined || folder === '' ? '.' : folder;
  const recursive = dir !== '.' || folder === '.';
  if (!recursive && !dataset) hooks.info?.(`no image folder given: training on the images in the current folder, ${path.resolve(dir)} (not its subfolders)`);
  const modelPath = resolveModelPath(options.model);
  const count = dataset ? dataset.concepts.reduce((n, c) => n + scanImageFolder(c.folder).images.length, 0) : scanImageFolder(dir, undefined, recursive).images.length;
  checkMemoryBudget({ ...request, images: count }, modelPath, backend, { configDir: options.config });
  const model = loadModel(modelPath, { config: options.config, arch: options.arch, predictionType: options.predictionType });
  try {
    const resolution = trainingResolution(model, options.resolution);
    const buckets = trainingBuckets(model, options, resolution);
    const readFolder = (d: string, captionExtensions?: readonly string[]) =>
      readTrainingImages(d, resolution, options.skipBadImages, (m) => hooks.warn?.(m), { alphaMask: options.alphaMask ?? false, recursive: recursive || dataset !== undefined, buckets, ...(captionExtensions && { captionExtensions }) });
    const read = dataset ? await readConceptImages(dataset, readFolder) : await readFolder(dir);
    if (buckets) hooks.info?.(`buckets (width×height: images): ${Object.entries(bucketCounts(read)).map(([b, n]) => `${b}: ${n}`).join(', ')}`);
    dataNotes(options, read, hooks);
    const { train, heldOut } = await splitHeldOut(options, read, resolution, buckets, hooks);
    if (heldOut.length > 0) hooks.info?.(`validation loss on ${heldOut.length} held-out image(s): ${heldOut.map((i) => path.basename(i.file)).join(', ')}`);
    const concepts = dataset && conceptSummaries(dataset, train, heldOut);
    for (const c of concepts ?? []) hooks.info?.(describeConcept(c));
    return { modelPath, model, resolution, images: train, heldOut, ...(buckets && { buckets }), ...(concepts && { concepts }) };
  } catch (e) {
    disposeModel(model);
    throw e;
  }
}
