/**
 * `edit --source "…"`: Prompt-to-Prompt on a real picture, as the paper does with DDIM
 * inversion — the picture's latents inverted with the source prompt (guidance 1), then the source
 * and the edited prompt denoised together from that noise with DDIM, the edited one's attention
 * controlled. Events as generate's: per seed the reconstruction, then the edit.
 */
import * as tf from '@tensorflow/tfjs';
import type { StableDiffusion } from '../core/model.js';
import { ddimInvert } from '../core/pipeline/ddim-inversion.js';
import { nullTextInversion } from '../core/pipeline/null-text.js';
import { latentsToNchw, pictureLatents, type EditDraws } from '../core/pipeline/edit.js';
import type { GenerateEvent } from '../core/pipeline/generate.js';
import { samplePromptToPrompt, type PromptToPromptRequest } from '../core/pipeline/generate-p2p.js';
import { encodePrompts } from '../core/pipeline/text-to-image.js';
import type { EditImage } from '../io/edit-inputs.js';

export interface SourceEditSettings {
  source: string;
  target: string;
  negative: string;
  steps: number;
  guidance: number;
  seed: number;
  clipSkip: number;
  crossReplace: number;
  selfReplace: number;
  /** Local blending: outside these words' region the edit keeps the reconstruction's latents. */
  localBlend?: PromptToPromptRequest['localBlend'];
  draws?: EditDraws;
  /** Null-text inversion: optimise the unconditional embedding per step so guided sampling reconstructs the picture. */
  nullText?: boolean;
}

/** Progress of the inversion and of null-text optimisation. */
export type SourceEditEvent = GenerateEvent | { kind: 'invert'; step: number; steps: number } | { kind: 'null-text'; step: number; steps: number };

/**
 * Events: an 'invert' step per inversion step, with --null-text a 'null-text' step per optimised
 * step, then generate's events for the pair.
 */
export async function* sourceEdit(model: StableDiffusion, picture: EditImage, s: SourceEditSettings): AsyncGenerator<SourceEditEvent, void, void> {
  const latents = pictureLatents(model, picture, s.seed, s.draws?.posterior);
  const promptEmbeds = encodePrompts(model, [s.source], { clipSkip: s.clipSkip });
  const loop = ddimInvert(model, { latents, promptEmbeds, guidance: 1, steps: s.steps });
  // The whole trajectory z*_0 … z*_N, which null-text inversion follows.
  const trajectory: tf.Tensor4D[] = s.nullText ? [tf.clone(latents)] : [];
  let nullEmbeds: tf.Tensor3D[] | undefined;
  let inverted: tf.Tensor4D;
  try {
    let r = loop.next();
    while (!r.done) {
      if (s.nullText) trajectory.push(tf.clone(r.value.latents));
      yield { kind: 'invert', step: r.value.step + 1, steps: r.value.total };
      r = loop.next();
    }
    inverted = r.value;
    if (s.nullText) {
      const empty = encodePrompts(model, [s.negative], { clipSkip: s.clipSkip });
      try {
        const optimise = nullTextInversion(model, { trajectory, promptEmbeds, nullEmbeds: empty, guidance: s.guidance });
        let o = await optimise.next();
        while (!o.done) {
          yield { kind: 'null-text', step: o.value.step + 1, steps: o.value.total };
          o = await optimise.next();
        }
        nullEmbeds = o.value;
      } finally {
        empty.dispose();
      }
    }
  } finally {
    loop.return(undefined as unknown as tf.Tensor4D);
    tf.dispose([latents, promptEmbeds, ...trajectory]);
  }
  try {
    const initLatents = await latentsToNchw(inverted);
    const request = {
      prompt: s.source,
      negativePrompt: s.negative,
      steps: s.steps,
      guidance: s.guidance,
      scheduler: 'ddim' as const,
      seed: s.seed,
      count: 1,
      batch: 1,
      width: picture.width,
      height: picture.height,
      clipSkip: s.clipSkip,
      initLatents,
    };
    yield* samplePromptToPrompt(model, request, { target: s.target, crossReplace: s.crossReplace, selfReplace: s.selfReplace, nullEmbeds, ...(s.localBlend && { localBlend: s.localBlend }) });
  } finally {
    tf.dispose(nullEmbeds ?? []);
  }
}
