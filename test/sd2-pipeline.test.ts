/**
 * An SD-2.x-style pipeline (v-prediction, linear projections, gelu text encoder with a
 * non-legacy EOS id, per-block head counts, upcast attention, `!` padding) built from configs
 * and seeded random weights: saved as a diffusers folder, loaded back, generated from and
 * trained through end to end.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { disposeModel, type StableDiffusion } from '../src/core/model.js';
import { clipTextParamShapes, parseClipTextConfig } from '../src/core/models/clip-text.js';
import { parseUNetConfig, unetParamShapes } from '../src/core/models/unet.js';
import { parseVaeConfig, vaeParamShapes } from '../src/core/models/vae.js';
import { initParams } from '../src/core/params.js';
import { createScheduler, noiseSchedule, parseSchedulerConfig } from '../src/core/schedulers/index.js';
import { decodeLatents, denoiseAll, encodePrompts } from '../src/core/pipeline/text-to-image.js';
import { diffusionLoss } from '../src/core/training/loss.js';
import { createClipTokenizer, encode } from '../src/core/tokenizer/clip-tokenizer.js';
import { loadModel } from '../src/io/load-model.js';
import { saveModel } from '../src/io/save-model.js';
import { TINY_SD_A, useBackend } from './helpers.js';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'painter-sd2-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

function sd2Tokenizer() {
  const dir = path.join(TINY_SD_A, 'tokenizer');
  const config = JSON.parse(fs.readFileSync(path.join(dir, 'tokenizer_config.json'), 'utf8'));
  // SD 2.x tokenizers pad with "!" (id 0) instead of repeating the EOS token.
  config.pad_token = '!';
  config.added_tokens_decoder = {
    '0': { content: '!', lstrip: false, normalized: false, rstrip: false, single_word: false, special: true },
    '895': { content: '<|startoftext|>', lstrip: false, normalized: true, rstrip: false, single_word: false, special: true },
    '896': { content: '<|endoftext|>', lstrip: false, normalized: true, rstrip: false, single_word: false, special: true },
  };
  return createClipTokenizer({
    vocab: JSON.parse(fs.readFileSync(path.join(dir, 'vocab.json'), 'utf8')),
    merges: fs.readFileSync(path.join(dir, 'merges.txt'), 'utf8'),
    tokenizerConfig: config,
  });
}

function buildSd2(): StableDiffusion {
  const unet = parseUNetConfig(
    {
      block_out_channels: [16, 32],
      layers_per_block: 1,
      down_block_types: ['CrossAttnDownBlock2D', 'DownBlock2D'],
      up_block_types: ['UpBlock2D', 'CrossAttnUpBlock2D'],
      cross_attention_dim: 24,
      attention_head_dim: [2, 4],
      use_linear_projection: true,
      upcast_attention: true,
      norm_num_groups: 8,
      sample_size: 8,
    },
    'sd2 unet',
  );
  const vae = parseVaeConfig(
    { block_out_channels: [8, 16], down_block_types: ['DownEncoderBlock2D', 'DownEncoderBlock2D'], up_block_types: ['UpDecoderBlock2D', 'UpDecoderBlock2D'], layers_per_block: 1, norm_num_groups: 4, latent_channels: 4, sample_size: 16 },
    'sd2 vae',
  );
  const text = parseClipTextConfig(
    { hidden_size: 24, intermediate_size: 40, num_attention_heads: 4, num_hidden_layers: 3, hidden_act: 'gelu', vocab_size: 897, max_position_embeddings: 77, bos_token_id: 895, eos_token_id: 896, pad_token_id: 0 },
    'sd2 text',
  );
  const scheduler = parseSchedulerConfig(
    { _class_name: 'DDIMScheduler', beta_schedule: 'scaled_linear', beta_start: 0.00085, beta_end: 0.012, prediction_type: 'v_prediction', steps_offset: 1, clip_sample: false, set_alpha_to_one: false, timestep_spacing: 'leading' },
    'sd2 scheduler',
  );
  return {
    source: 'sd2-test',
    unet: { config: unet, params: initParams(unetParamShapes(unet), 1) },
    vae: { config: vae, params: initParams(vaeParamShapes(vae), 2) },
    textEncoder: { config: text, params: initParams(clipTextParamShapes(text), 3) },
    tokenizer: sd2Tokenizer(),
    scheduler,
  };
}

let built: StableDiffusion;
let loaded: StableDiffusion;

beforeAll(async () => {
  await useBackend();
  built = buildSd2();
  await saveModel(built, path.join(tmp, 'sd2'));
  loaded = loadModel(path.join(tmp, 'sd2'));
});
afterAll(() => {
  disposeModel(built);
  disposeModel(loaded);
});

describe('SD-2.x-style pipeline', () => {
  it('saves as a diffusers folder and loads back identically', () => {
    expect(fs.readdirSync(path.join(tmp, 'sd2')).sort()).toEqual(['model_index.json', 'scheduler', 'text_encoder', 'tokenizer', 'unet', 'vae']);
    for (const part of ['unet', 'vae', 'textEncoder'] as const) {
      expect([...loaded[part].params.keys()].sort()).toEqual([...built[part].params.keys()].sort());
      for (const [k, t] of built[part].params) {
        expect(Array.from(loaded[part].params.get(k)!.dataSync()), k).toEqual(Array.from(t.dataSync()));
      }
      expect(loaded[part].config).toEqual(built[part].config);
    }
    expect(loaded.scheduler.prediction_type).toBe('v_prediction');
    const ids = encode(loaded.tokenizer, 'a photo of a cat', { maxLength: 77, padding: 'max_length' }).ids;
    expect(ids.slice(-3)).toEqual([0, 0, 0]); // "!" padding survived the round trip
  });

  it('generates an image with guidance (v-prediction, DDIM and Euler ancestral)', () => {
    for (const kind of ['ddim', 'euler-a'] as const) {
      const img = tf.tidy(() => {
        const prompt = encodePrompts(loaded, ['a photo of a cat']);
        const negative = encodePrompts(loaded, ['']);
        const scheduler = createScheduler(kind, loaded.scheduler, 4);
        const latents = denoiseAll(loaded, {
          scheduler,
          promptEmbeds: prompt,
          negativeEmbeds: negative,
          guidance: 5,
          latents: tf.randomNormal([1, 8, 8, 4], 0, 1, 'float32', 11) as tf.Tensor4D,
          noise: (i, shape) => tf.randomNormal(shape, 0, 1, 'float32', 100 + i),
        });
        scheduler.dispose();
        return decodeLatents(loaded, latents);
      });
      expect(img.shape).toEqual([1, 16, 16, 3]);
      const v = img.dataSync();
      expect(v.every((x) => Number.isFinite(x) && x >= 0 && x <= 1), kind).toBe(true);
      expect(tf.moments(img).variance.dataSync()[0]!, kind).toBeGreaterThan(1e-6);
      img.dispose();
    }
  });

  it('trains: the v-target loss is finite and conv_in gets a nonzero gradient', () => {
    const convIn = tf.variable(loaded.unet.params.get('conv_in.weight')!.clone(), true, 'sd2_conv_in');
    const params = new Map(loaded.unet.params);
    params.set('conv_in.weight', convIn);
    const ehs = encodePrompts(loaded, ['a photo of a cat', 'a dog']);
    const { value, grads } = tf.variableGrads(
      () =>
        diffusionLoss(
          { params, config: loaded.unet.config },
          noiseSchedule(loaded.scheduler),
          { latents: tf.randomNormal([2, 8, 8, 4], 0, 1, 'float32', 1) as tf.Tensor4D, noise: tf.randomNormal([2, 8, 8, 4], 0, 1, 'float32', 2) as tf.Tensor4D, timesteps: [10, 900], encoderHiddenStates: ehs },
          { predictionType: 'v_prediction', minSnrGamma: 5 },
        ),
      [convIn],
    );
    expect(Number.isFinite(value.dataSync()[0]!)).toBe(true);
    expect(tf.norm(grads[convIn.name]!).dataSync()[0]!).toBeGreaterThan(0);
    tf.dispose([convIn, ehs, value, ...Object.values(grads)]);
  });
});
