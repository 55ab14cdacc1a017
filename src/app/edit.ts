/**
 * `edit`: change an existing picture — image-to-image, a masked edit (Blended Latent Diffusion
 * on an ordinary model, or an inpainting model's own conditioning), outpainting — with learned
 * embeddings and LoRA, into PNG files that carry AUTOMATIC1111's img2img parameters text.
 */
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { describeBackend, useBackend, type BackendChoice, type BackendReport } from '../backend/select.js';
import { disposeModel, type StableDiffusion } from '../core/model.js';
import { vaeLatentFactor } from '../core/models/vae.js';
import { checkPromptSyntax, disposeConditioning } from '../core/prompt/conditioning.js';
import { editLoop, encodeEditPrompts, planEdit, type EditRequest } from '../core/pipeline/edit.js';
import { BACKGROUND_FIT_DEFAULTS, fitDecoderToBackground, type FittedDecoder } from '../core/pipeline/background-fit.js';
import { decodeToPixels } from '../core/pipeline/generate.js';
import { InterruptedError, PainterError, UsageError } from '../errors.js';
import { parseOutpaint, readEditImage, readNoiseFile } from '../io/edit-inputs.js';
import { modelHash } from '../io/file-hash.js';
import { loadModel } from '../io/load-model.js';
import { checkOutputDir } from '../io/output-dir.js';
import { resolveModelPath } from '../io/paths.js';
import { encodePng, writeNewPng } from '../io/png-out.js';
import { resolveConfig } from '../options/resolve.js';
import { MAX_SEED } from '../options/table.js';
import type { OptionInput } from '../options/types.js';
import { loadConcepts, promptLoras, type LoadedConcepts } from './concepts.js';
import { sourceEdit } from './edit-source.js';
import { imageParameters, localBlendRequest, localBlendText, promptWarnings, samplerChoice, samplerScheduleType } from './generate.js';
import type { SchedulerKind } from '../core/schedulers/index.js';
import { breathe, phaseClock, type Hooks } from './hooks.js';
import { checkMemoryBudget } from './memory-check.js';

export type EditInput = OptionInput<'edit'> & {
  /** The picture to edit. */
  image: string;
  prompt: string;
  backend?: BackendChoice;
};

export interface EditResult {
  /** The PNG files written, with their seeds and prompts (with --source: the reconstruction first). */
  files: { file: string; seed: number; prompt: string }[];
  outDir: string;
  /** img2img, blend (a mask on an ordinary model), inpaint (an inpainting model) or prompt-to-prompt (--source). */
  mode: string;
  width: number;
  height: number;
  timings: { loadMs: number; editMs: number };
  backend: BackendReport;
}

/** Decoded latents as 8-bit RGB (diffusers' postprocess), refusing NaN or infinite values; disposes them. */
async function toPixels(final: tf.Tensor4D, model: StableDiffusion, seed: number): Promise<Uint8Array> {
  const { data, finite } = await decodeToPixels(model, final);
  if (!finite[0]) throw new PainterError(`editing produced NaN or infinite values (seed ${seed}), so no PNG was written for it; the model's weights may hold corrupt values, or a setting is extreme`);
  return Uint8Array.from(data);
}

/**
 * --preserve-background: the VAE decoder fitted to the input outside the mask (Blended Latent
 * Diffusion's background reconstruction, core/pipeline/background-fit.ts) for this result.
 */
async function backgroundDecoder(model: StableDiffusion, latents: tf.Tensor4D, picture: { width: number; height: number; pixels: Float32Array; mask?: Float32Array }, steps: number, progress: (step: number, total: number) => void): Promise<FittedDecoder> {
  const input = tf.tensor4d(picture.pixels, [1, picture.height, picture.width, 3]);
  const mask = tf.tensor4d(picture.mask!, [1, picture.height, picture.width, 1]);
  try {
    return await fitDecoderToBackground(model, latents, input, mask, { ...BACKGROUND_FIT_DEFAULTS, steps }, (step) => progress(step, steps));
  } finally {
    tf.dispose([input, mask]);
  }
}

