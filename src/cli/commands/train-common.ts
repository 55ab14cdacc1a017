/**
 * What `invert` and `dreambooth` share on the command line: run folders, resume, config
 * precedence with checkpoints, reading the image folder, progress and Ctrl-C.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { disposeModel, type StableDiffusion } from '../../core/model.js';
import type { BackendReport } from '../../backend/select.js';
import { backendFromArgs } from '../backend-option.js';
import { checkMemoryBudget } from '../memory-check.js';
import { defaultImageSize, latentSize } from '../../core/pipeline/generate.js';
import type { LrSchedule } from '../../core/training/optimizer.js';
import { PainterError } from '../../errors.js';
import { writeBytesAtomic } from '../../io/atomic.js';
import { readSourceImage, scanImageFolder, type SourceImage } from '../../io/dataset.js';
import { loadModel } from '../../io/load-model.js';
import { latestCheckpoint, readCheckpointMeta, type EngineConfig, type EngineHooks } from '../../train/engine.js';
import type { CommandName } from '../options.js';
import { resolveConfig, type ConfigValues } from '../config.js';
import { breathe, watchInterrupt, type InterruptFlag } from '../interrupt.js';
import { passedOptions, type Args } from '../main.js';
import { createProgress, type Progress } from '../progress.js';
import { resolveModelPath } from '../default-model.js';

/** Options that may differ on resume (how long and how often), all others come from the checkpoint. */
const RESUME_OVERRIDABLE = ['steps', 'checkpointEvery', 'validationEvery', 'out', 'resume', 'backend'];

export interface TrainingRun {
  cfg: ConfigValues;
  runDir: string;
  resumeFrom?: string;
}

function timestamp(): string {
  return new Date().toISOString().replace(/[-:]/g, '').replace(/\..*/, '').replace('T', '-');
}

/** Resolves config, run folder and checkpoint to resume; on resume the checkpoint's config wins. */
export function resolveRun(command: CommandName, args: Args, defaultName: (cfg: ConfigValues) => string): TrainingRun {
  const passed = passedOptions(args, command);
  let cfg = resolveConfig(command, passed);
  const resume = cfg['resume'] as string | undefined;
  let runDir = cfg['out'] ? path.resolve(cfg['out'] as string) : undefined;
  let resumeFrom: string | undefined;
  if (resume !== undefined) {
    if (resume === 'latest') {
      if (!runDir) throw new PainterError('--resume latest needs --out RUN_FOLDER (the folder of the run to continue)');
      const latest = latestCheckpoint(runDir);
      if (!latest) throw new PainterError(`--resume latest: no checkpoint in ${path.join(runDir, 'checkpoints')}; start without --resume`);
      resumeFrom = latest.dir;
    } else {
      resumeFrom = path.resolve(resume);
      runDir ??= path.dirname(path.dirname(resumeFrom));
    }
    const saved = readCheckpointMeta(resumeFrom).config as ConfigValues;
    const overrides = Object.fromEntries(Object.entries(passed).filter(([k]) => RESUME_OVERRIDABLE.includes(k)));
    cfg = { ...saved, ...overrides };
  }
  // Paths are stored absolute so a resumed run finds them from any working directory.
  // An absent --model is recorded as the bundled model's path, so the run config names what trained.
  if (!resumeFrom) cfg['model'] = path.resolve(resolveModelPath(cfg['model']));
  if (typeof cfg['config'] === 'string' && !resumeFrom) cfg['config'] = path.resolve(cfg['config']);
  runDir ??= path.resolve('runs', `${defaultName(cfg)}-${timestamp()}`);
  return { cfg, runDir, resumeFrom };
}

export function requireModelPath(cfg: ConfigValues): string {
  return resolveModelPath(cfg['model']);
}

export function loadBaseModel(cfg: ConfigValues): StableDiffusion {
  return loadModel(requireModelPath(cfg), { config: cfg['config'] as string | undefined, arch: cfg['arch'] as 'auto' | 'sd1' | 'sd2' });
}

/** The training resolution: --resolution or the model's native size, checked against the latent factor. */
export function trainingResolution(model: StableDiffusion, cfg: ConfigValues): number {
  const res = (cfg['resolution'] as number | undefined) ?? defaultImageSize(model);
  try {
    latentSize(model, res, res);
  } catch (e) {
    throw new PainterError(`--resolution ${res}: ${(e as Error).message}`);
  }
  return res;
}

