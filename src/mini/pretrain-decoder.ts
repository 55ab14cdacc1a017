/**
 * Stage 5 of painter-mini's recipe (pretrain.ts): the VAE's decoder fine-tuned at the model's
 * final image size with the encoder frozen, as Stability fine-tuned SD's VAE decoder
 * (sd-vae-ft-mse): the latents — and so the UNet trained on them and the scaling factor — are
 * unchanged, only what the decoder draws from them gets sharper. Stage 1 trains the whole VAE at
 * the recipe's first size, where it cannot learn the detail of twice-as-large images.
 */
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { vaeDecode, vaeEncode, vaeParamShapes } from '../core/models/vae.js';
import type { Params } from '../core/params.js';
import { writeBytesAtomic } from '../io/atomic.js';
import { loadWeights } from '../io/load-weights.js';
import type { train } from '../train/engine.js';
import type { MiniConfigs } from './mini-config.js';
import type { PretrainHooks, PretrainSettings, StageSummary } from './pretrain.js';
import { BatchStream, DONE_FILE, engineConfig, imagesToArray, readDone, runStage, STAGE_SALT, summarise, variablePrefix, writeComponent } from './pretrain-stages.js';

/** Stage 5's images and noise: the VAE stage's streams, past any index stage 1 could reach. */
const DECODER_STREAM_OFFSET = 2 ** 27;

/** Keys of the parameters stage 5 trains: everything after the latent. */
export function isDecoderKey(key: string): boolean {
  return key.startsWith('decoder.') || key.startsWith('post_quant_conv.');
}

/**
 * Returns the whole VAE: stage 1's encoder, this stage's decoder. `vae` (stage 1's weights) is
 * left as it was; `size` is the model's final image size.
 */
export async function trainVaeDecoder(s: PretrainSettings, configs: MiniConfigs, vae: Params, size: number, hooks: PretrainHooks): Promise<{ params: Params; summary: StageSummary }> {
  const dir = path.join(s.runDir, 'vae-decoder');
  const cfg = configs.vae;
  const shapes = vaeParamShapes(cfg);
  const done = readDone(dir);
  const what = `stage 5 (vae decoder, ${size}×${size}, frozen encoder)`;
  if (done && done.steps >= s.decoderSteps) {
    hooks.log?.(`${what}: finished earlier (${done.steps} steps), reusing ${dir}`);
    return { params: loadWeights([path.join(dir, 'vae', 'diffusion_pytorch_model.safetensors')], shapes, 'painter-mini vae'), summary: done };
  }
  const prefix = variablePrefix('decoder');
  const vars = new Map<string, tf.Variable>();
  for (const [k, t] of vae) if (isDecoderKey(k)) vars.set(k, tf.variable(t, true, `${prefix}/${k}`));
  // The frozen encoder's tensors are stage 1's own; only the decoder's are replaced.
  const params: Params = new Map([...vae].map(([k, t]) => [k, vars.get(k) ?? t]));
  const data = new BatchStream(s.seed, STAGE_SALT.vae, s.vaeBatch, size, s.decoderSteps, false, DECODER_STREAM_OFFSET);
  const b = s.vaeBatch;
  let k = 0;
  const task: Parameters<typeof train>[0] = {
    vars,
    prepareBatch(rng) {
      const batch = data.take(k);
      data.request(++k);
      const x = imagesToArray(batch.images, size);
      // z = μ + σ·n from the frozen encoder, outside the tape.
      const latents = tf.tidy(() => {
        const post = vaeEncode(params, cfg, tf.tensor4d(x, [b, size, size, 3]));
        return tf.add(post.mean, tf.mul(post.std, tf.tensor4d(rng.normals(post.mean.size), post.mean.shape)));
      });
      const zShape = latents.shape as [number, number, number, number];
      const z = latents.dataSync() as Float32Array;
      latents.dispose();
      return () => {
        const diff = tf.sub(vaeDecode(params, cfg, tf.tensor4d(z, zShape)), tf.tensor4d(x, [b, size, size, 3]));
        return tf.add(tf.mean(tf.square(diff)), tf.mean(tf.abs(diff))) as tf.Scalar;
      };
    },
    saveState: () => ({ k }),
    restoreState(state) {
      k = (state as { k: number }).k;
    },
    async saveResult(runDir) {
      await writeComponent(path.join(runDir, 'vae'), cfg, 'diffusion_pytorch_model.safetensors', params);
      return path.join(runDir, 'vae');
    },
  };
  try {
    hooks.log?.(`${what}: ${s.decoderSteps} steps of ${b} images`);
    const engine = engineConfig(s, s.decoderSteps, s.vaeLr, 0, STAGE_SALT.vae);
    engine.seed += DECODER_STREAM_OFFSET;
    const losses = await runStage('decoder', s, data, task, engine, dir, hooks, () => k);
    const summary = summarise(losses);
    await writeBytesAtomic(path.join(dir, DONE_FILE), JSON.stringify(summary));
    const out: Params = new Map([...params].map(([key, t]) => [key, tf.clone(t)]));
    return { params: out, summary };
  } finally {
    for (const v of vars.values()) v.dispose();
  }
}
