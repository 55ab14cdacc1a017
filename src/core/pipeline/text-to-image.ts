/**
 * Text-to-image sampling with classifier-free guidance, written out in numbered steps as
 * diffusers' StableDiffusionPipeline does. Each denoising step is one synchronous tf.tidy; the
 * loop is a generator so the caller can report progress, yield to the event loop and stop
 * between steps.
 */
import * as tf from '@tensorflow/tfjs';
import type { StableDiffusion } from '../model.js';
import { clipTextForward } from '../models/clip-text.js';
import type { AttentionControl } from '../models/attention-control.js';
import { unetForward } from '../models/unet.js';
import { vaeDecode } from '../models/vae.js';
import { modelLatentGrid, modelPromptLength } from '../sizes.js';
import type { Scheduler } from '../schedulers/index.js';
import { expandPrompt } from '../embeddings.js';
import { encode } from '../tokenizer/clip-tokenizer.js';

export interface PromptEncodingOptions {
  /** Use the text encoder's output this many layers before the last ("clip skip"). */
  clipSkip?: number;
  /** Token-embedding table to use instead of the model's (learned embeddings). */
  tokenEmbedding?: tf.Tensor;
  /** Learned rows appended at an offset (see ClipTextOptions.extraTokens). */
  extraTokens?: { offset: number; rows: tf.Tensor };
}

/**
 * Token ids as the pipeline feeds the text encoder, one row per prompt: multi-vector embedding
 * tokens expanded (maybe_convert_prompt), then padded and truncated to model_max_length. Kept on
 * the host, so the text encoder never reads them back from a device.
 */
export function promptIdRows(model: StableDiffusion, prompts: readonly string[]): number[][] {
  const maxLength = modelPromptLength(model);
  return prompts.map((p) => encode(model.tokenizer, expandPrompt(p, model.tokenizer), { maxLength, padding: 'max_length', truncation: true }).ids);
}

/** promptIdRows as an int32 tensor [B, L]. */
export function promptIds(model: StableDiffusion, prompts: readonly string[]): tf.Tensor2D {
  const rows = promptIdRows(model, prompts);
  return tf.tensor2d(rows, [rows.length, modelPromptLength(model)], 'int32');
}

/** prompt_embeds [B, L, C] (encode_prompt: last hidden state, or final-norm'd earlier layer). */
export function encodePrompts(model: StableDiffusion, prompts: string[], opts: PromptEncodingOptions = {}): tf.Tensor3D {
  return tf.tidy(() => {
    const ids = promptIdRows(model, prompts);
    return clipTextForward(model.textEncoder.params, model.textEncoder.config, ids, {
      skipLastLayers: opts.clipSkip ?? 0,
      tokenEmbedding: opts.tokenEmbedding,
      extraTokens: opts.extraTokens,
    }).lastHiddenState;
  });
}

export interface DenoiseInput {
  scheduler: Scheduler;
  /** Conditional embeddings [B, L, C]. */
  promptEmbeds: tf.Tensor3D;
  /** Unconditional (negative-prompt) embeddings [B, L, C]; needed when guidance > 1. */
  negativeEmbeds?: tf.Tensor3D;
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
  /** A hook on the UNet's attention (Prompt-to-Prompt); its `step` is set before each step. */
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
  if (guided && !input.negativeEmbeds) throw new Error('denoise: guidance > 1 needs negativeEmbeds');
  // 1. Conditioning batch: [uncond, cond] as diffusers concatenates it.
  const context = guided ? tf.concat([input.negativeEmbeds!, input.promptEmbeds], 0) : tf.clone(input.promptEmbeds);
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
        const pred = unetForward(model.unet.params, model.unet.config, modelIn, t, context as tf.Tensor3D, control ? { attentionControl: control } : {});
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
        const stepped = scheduler.step(eps, t, latents, noise).prevSample as tf.Tensor4D;
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
    context.dispose();
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
