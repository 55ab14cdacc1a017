/**
 * `dreambooth`: DreamBooth on a folder of subject images, full or LoRA, with prior preservation
 * on class images the frozen model samples once into a cache; resumable.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describeBackend, useBackend, type BackendChoice, type BackendReport } from '../backend/select.js';
import { disposeModel } from '../core/model.js';
import { PainterError, UsageError } from '../errors.js';
import { modelHash } from '../io/file-hash.js';
import { checkOutputDir } from '../io/output-dir.js';
import type { DreamboothOptions, OptionInput } from '../options/types.js';
import { CLASS_IMAGE_SAMPLING, defaultClassDir, ensureClassImages, type ClassImages } from '../train/class-images.js';
import { createDreamBooth, fillPrompt, LORA_FILE, MODEL_DIR, type DreamBoothMode } from '../train/dreambooth.js';
import { train } from '../train/engine.js';
import { chooseIdentifier, commonWordProblem } from '../train/identifier.js';
import { breathe, phaseClock, type Hooks } from './hooks.js';
import { clearRun, engineConfig, engineHooks, methodSettings, openTrainingInputs, resolveRun, writeRunConfig } from './training-run.js';

export type DreamboothInput = OptionInput<'dreambooth'> & {
  /** Folder of subject images (default: the images in the current folder, not its subfolders). */
  dir?: string;
  backend?: BackendChoice;
};

export interface DreamboothResult {
  /** The LoRA file, or the model folder (--mode full), in the run folder. */
  output: string;
  runDir: string;
  steps: number;
  finalLoss: number | undefined;
  identifier: string;
  instancePrompt: string;
  classImages: { dir: string; count: number; existing: number; generated: number } | null;
  backend: BackendReport;
}

/** Learning rates of diffusers' DreamBooth examples, used when neither a flag nor a preset sets one. */
const DEFAULT_LR: Record<DreamBoothMode, number> = { lora: 1e-4, full: 5e-6 };

function requireClass(o: DreamboothOptions): string {
  const c = o.class;
  if (c === undefined || c.trim() === '') throw new UsageError('--class is required: the subject\'s class noun, e.g. --class dog (used in "a photo of [identifier] dog")');
  return c.trim();
}

export async function dreambooth(input: DreamboothInput, hooks: Hooks = {}): Promise<DreamboothResult> {
  const { dir, backend: choice, ...passed } = input;
  const run = resolveRun('dreambooth', passed, (o) => `dreambooth-${o.mode}-${(o.class ?? 'subject').replace(/[^\w-]+/g, '')}`);
  const { options: o, runDir } = run;
  const className = requireClass(o);
  if (o.priorPreservation && o.classImages < 1) {
    throw new UsageError('--class-images 0 leaves nothing for prior preservation; give --class-images N (e.g. 200) or pass --no-prior-preservation');
  }
  const rank = o.rank;
  o.alpha ??= rank;
  const lr = (o.lr ??= DEFAULT_LR[o.mode]);
  const backend = await useBackend(choice);
  const { modelPath, model, resolution, images } = await openTrainingInputs({ command: 'dreambooth', options: o }, dir, backend, hooks);
  try {
    const warn = (m: string) => hooks.warn?.(m);
    const given = o.identifier;
    if (given !== undefined) {
      if (given.trim() === '') throw new PainterError('--identifier must not be empty; omit it to let painter choose a rare token');
      const problem = commonWordProblem(model.tokenizer, given, className);
      if (problem && !run.resumeFrom) warn(`--identifier "${given}": ${problem}; its existing meaning will compete with your subject. A rare token (omit --identifier) works better`);
    }
    const identifier = given !== undefined ? given.trim() : chooseIdentifier(model.tokenizer, o.seed, [className]);
    o.identifier = identifier;
    const instancePrompt = fillPrompt(o.instancePrompt, identifier, className);
    const classPrompt = fillPrompt(o.classPrompt, identifier, className);
    const hash = modelHash(modelPath);
    hooks.info?.(`backend ${describeBackend(backend)}`);
    const captioned = images.filter((i) => i.caption !== undefined).length;
    const captions = captioned > 0 ? `; ${captioned} of ${images.length} image(s) have a caption file (their prompts: "${instancePrompt}, <caption>")` : '';
    hooks.info?.(`identifier "${identifier}": the subject is "${instancePrompt}"${captions}`);
    let classImages: ClassImages | undefined;
    if (o.priorPreservation) {
      const sampling = { prompt: classPrompt, ...CLASS_IMAGE_SAMPLING, size: resolution };
      const classDir = path.resolve(o.classDir ?? defaultClassDir(hash, sampling));
      o.classDir = classDir;
      // A folder that is there may be the user's own, read-only and complete: only a new one must be creatable.
      if (!fs.existsSync(classDir)) checkOutputDir(classDir, '--class-dir');
      const clock = phaseClock(hooks, 'class images');
      let sampling0 = 0;
      let estimated = false;
      classImages = await ensureClassImages(model, classDir, o.classImages, sampling, { modelHash: hash, skipBadImages: o.skipBadImages }, {
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
      hooks.info?.(`${classImages.images.length} class images of "${classPrompt}" in ${classDir} (${classImages.existing} already there, ${classImages.generated} sampled)`);
    }
    const setup = createDreamBooth(model, images, classImages?.images ?? [], {
      ...methodSettings(o, resolution, fillPrompt(o.validationPrompt ?? o.instancePrompt, identifier, className), hash),
      identifier,
      className,
      instancePrompt,
      classPrompt,
      priorPreservation: o.priorPreservation,
      priorWeight: o.priorWeight,
      mode: o.mode,
      rank,
      alpha: o.alpha,
      trainTextEncoder: o.trainTextEncoder,
      format: o.format,
    });
    try {
      if (o.overwrite && !run.resumeFrom) clearRun(runDir, [LORA_FILE, MODEL_DIR]);
      await writeRunConfig(runDir, o, {
        command: 'dreambooth',
        images: images.map((i) => path.resolve(i.file)),
        classImageFiles: classImages?.images.map((i) => i.file) ?? [],
        resolution,
        backend: backend.name,
      });
      const textEncoder = o.trainTextEncoder ? ' and text encoder' : '';
      const what = o.mode === 'lora' ? `LoRA rank ${rank} on the UNet attention${textEncoder}` : `the full UNet${textEncoder}`;
      hooks.info?.(`training ${what} on ${images.length} image(s) at ${resolution}px; run folder ${runDir}`);
      const result = await train(setup.task, engineConfig(o, lr), runDir, o, engineHooks(hooks, runDir), run.resumeFrom);
      hooks.file?.({ kind: 'result', path: result.output, step: result.step });
      const classInfo = classImages ? { dir: classImages.dir, count: classImages.images.length, existing: classImages.existing, generated: classImages.generated } : null;
      return { output: result.output, runDir, steps: result.step, finalLoss: result.losses.at(-1), identifier, instancePrompt, classImages: classInfo, backend };
    } finally {
      setup.dispose();
    }
  } finally {
    disposeModel(model);
  }
}