/** The input's pixels (RGB in [−1, 1]) written over the result where the mask keeps them. */
export function pasteBack(result: Uint8Array, input: Float32Array, mask: Float32Array): void {
  for (let p = 0; p < mask.length; p++) {
    if (mask[p]) continue;
    for (let c = 0; c < 3; c++) result[p * 3 + c] = Math.round(((input[p * 3 + c]! + 1) / 2) * 255);
  }
}

export async function edit(input: EditInput, hooks: Hooks = {}): Promise<EditResult> {
  const { image: imageFile, prompt: givenPrompt, backend: choice, ...passed } = input;
  const o = resolveConfig('edit', passed);
  const sampler = samplerChoice(o.scheduler, o.schedule, passed.schedule);
  const { prompt, loras } = promptLoras(givenPrompt, o);
  checkPromptSyntax([prompt, o.negative], o.steps, o.emphasis);
  const outDir = path.resolve(o.out);
  checkOutputDir(outDir, '--out');
  if (o.maskBlur > 0 && o.mask === undefined) throw new UsageError('--mask-blur needs --mask');
  if (o.pasteBack && o.mask === undefined && o.outpaint === undefined) throw new UsageError('--paste-back needs --mask or --outpaint');
  if (o.preserveBackground && o.mask === undefined && o.outpaint === undefined) throw new UsageError('--preserve-background fits the decoder to the picture outside a mask; give --mask or --outpaint');
  if (o.source !== undefined && (o.mask !== undefined || o.outpaint !== undefined)) throw new UsageError('--source redraws the whole picture with Prompt-to-Prompt; leave out --mask and --outpaint');
  if (o.nullText && o.source === undefined) throw new UsageError('--null-text optimises the inversion of --source; give --source "WHAT THE PICTURE SHOWS"');
  if (o.localBlend !== undefined && o.source === undefined) throw new UsageError('--local-blend blends a Prompt-to-Prompt edit; give --source "WHAT THE PICTURE SHOWS"');
  const localBlend = o.source !== undefined ? localBlendRequest(o.localBlend, o.blendThreshold, o.source, prompt) : undefined;
  if (o.source !== undefined && o.count > 1) throw new UsageError('--source inverts the picture to one noise, so it makes one edit; leave out --count');
  if (o.noise !== undefined && o.count > 1) throw new UsageError('--noise gives the random draws of one result; use it with --count 1');
  const lastSeed = o.seed + o.count - 1;
  if (lastSeed > MAX_SEED) throw new UsageError(`--seed ${o.seed} with --count ${o.count} would need seeds up to ${lastSeed}, beyond the largest seed ${MAX_SEED}; choose a smaller --seed`);
  const outpaint = o.outpaint !== undefined ? parseOutpaint(o.outpaint) : undefined;
  const draws = o.noise !== undefined ? readNoiseFile(o.noise) : undefined;
  const backend = await useBackend(choice);
  const modelPath = resolveModelPath(o.model);
  const t0 = Date.now();
  const base = loadModel(modelPath, { config: o.config, arch: o.arch, predictionType: o.predictionType });
  let concepts: LoadedConcepts | undefined;
  try {
    const picture = await readEditImage(imageFile, vaeLatentFactor(base.vae.config), { mask: o.mask, maskBlur: o.maskBlur, outpaint });
    for (const n of picture.notes) hooks.info?.(n);
    checkMemoryBudget({ command: 'generate', options: { width: picture.width, height: picture.height, guidance: o.guidance } }, modelPath, backend, { configDir: o.config });
    const warn = (m: string) => hooks.warn?.(m);
    concepts = loadConcepts(base, { ...o, lora: loras }, [prompt, o.negative], hooks);
    const model = concepts.model;
    const plan = planEdit(model, { steps: o.steps, strength: o.strength, mask: picture.mask });
    if (plan.mode === 'inpaint' && outpaint && o.mask === undefined) hooks.info?.('inpainting model: the new area is painted from the mask and the picture around it');
    promptWarnings(model, prompt, warn);
    const loadMs = Date.now() - t0;
    hooks.info?.(`backend ${describeBackend(backend)}`);
    if (o.source === undefined) hooks.info?.(`${plan.mode === 'img2img' ? 'image-to-image' : plan.mode === 'blend' ? 'masked edit (Blended Latent Diffusion)' : 'inpainting model'}: ${plan.stepsRun} of ${o.steps} steps at strength ${o.strength}`);
    const req: EditRequest = {
      prompt,
      negativePrompt: o.negative,
      steps: o.steps,
      guidance: o.guidance,
      scheduler: sampler.kind,
      schedule: sampler.schedule,
      emphasis: o.emphasis,
      seed: o.seed,
      clipSkip: o.clipSkip,
      strength: o.strength,
      width: picture.width,
      height: picture.height,
      image: picture.pixels,
      ...(picture.mask && { mask: picture.mask }),
      ...(draws && { draws }),
    };
    const hash = modelHash(modelPath);
    const files: EditResult['files'] = [];
    const t1 = Date.now();
    const progress = phaseClock(hooks, 'edit');
    const write = async (pixels: Uint8Array, seed: number, shown: string, extra: Record<string, string>, scheduler: SchedulerKind) => {
      const scheduleType = samplerScheduleType(model, scheduler, scheduler === sampler.kind ? sampler.schedule : 'automatic');
      const text = imageParameters({ ...o, prompt: shown, scheduler, scheduleType, seed, width: picture.width, height: picture.height, modelPath, modelHash: hash, concepts: concepts!, extra });
      const png = await encodePng(pixels, picture.width, picture.height, { parameters: text });
      const file = writeNewPng(outDir, String(seed), png);
      files.push({ file, seed, prompt: shown });
      hooks.file?.({ kind: 'image', path: file, seed });
    };
    const stopped = () => new InterruptedError(`interrupted; ${files.length} complete image(s) kept in ${outDir}, no partial file written`);
    if (o.source !== undefined) {
      // Prompt-to-Prompt on the picture: the reconstruction first, then the edit.
      const events = sourceEdit(model, picture, { ...o, source: o.source, target: prompt, draws, localBlend });
      for await (const event of events) {
        if (event.kind === 'invert') progress(event.step, event.steps, 'inversion step');
        else if (event.kind === 'null-text') progress(event.step, event.steps, 'null-text step');
        else if (event.kind === 'step') progress(event.step, event.steps, 'step');
        else {
          const edited = files.length > 0;
          const how = `source "${o.source}" cross ${o.crossReplace} self ${o.selfReplace}${o.nullText ? ' null-text' : ''}${localBlendText(localBlend)}`;
          await write(event.image.pixels, event.image.seed, edited ? prompt : o.source, edited ? { 'Prompt-to-Prompt': how } : {}, 'ddim');
        }
        await breathe();
        if (hooks.shouldStop?.()) throw stopped();
      }
      return { files, outDir, mode: 'prompt-to-prompt', width: picture.width, height: picture.height, timings: { loadMs, editMs: Date.now() - t1 }, backend };
    }
    const cond = encodeEditPrompts(model, req);
    try {
      for (let i = 0; i < o.count; i++) {
        const loop = editLoop(model, req, i, cond);
        let r = loop.next();
        while (!r.done) {
          progress(r.value.step + 1, r.value.total, `image ${i + 1}/${o.count} · step`);
          await breathe();
          if (hooks.shouldStop?.()) {
            loop.return(undefined as unknown as tf.Tensor4D);
            throw stopped();
          }
          r = loop.next();
        }
        const seed = o.seed + i;
        const decoder = o.preserveBackground && picture.mask ? await backgroundDecoder(model, r.value, picture, o.backgroundSteps, (step, total) => progress(step, total, `image ${i + 1}/${o.count} · background step`)) : undefined;
        let pixels: Uint8Array;
        try {
          pixels = await toPixels(r.value, decoder ? { ...model, vae: { config: model.vae.config, params: decoder.params } } : model, seed);
        } finally {
          decoder?.dispose();
        }
        if (o.pasteBack && picture.mask) pasteBack(pixels, picture.pixels, picture.mask);
        // A1111's img2img parameters: the strength, and the mask blur of an inpainting run.
        await write(pixels, seed, prompt, { 'Denoising strength': String(o.strength), ...(picture.mask && { 'Mask blur': String(o.maskBlur) }) }, sampler.kind);
      }
    } finally {
      disposeConditioning(cond);
    }
    return { files, outDir, mode: plan.mode, width: picture.width, height: picture.height, timings: { loadMs, editMs: Date.now() - t1 }, backend };
  } finally {
    concepts?.dispose();
    disposeModel(base);
  }
}
