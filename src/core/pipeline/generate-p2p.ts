/**
 * Prompt-to-Prompt sampling as users ask for it: for each seed, the source prompt's image and the
 * edited prompt's image from the same noise (pipeline/prompt-to-prompt.ts controls the edited
 * one's attention). Events as sampleImages': two images per seed, the source's first.
 */
import * as tf from '@tensorflow/tfjs';
import type { StableDiffusion } from '../model.js';
import { Rng } from '../random.js';
import { modelLatentGrid, modelPromptLength } from '../sizes.js';
import { createScheduler } from '../schedulers/index.js';
import { PainterError } from '../../errors.js';
import { isPlainPrompt } from '../prompt/encode.js';
import { fixedConditioning, type RunConditioning } from '../prompt/conditioning.js';
import { isEditedPrompt } from '../prompt/schedule.js';
import { decodeBatch, type GenerateEvent, type GenerateRequest } from './generate.js';
import { LocalBlend, localBlendLayers } from './local-blend.js';
import { PromptToPromptControl } from './prompt-to-prompt.js';
import { denoise, encodePrompts } from './text-to-image.js';

export interface PromptToPromptRequest {
  target: string;
  crossReplace: number;
  selfReplace: number;
  reweight?: { word: string; weight: number }[];
  /** Local blending: outside the region of these words' attention the edit keeps the source's latents. */
  localBlend?: { words: string[]; threshold: number };
  /**
   * Null-text inversion's unconditional embeddings, one [1, L, C] per step (pipeline/null-text.ts),
   * used instead of the negative prompt's; the caller keeps them.
   */
  nullEmbeds?: readonly tf.Tensor3D[];
}

export async function* samplePromptToPrompt(model: StableDiffusion, req: GenerateRequest, p2p: PromptToPromptRequest): AsyncGenerator<GenerateEvent, void, void> {
  const { h, w, c } = modelLatentGrid(model, req.width, req.height);
  const length = modelPromptLength(model);
  for (const p of [req.prompt, p2p.target]) {
    if (!isPlainPrompt(model, p) || isEditedPrompt(p)) {
      throw new PainterError(
        `Prompt-to-Prompt takes plain prompts of up to ${length - 2} tokens, without (word:1.2), [from:to:when], [a|b] or BREAK; "${p}" is not one (use --reweight WORD=FACTOR to weight a word)`,
      );
    }
  }
  const lb = p2p.localBlend;
  const blend = lb && new LocalBlend(model.tokenizer, { source: req.prompt, target: p2p.target, words: lb.words, threshold: lb.threshold, length }, localBlendLayers(model.unet.config, h, w));
  let control: PromptToPromptControl;
  try {
    const settings = { source: req.prompt, target: p2p.target, crossReplace: p2p.crossReplace, selfReplace: p2p.selfReplace, reweight: p2p.reweight, steps: req.steps, length };
    control = new PromptToPromptControl(model.tokenizer, settings, req.guidance > 1, blend);
  } catch (e) {
    blend?.dispose();
    throw e;
  }
  const textOpts = { clipSkip: req.clipSkip, tokenEmbedding: req.tokenEmbedding, extraTokens: req.extraTokens };
  const promptEmbeds = encodePrompts(model, [req.prompt, p2p.target], textOpts);
  const negativeEmbeds = req.guidance > 1 && !p2p.nullEmbeds ? encodePrompts(model, [req.negativePrompt, req.negativePrompt], textOpts) : undefined;
  // Per-step null-text embeddings, the same for both prompts (only the conditional branch is edited).
  const nullSchedule = p2p.nullEmbeds?.map((e, i) => ({ endAtStep: i, text: '', embeds: tf.concat([e, e], 0) as tf.Tensor3D }));
  const conditioning: RunConditioning = nullSchedule ? { prompt: fixedConditioning(promptEmbeds).prompt, negative: nullSchedule } : fixedConditioning(promptEmbeds, negativeEmbeds);
  const perImage = c * h * w;
  try {
    for (let i = 0; i < req.count; i++) {
      const rng = new Rng(req.seed + i);
      const init = req.initLatents ? req.initLatents.subarray(i * perImage, (i + 1) * perImage) : rng.normals(perImage);
      // Both prompts start from the same noise, and share each step's ancestral noise.
      const latents = tf.tidy(() => tf.tile(tf.tensor4d(init, [1, c, h, w]).transpose([0, 2, 3, 1]), [2, 1, 1, 1]) as tf.Tensor4D);
      const scheduler = createScheduler(req.scheduler, model.scheduler, req.steps, { sigmas: req.schedule });
      const noise = (_step: number, shape: number[]) => tf.tile(tf.tensor4d(rng.normals(shape.slice(1).reduce((a, b) => a * b, 1)), [1, ...shape.slice(1)] as [number, number, number, number]), [2, 1, 1, 1]);
      const loop = denoise(model, { scheduler, conditioning, guidance: req.guidance, latents, noise, attentionControl: control });
      let final: tf.Tensor4D;
      try {
        let r = loop.next();
        while (!r.done) {
          yield { kind: 'step', step: r.value.step + 1, steps: r.value.total, images: [i] };
          r = loop.next();
        }
        final = r.value;
      } finally {
        loop.return(undefined as unknown as tf.Tensor4D);
        scheduler.dispose();
        latents.dispose();
      }
      yield* decodeBatch(model, req, [i, i], final);
    }
  } finally {
    control.dispose();
    tf.dispose([promptEmbeds, negativeEmbeds ?? [], ...(nullSchedule ?? []).map((e) => e.embeds)].flat());
  }
}
