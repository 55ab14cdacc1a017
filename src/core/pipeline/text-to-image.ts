/**
 * Text-to-image sampling with classifier-free guidance, written out in numbered steps as
 * diffusers' StableDiffusionPipeline does. Each denoising step is one synchronous tf.tidy; the
 * loop is a generator so the caller can report progress, yield to the event loop and stop
 * between steps.
 */
import * as tf from '@tensorflow/tfjs';
import type { StableDiffusion } from '../model.js';
import type { AttentionControl } from '../models/attention-control.js';
import { unetForward } from '../models/unet.js';
import { vaeDecode } from '../models/vae.js';
import { modelLatentGrid, modelPromptLength } from '../sizes.js';
import type { Scheduler } from '../schedulers/index.js';
import { encodePromptSet, promptIdRows, type PromptEncodingOptions } from '../prompt/encode.js';
import { embedsAt, fixedConditioning, type RunConditioning } from '../prompt/conditioning.js';

export { promptIdRows, type PromptEncodingOptions } from '../prompt/encode.js';

/** promptIdRows as an int32 tensor [B, L]. */
export function promptIds(model: StableDiffusion, prompts: readonly string[]): tf.Tensor2D {
  const rows = promptIdRows(model, prompts);
  return tf.tensor2d(rows, [rows.length, modelPromptLength(model)], 'int32');
}

/**
 * prompt_embeds [B, L·k, C]: the plain encoding (encode_prompt's last hidden state, or the
 * final-norm'd earlier layer) when every prompt is plain, else chunked with emphasis
 * (prompt/encode.ts) and padded to a common length.
 */
export function encodePrompts(model: StableDiffusion, prompts: string[], opts: PromptEncodingOptions = {}): tf.Tensor3D {
  const parts = encodePromptSet(model, prompts, opts);
  if (parts.length === 1) return parts[0]!;
  const out = tf.concat(parts, 0) as tf.Tensor3D;
  tf.dispose(parts);
  return out;
}

export interface DenoiseInput {
  scheduler: Scheduler;
  /** Conditional embeddings [B, L, C] (or `conditioning`). */
  promptEmbeds?: tf.Tensor3D;
  /** Unconditional (negative-prompt) embeddings [B, L, C]; needed when guidance > 1. */
  negativeEmbeds?: tf.Tensor3D;
  /**
   * Conditioning that changes during the run (prompt editing, alternation): the entries in
   * effect at each model evaluation, counted from 0 as A1111 counts them. Replaces
   * promptEmbeds/negativeEmbeds; owned by the caller.
   */
  conditioning?: RunConditioning;
  /** Classifier-free guidance scale w: ε = ε_u + w·(ε_c − ε_u); ≤ 1 skips the unconditional pass. */
  guidance: number;
  /** Initial standard-normal latents, NHWC [B, h, w, C] (scaled by initNoiseSigma here). */
  latents: tf.Tensor4D;
  /** Fresh standard-normal noise for step i, for ancestral/stochastic schedulers. */
  noise?: (step: number, shape: number[]) => tf.Tensor;
  /**
   * Image-to-image: the loop starts at timesteps[startIndex] (the scheduler's begin index is set
   * there) and `latents` are already noised to that level, so they are not scaled by
   * initNoiseSigma. Default 0 with standard-normal latents.
   */
  startIndex?: number;
  /** `latents` are the start of the loop as they are (noised already, see startIndex). */
  latentsNoised?: boolean;
  /**
   * Channels the UNet takes after the latents, [B, h, w, k], the same at every step (an
   * inpainting model's mask and masked-image latents); repeated for the guidance branches.
   */
  unetExtra?: tf.Tensor4D;
  /**
   * After each scheduler step (index i into the scheduler's timesteps): the latents to go on
   * with, made from the stepped ones (Blended Latent Diffusion pastes the noised input outside
   * the mask). Runs inside the step's tidy.
   */
  afterStep?: (index: number, latents: tf.Tensor4D) => tf.Tensor4D;
  /**
   * Classifier guidance: the (guided) model output at timestep t for latents x_t → the output the
   * scheduler steps with. Runs inside the step's tidy.
   */
  guide?: (t: number, latents: tf.Tensor4D, output: tf.Tensor) => tf.Tensor;
  /**
   * A hook on the UNet's attention (Prompt-to-Prompt); its `step` is set before each step, and its
   * afterStep, if any, runs on the stepped latents before `afterStep`.
   */
  attentionControl?: AttentionControl & { step: number };
}

export interface DenoiseStep {
  /** Steps run so far − 1 (0 for the first step the loop runs, whatever its start index). */
  step: number;
  /** Steps the loop runs. */
  total: number;
  timestep: number;
  /** Latents after this step (owned by the loop; clone to keep). */
  latents: tf.Tensor4D;
  /** Raw UNet output of this step, batch order [uncond, cond] when guided (owned by the loop). */
  unetOutput: tf.Tensor4D;
}

/**
 * Runs the denoising loop; yields after every step. The final latents are the generator's
 * return value (owned by the caller). Abandoning the generator frees everything.
 */
