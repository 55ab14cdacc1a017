/**
 * `edit --source "…"`: Prompt-to-Prompt on a real picture, as the paper does with DDIM
 * inversion — the picture's latents inverted with the source prompt (guidance 1), then the source
 * and the edited prompt denoised together from that noise with DDIM, the edited one's attention
 * controlled. Events as generate's: per seed the reconstruction, then the edit.
 */
import * as tf from '@tensorflow/tfjs';
import type { StableDiffusion } from '../core/model.js';
import { vaeLatentFactor } from '../core/models/vae.js';
import { ddimInvert } from '../core/pipeline/ddim-inversion.js';
import { encodeLatents, type EditDraws } from '../core/pipeline/edit.js';
import type { GenerateEvent } from '../core/pipeline/generate.js';
import { samplePromptToPrompt } from '../core/pipeline/generate-p2p.js';
import { encodePrompts } from '../core/pipeline/text-to-image.js';
import { Rng } from '../core/random.js';
import { PainterError } from '../errors.js';
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
  draws?: EditDraws;
}

/** Events: an 'invert' step per inversion step, then generate's events for the pair. */
export async function* sourceEdit(model: StableDiffusion, picture: EditImage, s: SourceEditSettings): AsyncGenerator<GenerateEvent | { kind: 'invert'; step: number; steps: number }, void, void> {
  const c = model.vae.config.latent_channels;
  const f = vaeLatentFactor(model.vae.config);
  const [h, w] = [picture.height / f, picture.width / f];
  const posterior = s.draws?.posterior ?? new Rng(s.seed).normals(c * h * w);
  if (posterior.length !== c * h * w) throw new PainterError(`the given posterior holds ${posterior.length} values; this picture needs [1, ${c}, ${h}, ${w}]`);
  const latents = tf.tidy(() =>
    encodeLatents(model, tf.tensor4d(picture.pixels, [1, picture.height, picture.width, 3]), tf.tensor4d(posterior, [1, c, h, w]).transpose([0, 2, 3, 1]) as tf.Tensor4D),
  );
  const promptEmbeds = encodePrompts(model, [s.source], { clipSkip: s.clipSkip });
  const loop = ddimInvert(model, { latents, promptEmbeds, guidance: 1, steps: s.steps });
  let inverted: tf.Tensor4D;
  try {
    let r = loop.next();
    while (!r.done) {
      yield { kind: 'invert', step: r.value.step + 1, steps: r.value.total };
      r = loop.next();
    }
    inverted = r.value;
  } finally {
    loop.return(undefined as unknown as tf.Tensor4D);
    tf.dispose([latents, promptEmbeds]);
  }
  const nchw = tf.tidy(() => inverted.transpose([0, 3, 1, 2]));
  inverted.dispose();
  const initLatents = (await nchw.data()) as Float32Array;
  nchw.dispose();
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
  yield* samplePromptToPrompt(model, request, { target: s.target, crossReplace: s.crossReplace, selfReplace: s.selfReplace });
}
