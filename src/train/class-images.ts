/**
 * Class images for DreamBooth's prior-preservation loss: images of the class prompt ("a photo of
 * a dog") sampled from the frozen base model, so the fine-tuned model keeps its prior for the
 * class. They live in a folder (--class-dir, or a cache keyed by model hash, class prompt and
 * generation settings) and are made only once: images already there, the user's own included,
 * count and are never regenerated or overwritten; only the missing ones are sampled, each
 * written complete (atomic) as soon as it is done, so an interrupted run keeps what it made.
 */
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { formatInfotext } from '../core/infotext.js';
import type { StableDiffusion } from '../core/model.js';
import { sampleImages } from '../core/pipeline/generate.js';
import { A1111_SAMPLER_NAMES, type SchedulerKind } from '../core/schedulers/index.js';
import { InterruptedError, PainterError } from '../errors.js';
import { writeBytesAtomic } from '../io/atomic.js';
import type { Bucket } from '../core/training/buckets.js';
import { readImageFolder, readSourceImage, type SourceImage } from '../io/dataset.js';
import { encodePng } from '../io/png-out.js';

export interface ClassImageSettings {
  prompt: string;
  negativePrompt: string;
  steps: number;
  guidance: number;
  scheduler: SchedulerKind;
  /** Square size in pixels: the training resolution, so no resampling is needed later. */
  size: number;
}

/** How painter samples class images (diffusers' script uses the pipeline's defaults). */
export const CLASS_IMAGE_SAMPLING = { negativePrompt: '', steps: 25, guidance: 7.5, scheduler: 'dpm++2m' } as const;

const MANIFEST = '.painter-class-images.json';

/** painter's cache: $PAINTER_CACHE_DIR, else $XDG_CACHE_HOME/painter, else ~/.cache/painter. */
export function painterCacheDir(env: NodeJS.ProcessEnv = process.env): string {
  if (env['PAINTER_CACHE_DIR']) return path.resolve(env['PAINTER_CACHE_DIR']);
  const xdg = env['XDG_CACHE_HOME'];
  // The XDG spec says to ignore a relative XDG_CACHE_HOME.
  return path.join(xdg && path.isAbsolute(xdg) ? xdg : path.join(os.homedir(), '.cache'), 'painter');
}

/** The cache key: everything that decides what the class images look like. */
export function classImageKey(modelHash: string, s: ClassImageSettings): string {
  const canonical = JSON.stringify([modelHash, s.prompt, s.negativePrompt, s.steps, s.guidance, s.scheduler, s.size]);
  return crypto.createHash('sha256').update(canonical).digest('hex').slice(0, 16);
}

export function defaultClassDir(modelHash: string, s: ClassImageSettings, env: NodeJS.ProcessEnv = process.env): string {
  return path.join(painterCacheDir(env), 'class-images', classImageKey(modelHash, s));
}

/** File name of the k-th generated class image; its seed is k, so a deleted one comes back the same. */
export function classImageName(k: number): string {
  return `class-${String(k).padStart(5, '0')}.png`;
}

export interface ClassImageHooks {
  /** Before sampling starts: how many images are missing, and how many are already there. */
  onSampling?(need: number, existing: number): void;
  /** Sampling progress: images done of those to make, and the step of the current one. */
  onStep?(done: number, total: number, step: number, steps: number): void;
  warn?(message: string): void;
  shouldStop?(): boolean;
  breathe?(): Promise<void>;
}

export interface ClassImages {
  dir: string;
  /** The `count` images used, sorted by file name. */
  images: SourceImage[];
  /** How many were already in the folder (cached or the user's own). */
  existing: number;
  generated: number;
}

async function sampleClassImage(model: StableDiffusion, s: ClassImageSettings, seed: number, modelHash: string, onStep: (step: number) => void, hooks: ClassImageHooks): Promise<Buffer> {
  let pixels: Uint8Array | undefined;
  const request = { prompt: s.prompt, negativePrompt: s.negativePrompt, steps: s.steps, guidance: s.guidance, scheduler: s.scheduler, seed, count: 1, batch: 1, width: s.size, height: s.size, clipSkip: 0 };
  for await (const event of sampleImages(model, request)) {
    if (event.kind === 'image') pixels = event.image.pixels;
    else onStep(event.step);
    await hooks.breathe?.();
  }
  const parameters = formatInfotext({
    prompt: s.prompt,
    negativePrompt: s.negativePrompt,
    steps: s.steps,
    sampler: A1111_SAMPLER_NAMES[s.scheduler],
    cfgScale: s.guidance,
    seed,
    width: s.size,
    height: s.size,
    modelHash,
    extra: { Version: 'painter' },
  });
  return encodePng(pixels!, s.size, s.size, { parameters });
}

/**
 * Makes sure `dir` holds `count` usable class images and returns them: reads what is there (the
 * first `count` by name), then samples the missing ones with the frozen `model` under free names.
 * Unreadable files are errors naming the file, or skipped (never replaced) with `skipBadImages`.
 */
export async function ensureClassImages(
  model: StableDiffusion,
  dir: string,
  count: number,
  s: ClassImageSettings,
  opts: { modelHash: string; skipBadImages: boolean; buckets?: readonly Bucket[] },
  hooks: ClassImageHooks = {},
): Promise<ClassImages> {
  if (!fs.existsSync(dir)) fs.mkdirSync(dir, { recursive: true });
  // With buckets, class images of other shapes (a folder of your own) keep their aspect ratio too.
  const images = await readImageFolder(dir, s.size, { skipBad: opts.skipBadImages, warn: (m) => hooks.warn?.(m), what: 'class images', limit: count, buckets: opts.buckets });
  const existing = images.length;
  const need = count - existing;
  if (need > 0) {
    hooks.onSampling?.(need, existing);
    const manifest = { format: 'painter-class-images', modelHash: opts.modelHash, ...s, key: classImageKey(opts.modelHash, s) };
    await writeBytesAtomic(path.join(dir, MANIFEST), JSON.stringify(manifest, null, 2) + '\n');
  }
  let generated = 0;
  for (let k = 0; generated < need; k++) {
    const file = path.join(dir, classImageName(k));
    if (fs.existsSync(file)) continue;
    if (hooks.shouldStop?.()) {
      throw new InterruptedError(`interrupted while sampling class images; ${existing + generated} of ${count} are in ${dir} and are reused when you run the command again`);
    }
    const png = await sampleClassImage(model, s, k, opts.modelHash, (step) => hooks.onStep?.(generated, need, step, s.steps), hooks);
    await writeBytesAtomic(file, png);
    images.push(await readSourceImage(file, s.size, { buckets: opts.buckets }));
    generated++;
  }
  images.sort((a, b) => (a.file < b.file ? -1 : a.file > b.file ? 1 : 0));
  return { dir, images, existing, generated };
}