export function* denoise(model: StableDiffusion, input: DenoiseInput): Generator<DenoiseStep, tf.Tensor4D, void> {
  const { scheduler, guidance } = input;
  const guided = guidance > 1;
  if (!input.conditioning && !input.promptEmbeds) throw new Error('denoise: promptEmbeds or conditioning is needed');
  const cond = input.conditioning ?? fixedConditioning(input.promptEmbeds!, input.negativeEmbeds);
  if (guided && !cond.negative) throw new Error('denoise: guidance > 1 needs negative embeddings');
  // 1. Conditioning batch: [uncond, cond] as diffusers concatenates it, rebuilt when a prompt
  //    edit changes the entry in effect.
  let context: tf.Tensor | undefined;
  let used: [tf.Tensor3D, tf.Tensor3D | undefined] | undefined;
  const contextAt = (step: number): tf.Tensor3D => {
    const p = embedsAt(cond.prompt, step);
    const n = guided ? embedsAt(cond.negative!, step) : undefined;
    if (!context || !used || used[0] !== p || used[1] !== n) {
      context?.dispose();
      // Built inside a step's tidy, kept across steps.
      context = tf.keep(n ? tf.concat([n, p], 0) : tf.clone(p));
      used = [p, n];
    }
    return context as tf.Tensor3D;
  };
  // 2. Initial latents x_T = σ_init · z (image-to-image: the input's latents noised to t_start).
  const start = input.startIndex ?? 0;
  if (start > 0) scheduler.setBeginIndex(start);
  let latents = (input.latentsNoised ? tf.clone(input.latents) : tf.mul(input.latents, scheduler.initNoiseSigma)) as tf.Tensor4D;
  const extra = input.unetExtra ? (guided ? tf.concat([input.unetExtra, input.unetExtra], 0) : tf.clone(input.unetExtra)) : undefined;
  let unetOutput: tf.Tensor4D | undefined;
  const count = scheduler.timesteps.length;
  try {
    for (let i = start; i < count; i++) {
      const t = scheduler.timesteps[i]!;
      const [next, out] = tf.tidy(() => {
        // 3. Duplicate the latents for the two guidance branches and scale for the scheduler
        //    (an inpainting model's extra channels join after scaling, as diffusers concatenates).
        const scaled = scheduler.scaleModelInput(guided ? tf.concat([latents, latents], 0) : latents, t) as tf.Tensor4D;
        const modelIn = extra ? (tf.concat([scaled, extra], 3) as tf.Tensor4D) : scaled;
        // 4. Predict the noise ε_θ(x_t, t, c).
        const control = input.attentionControl;
        if (control) control.step = i - start;
        const pred = unetForward(model.unet.params, model.unet.config, modelIn, t, contextAt(i - start), control ? { attentionControl: control } : {});
        // 5. Classifier-free guidance (Ho & Salimans 2022, eq. 6).
        let eps: tf.Tensor = pred;
        if (guided) {
          const [uncond, cond] = tf.split(pred, 2, 0);
          eps = tf.add(uncond!, tf.mul(tf.sub(cond!, uncond!), guidance));
        }
        if (input.guide) eps = input.guide(t, latents, eps);
        // 6. x_t → x_{t−1} with the scheduler's update rule.
        const noise = scheduler.needsNoise ? input.noise?.(i - start, latents.shape) : undefined;
        if (scheduler.needsNoise && !noise) throw new Error(`denoise: scheduler ${scheduler.kind} needs noise for step ${i}`);
        let stepped = scheduler.step(eps, t, latents, noise).prevSample as tf.Tensor4D;
        // 7. The attention hook's blend (Prompt-to-Prompt's local blending), then the caller's.
        if (control?.afterStep) stepped = control.afterStep(stepped);
        return [input.afterStep ? input.afterStep(i, stepped) : stepped, pred];
      });
      latents.dispose();
      unetOutput?.dispose();
      latents = next;
      unetOutput = out;
      yield { step: i - start, total: count - start, timestep: t, latents, unetOutput };
    }
    unetOutput?.dispose();
    unetOutput = undefined;
    const result = latents;
    latents = undefined as unknown as tf.Tensor4D;
    return result;
  } finally {
    context?.dispose();
    extra?.dispose();
    latents?.dispose();
    unetOutput?.dispose();
  }
}

/** Runs the whole loop synchronously and returns the final latents. */
export function denoiseAll(model: StableDiffusion, input: DenoiseInput): tf.Tensor4D {
  const it = denoise(model, input);
  for (;;) {
    const r = it.next();
    if (r.done) return r.value;
  }
}

/** VAE decode of final latents (divided by the scaling factor), raw: roughly [-1, 1]. */
export function decodeLatentsRaw(model: StableDiffusion, latents: tf.Tensor4D): tf.Tensor4D {
  return tf.tidy(() => vaeDecode(model.vae.params, model.vae.config, tf.div(latents, model.vae.config.scaling_factor) as tf.Tensor4D));
}

/** Final images in [0, 1], NHWC, as the pipeline's output_type='np'. */
export function decodeLatents(model: StableDiffusion, latents: tf.Tensor4D): tf.Tensor4D {
  return tf.tidy(() => tf.clipByValue(tf.add(tf.mul(decodeLatentsRaw(model, latents), 0.5), 0.5), 0, 1) as tf.Tensor4D);
}

/** Latent shape [B, h, w, C] for an image size; sizes must be multiples of the latent factor. */
export function latentShape(model: StableDiffusion, batch: number, width: number, height: number): [number, number, number, number] {
  const { h, w, c } = modelLatentGrid(model, width, height);
  return [batch, h, w, c];
}
