/** `painter dreambooth DIR --class dog`: DreamBooth, full or LoRA, with prior preservation. */
import * as path from 'node:path';
import { disposeModel } from '../../core/model.js';
import { PainterError } from '../../errors.js';
import { modelHash } from '../../io/file-hash.js';
import { CLASS_IMAGE_SAMPLING, defaultClassDir, ensureClassImages, type ClassImages } from '../../train/class-images.js';
import { createDreamBooth, fillPrompt, type DreamBoothMode } from '../../train/dreambooth.js';
import { train } from '../../train/engine.js';
import { chooseIdentifier, commonWordProblem } from '../../train/identifier.js';
import { describeBackend } from '../backend-option.js';
import type { ConfigValues } from '../config.js';
import type { Args } from '../main.js';
import { engineConfig, engineHooks, openTrainingInputs, resolveRun, writeRunConfig } from './train-common.js';

/** Learning rates of diffusers' DreamBooth examples, used when neither a flag nor a preset sets one. */
const DEFAULT_LR: Record<DreamBoothMode, number> = { lora: 1e-4, full: 5e-6 };

function requireClass(cfg: ConfigValues): string {
  const c = cfg['class'];
  if (typeof c !== 'string' || c.trim() === '') throw new PainterError('--class is required: the subject\'s class noun, e.g. --class dog (used in "a photo of [identifier] dog")');
  return c.trim();
}

export async function dreamboothCommand(args: Args): Promise<void> {
  const json = Boolean(args['json']);
  const run = resolveRun('dreambooth', args, (c) => `dreambooth-${String(c['mode'])}-${String(c['class'] ?? 'subject').replace(/[^\w-]+/g, '')}`);
  const { cfg, runDir } = run;
  const className = requireClass(cfg);
  const mode = cfg['mode'] as DreamBoothMode;
  const rank = cfg['rank'] as number;
  if (!Number.isInteger(rank) || rank < 1) throw new PainterError(`--rank must be a positive whole number, got ${rank}`);
  cfg['alpha'] ??= rank;
  cfg['lr'] ??= DEFAULT_LR[mode];
  const { progress, backend, modelPath, model, resolution, images } = await openTrainingInputs('dreambooth', args, cfg, json);
  try {
    const seed = cfg['seed'] as number;
    const given = cfg['identifier'];
    if (typeof given === 'string') {
      if (given.trim() === '') throw new PainterError('--identifier must not be empty; omit it to let painter choose a rare token');
      const problem = commonWordProblem(model.tokenizer, given, className);
      if (problem && !run.resumeFrom) progress.warn(`--identifier "${given}": ${problem}; its existing meaning will compete with your subject. A rare token (omit --identifier) works better`);
    }
    const identifier = typeof given === 'string' ? given.trim() : chooseIdentifier(model.tokenizer, seed, [className]);
    cfg['identifier'] = identifier;
    const instancePrompt = fillPrompt(String(cfg['instancePrompt']), identifier, className);
    const classPrompt = fillPrompt(String(cfg['classPrompt']), identifier, className);
    const hash = modelHash(modelPath);
    if (!json) {
      process.stderr.write(`painter: backend ${describeBackend(backend)}\n`);
      const captioned = images.filter((i) => i.caption !== undefined).length;
      const captions = captioned > 0 ? `; ${captioned} of ${images.length} image(s) have a caption file (their prompts: "${instancePrompt}, <caption>")` : '';
      process.stderr.write(`painter: identifier "${identifier}": the subject is "${instancePrompt}"${captions}\n`);
    }
    const { hooks, interrupt } = engineHooks(progress, json, runDir);
    try {
      let classImages: ClassImages | undefined;
      if (cfg['priorPreservation']) {
        const count = cfg['classImages'] as number;
        if (count < 1) throw new PainterError('--class-images 0 leaves nothing for prior preservation; give --class-images N (e.g. 200) or pass --no-prior-preservation');
        const sampling = { prompt: classPrompt, ...CLASS_IMAGE_SAMPLING, size: resolution };
        const classDir = path.resolve(typeof cfg['classDir'] === 'string' ? cfg['classDir'] : defaultClassDir(hash, sampling));
        cfg['classDir'] = classDir;
        classImages = await ensureClassImages(model, classDir, count, sampling, { modelHash: hash, skipBadImages: Boolean(cfg['skipBadImages']) }, {
          onStep: (done, total, step, steps) => progress.update(done, total, `class images (sampling step ${step}/${steps})`),
          warn: (m) => progress.warn(m),
          shouldStop: hooks.shouldStop,
          breathe: hooks.breathe,
        });
        if (!json) process.stderr.write(`painter: ${classImages.images.length} class images of "${classPrompt}" in ${classDir} (${classImages.existing} already there, ${classImages.generated} sampled)\n`);
      }
      const setup = createDreamBooth(model, images, classImages?.images ?? [], {
        identifier,
        className,
        instancePrompt,
        classPrompt,
        priorPreservation: Boolean(cfg['priorPreservation']),
        priorWeight: cfg['priorWeight'] as number,
        mode,
        rank,
        alpha: cfg['alpha'] as number,
        trainTextEncoder: Boolean(cfg['trainTextEncoder']),
        resolution,
        centerCrop: Boolean(cfg['centerCrop']),
        flip: Boolean(cfg['flip']),
        batch: cfg['batch'] as number,
        minSnrGamma: cfg['minSnrGamma'] as number,
        noiseOffset: cfg['noiseOffset'] as number,
        seed,
        validationPrompt: fillPrompt(String(cfg['validationPrompt'] ?? cfg['instancePrompt']), identifier, className),
        format: cfg['format'] as 'diffusers' | 'kohya',
        baseModelHash: hash,
      });
      try {
        await writeRunConfig(runDir, cfg, {
          command: 'dreambooth',
          images: images.map((i) => path.resolve(i.file)),
          classImageFiles: classImages?.images.map((i) => i.file) ?? [],
          resolution,
          backend: backend.name,
        });
        if (!json) {
          const what = mode === 'lora' ? `LoRA rank ${rank} on the UNet attention${cfg['trainTextEncoder'] ? ' and text encoder' : ''}` : `the full UNet${cfg['trainTextEncoder'] ? ' and text encoder' : ''}`;
          process.stderr.write(`painter: training ${what} on ${images.length} image(s) at ${resolution}px; run folder ${runDir}\n`);
        }
        const result = await train(setup.task, engineConfig(cfg), runDir, cfg, hooks, run.resumeFrom);
        progress.succeed(`trained "${instancePrompt}" in ${result.step} steps → ${result.output}`);
        if (json) {
          const classInfo = classImages ? { dir: classImages.dir, count: classImages.images.length, existing: classImages.existing, generated: classImages.generated } : null;
          process.stdout.write(JSON.stringify({ output: result.output, runDir, steps: result.step, finalLoss: result.losses.at(-1), identifier, instancePrompt, classImages: classInfo }, null, 2) + '\n');
        } else process.stdout.write(`${result.output}\n`);
      } finally {
        setup.dispose();
      }
    } finally {
      interrupt.dispose();
      progress.stop();
    }
  } finally {
    disposeModel(model);
  }
}
