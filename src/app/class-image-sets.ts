/**
 * DreamBooth's class images for each class of a run: one folder per class prompt (--class-dir for
 * a run of one class, else painter's cache keyed by model, prompt and sampling), sampled with the
 * frozen model once and reused by later runs.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { StableDiffusion } from '../core/model.js';
import type { Bucket } from '../core/training/buckets.js';
import { checkOutputDir } from '../io/output-dir.js';
import type { DreamboothOptions } from '../options/types.js';
import { CLASS_IMAGE_SAMPLING, defaultClassDir, ensureClassImages, type ClassImages } from '../train/class-images.js';
import { breathe, phaseClock, type Hooks } from './hooks.js';

export interface ClassImageSet extends ClassImages {
  className: string;
  classPrompt: string;
}

/** Makes sure each class has its class images (--class-images N each); sets o.classDir for a run of one class (--class-dir is for one class only). */
export async function prepareClassImages(
  model: StableDiffusion,
  classes: readonly { className: string; classPrompt: string }[],
  o: DreamboothOptions,
  run: { resolution: number; modelHash: string; buckets?: readonly Bucket[] },
  hooks: Hooks,
): Promise<ClassImageSet[]> {
  const warn = (m: string) => hooks.warn?.(m);
  const sets: ClassImageSet[] = [];
  for (const { className, classPrompt } of classes) {
    const sampling = { prompt: classPrompt, ...CLASS_IMAGE_SAMPLING, size: run.resolution };
    const classDir = path.resolve(o.classDir ?? defaultClassDir(run.modelHash, sampling));
    if (classes.length === 1) o.classDir = classDir;
    // A folder that is there may be the user's own, read-only and complete: only a new one must be creatable.
    if (!fs.existsSync(classDir)) checkOutputDir(classDir, '--class-dir');
    const clock = phaseClock(hooks, 'class images');
    let sampling0 = 0;
    let estimated = false;
    const made = await ensureClassImages(model, classDir, o.classImages, sampling, { modelHash: run.modelHash, skipBadImages: o.skipBadImages, buckets: run.buckets }, {
      onSampling: (need, existing) => {
        sampling0 = Date.now();
        hooks.info?.(
          `sampling ${need} class image(s) of "${classPrompt}" with the frozen model into ${classDir}${existing > 0 ? ` (${existing} already there)` : ''}, once: later runs reuse them (fewer with --class-images N, or put your own images in --class-dir)`,
        );
      },
      onStep: (done, total, step, steps) => {
        if (done === 1 && !estimated) {
          estimated = true;
          const each = Date.now() - sampling0;
          hooks.info?.(`class images take ${(each / 1000).toFixed(1)} s each here: about ${Math.ceil((each * (total - 1)) / 60_000)} min for the other ${total - 1}`);
        }
        clock(done, total, `class images (sampling step ${step}/${steps})`);
      },
      warn,
      shouldStop: () => hooks.shouldStop?.() === true,
      breathe,
    });
    hooks.info?.(`${made.images.length} class images of "${classPrompt}" in ${classDir} (${made.existing} already there, ${made.generated} sampled)`);
    sets.push({ ...made, className, classPrompt });
  }
  return sets;
}