/** Reads every image of a folder; bad ones are errors, or warnings with --skip-bad-images. */
export async function readImages(dir: string, resolution: number, skipBad: boolean, progress: Progress, what = 'training images'): Promise<SourceImage[]> {
  const scan = scanImageFolder(dir, what);
  for (const f of scan.ignored) progress.warn(`skipping ${f}: not an image (painter reads .jpg, .jpeg, .png, .webp)`);
  const images: SourceImage[] = [];
  for (const file of scan.images) {
    try {
      images.push(await readSourceImage(file, resolution));
    } catch (e) {
      if (!skipBad || !(e instanceof PainterError)) throw e;
      progress.warn(`skipping ${(e as Error).message.replace(/; remove or replace it.*$/, '')}`);
    }
  }
  if (images.length === 0) throw new PainterError(`${dir}: no usable image found; put 3–10 .jpg/.png/.webp pictures of the ${what.replace(/s$/, '')} in it`);
  return images;
}

export function engineConfig(cfg: ConfigValues): EngineConfig {
  const batch = cfg['batch'] as number;
  const gradAccum = cfg['gradAccum'] as number;
  const lr = (cfg['lr'] as number) * (cfg['scaleLr'] ? batch * gradAccum : 1);
  return {
    steps: cfg['steps'] as number,
    gradAccum,
    lr,
    lrSchedule: cfg['lrSchedule'] as LrSchedule,
    warmupSteps: cfg['warmupSteps'] as number,
    weightDecay: cfg['weightDecay'] as number,
    maxGradNorm: cfg['maxGradNorm'] as number,
    checkpointEvery: cfg['checkpointEvery'] as number,
    validationEvery: cfg['validationEvery'] as number,
    seed: cfg['seed'] as number,
  };
}

export async function writeRunConfig(runDir: string, cfg: ConfigValues, extra: Record<string, unknown>): Promise<void> {
  fs.mkdirSync(runDir, { recursive: true });
  await writeBytesAtomic(path.join(runDir, 'config.json'), JSON.stringify({ ...cfg, ...extra }, null, 2) + '\n');
}

/** Progress, Ctrl-C and event-loop hooks for the engine. */
export function engineHooks(progress: Progress, json: boolean, runDir: string): { hooks: EngineHooks; interrupt: InterruptFlag } {
  const interrupt = watchInterrupt(() => progress.warn('stopping after this step and saving a checkpoint (Ctrl-C again to quit at once)'));
  let avg = 0;
  const hooks: EngineHooks = {
    onStep(r) {
      avg = avg === 0 ? r.loss : 0.9 * avg + 0.1 * r.loss;
      progress.update(r.step, r.steps, `loss ${avg.toFixed(4)} · ${(1000 / r.msPerStep).toFixed(2)} step/s · step`);
    },
    shouldStop: () => interrupt.requested,
    breathe,
    resumeHint: `run the same command with --resume latest --out ${runDir}`,
    info: (m) => {
      if (!json) process.stderr.write(`painter: ${m}\n`);
    },
  };
  return { hooks, interrupt };
}

export interface TrainingInputs {
  progress: Progress;
  backend: BackendReport;
  modelPath: string;
  model: StableDiffusion;
  resolution: number;
  images: SourceImage[];
}

/**
 * The steps every training command takes before its method: progress, backend, the memory check,
 * the base model, the training resolution and the images (the model is freed if a later step fails).
 */
export async function openTrainingInputs(command: 'invert' | 'dreambooth', args: Args, cfg: ConfigValues, json: boolean): Promise<TrainingInputs> {
  const dir = String(args['dir']);
  const progress = createProgress(json);
  const backend = await backendFromArgs(args);
  const modelPath = requireModelPath(cfg);
  checkMemoryBudget(command, modelPath, cfg, backend, { images: scanImageFolder(dir).images.length });
  const model = loadBaseModel(cfg);
  try {
    const resolution = trainingResolution(model, cfg);
    const images = await readImages(dir, resolution, Boolean(cfg['skipBadImages']), progress);
    return { progress, backend, modelPath, model, resolution, images };
  } catch (e) {
    disposeModel(model);
    throw e;
  }
}

export { createProgress };
