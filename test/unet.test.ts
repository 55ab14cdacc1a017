/**
 * UNet2DConditionModel: parity with diffusers on tiny-sd-a (int, float and scalar timesteps),
 * an SD-2.x-style config (linear projections, per-block head counts) that runs and trains on
 * wasm, strict loading, config validation and tensor hygiene.
 */
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { PainterError } from '../src/errors.js';
import { disposeParams, initParams, type Params } from '../src/core/params.js';
import { timestepEmbedding, timestepFrequencies } from '../src/core/models/timestep-embedding.js';
import { parseUNetConfig, unetForward, unetParamShapes, type UNetConfig } from '../src/core/models/unet.js';
import { loadWeights, readJson } from '../src/io/load-weights.js';
import { loadReference, nchwToNhwc, nhwcToNchw, ref, relError, TINY_SD_A, useBackend } from './helpers.js';

const UNET_DIR = path.join(TINY_SD_A, 'unet');
const CONFIG_FILE = path.join(UNET_DIR, 'config.json');
const WEIGHTS_FILE = path.join(UNET_DIR, 'diffusion_pytorch_model.safetensors');

function tinyJson(): Record<string, unknown> {
  return readJson(CONFIG_FILE) as Record<string, unknown>;
}

/** SD-2.x style: linear projections, head count per block, upcast, cross width ≠ block width. */
function sd2StyleJson(): Record<string, unknown> {
  return {
    _class_name: 'UNet2DConditionModel',
    block_out_channels: [16, 32],
    layers_per_block: 1,
    down_block_types: ['CrossAttnDownBlock2D', 'DownBlock2D'],
    up_block_types: ['UpBlock2D', 'CrossAttnUpBlock2D'],
    mid_block_type: 'UNetMidBlock2DCrossAttn',
    cross_attention_dim: 24,
    attention_head_dim: [2, 4],
    use_linear_projection: true,
    upcast_attention: true,
    norm_num_groups: 8,
    in_channels: 4,
    out_channels: 4,
    sample_size: 8,
  };
}

describe('UNet2DConditionModel', () => {
  let config: UNetConfig;
  let params: Params;
  let refs: Map<string, tf.Tensor>;

  beforeAll(async () => {
    await useBackend();
    config = parseUNetConfig(readJson(CONFIG_FILE), CONFIG_FILE);
    params = loadWeights([WEIGHTS_FILE], unetParamShapes(config), 'unet');
    refs = loadReference('unet.safetensors');
  });

  afterAll(() => {
    disposeParams(params);
    for (const t of refs.values()) t.dispose();
  });

  it('parses the tiny-sd-a config with diffusers defaults', () => {
    expect(config.block_out_channels).toEqual([32, 64]);
    expect(config.attention_head_dim).toBe(8);
    expect(config.use_linear_projection).toBe(false);
    expect(config.mid_block_type).toBe('UNetMidBlock2DCrossAttn');
    expect(config.downsample_padding).toBe(1);
    expect(unetParamShapes(config).get('down_blocks.1.attentions.0.proj_in.weight')).toEqual([1, 1, 64, 64]);
  });

  const cases = [
    ['timesteps_int', 'noise_pred_int'],
    ['timesteps_float', 'noise_pred_float'],
    ['timestep_scalar', 'noise_pred_scalar'],
  ] as const;
  for (const [tKey, outKey] of cases) {
    it(`matches diffusers for ${tKey}`, () => {
      const err = tf.tidy(() => {
        const sample = nchwToNhwc(ref(refs, 'sample'));
        const ehs = ref(refs, 'encoder_hidden_states') as tf.Tensor3D;
        const out = unetForward(params, config, sample, ref(refs, tKey), ehs);
        expect(out.shape).toEqual([2, 32, 32, 4]);
        return relError(nhwcToNchw(out), ref(refs, outKey));
      });
      expect(err).toBeLessThan(1e-4);
    });
  }

  it('takes a plain number as the timestep (broadcast to the batch)', () => {
    const err = tf.tidy(() => {
      const out = unetForward(params, config, nchwToNhwc(ref(refs, 'sample')), 999, ref(refs, 'encoder_hidden_states') as tf.Tensor3D);
      return relError(nhwcToNchw(out), ref(refs, 'noise_pred_scalar'));
    });
    expect(err).toBeLessThan(1e-4);
  });

  it('leaks no tensors across calls', () => {
    const sample = nchwToNhwc(ref(refs, 'sample'));
    const ehs = ref(refs, 'encoder_hidden_states') as tf.Tensor3D;
    const t = ref(refs, 'timesteps_float');
    const step = (): void => unetForward(params, config, sample, t, ehs).dispose();
    step();
    const before = tf.memory().numTensors;
    step();
    step();
    expect(tf.memory().numTensors).toBe(before);
    sample.dispose();
  });

  it('matches diffusers gradients: d(MSE loss)/d conv_in.weight on the training reference', () => {
    const train = loadReference('training.safetensors');
    const w = tf.variable(params.get('conv_in.weight')!, true, 'tiny_unet_conv_in');
    const trainable: Params = new Map(params);
    trainable.set('conv_in.weight', w);
    const [predErr, lossErr, gradErr] = tf.tidy(() => {
      const x = nchwToNhwc(ref(train, 'noisy_latents'));
      const ehs = ref(train, 'encoder_hidden_states') as tf.Tensor3D;
      const target = nchwToNhwc(ref(train, 'target'));
      let pred: tf.Tensor | undefined;
      const { value, grads } = tf.variableGrads(() => {
        pred = tf.keep(unetForward(trainable, config, x, ref(train, 'timesteps'), ehs));
        return tf.mean(tf.square(tf.sub(pred, target))) as tf.Scalar;
      }, [w]);
      const expectedGrad = ref(train, 'grad_conv_in_weight').transpose([2, 3, 1, 0]); // OIHW → HWIO
      const errs = [
        relError(nhwcToNchw(pred!), ref(train, 'model_pred')),
        relError(value, ref(train, 'loss')),
        relError(grads[w.name]!, expectedGrad),
      ];
      pred!.dispose(); // kept past variableGrads' own tidy above
      return errs;
    });
    w.dispose();
    for (const t of train.values()) t.dispose();
    expect(predErr).toBeLessThan(1e-4);
    expect(lossErr).toBeLessThan(1e-4);
    expect(gradErr).toBeLessThan(1e-4);
  });

  it('refuses weights that do not fit the config, naming a key', () => {
    const wrong = parseUNetConfig({ ...tinyJson(), cross_attention_dim: 16 }, 'wrong.json');
    let caught: unknown;
    try {
      disposeParams(loadWeights([WEIGHTS_FILE], unetParamShapes(wrong), 'unet'));
    } catch (e) {
      caught = e;
    }
    expect(caught).toBeInstanceOf(PainterError);
    expect((caught as Error).message).toMatch(/"down_blocks\.1\.attentions\.\d\.transformer_blocks\.0\.attn2\.to_[kv]\.weight"/);

    const wider = parseUNetConfig({ ...tinyJson(), layers_per_block: 1 }, 'wider.json');
    expect(() => loadWeights([WEIGHTS_FILE], unetParamShapes(wider), 'unet')).toThrow(/"(down|up|mid)_blocks?\.[^"]+"/);
  });
});

describe('UNet config validation', () => {
  const bad = (patch: Record<string, unknown>): string => {
    try {
      parseUNetConfig({ ...tinyJson(), ...patch }, 'unet/config.json');
    } catch (e) {
      expect(e).toBeInstanceOf(PainterError);
      return (e as Error).message;
    }
    throw new Error('expected parseUNetConfig to throw');
  };

  it('names the file and each offending field', () => {
    expect(bad({ only_cross_attention: true })).toMatch(/^unet\/config\.json: .*"only_cross_attention"/);
    expect(bad({ class_embed_type: 'timestep' })).toMatch(/"class_embed_type"/);
    expect(bad({ num_attention_heads: 8 })).toMatch(/"num_attention_heads" must be null.*attention_head_dim/);
    expect(bad({ down_block_types: ['DownBlock2D', 'AttnDownBlock2D'] })).toMatch(/"down_block_types"/);
    expect(bad({ attention_head_dim: [2, 4, 8] })).toMatch(/"attention_head_dim" has 3 entries/);
    expect(bad({ norm_num_groups: 24 })).toMatch(/"norm_num_groups" 24 does not divide/);
    expect(bad({ dual_cross_attention: true, addition_embed_type: 'text_time' })).toMatch(/"dual_cross_attention".*; .*"addition_embed_type"/);
    expect(bad({ block_out_channels: undefined })).toMatch(/"block_out_channels" is missing/);
    expect(() => parseUNetConfig([], 'x.json')).toThrow(PainterError);
  });
});

describe('SD-2.x-style UNet', () => {
  let config: UNetConfig;
  let params: Params;
  const seeded = (shape: number[], seed: number): tf.Tensor => tf.randomNormal(shape, 0, 1, 'float32', seed);

  beforeAll(async () => {
    await useBackend();
    config = parseUNetConfig(sd2StyleJson(), 'sd2-style');
    params = initParams(unetParamShapes(config), 7);
  });

  afterAll(() => disposeParams(params));

  it('uses Linear projections and the per-block head counts', () => {
    const shapes = unetParamShapes(config);
    expect(shapes.get('down_blocks.0.attentions.0.proj_in.weight')).toEqual([16, 16]);
    expect(shapes.get('mid_block.attentions.0.transformer_blocks.0.attn2.to_k.weight')).toEqual([24, 32]);
    expect(shapes.get('up_blocks.1.resnets.1.conv_shortcut.weight')).toEqual([1, 1, 32, 16]);
    // Head counts do not change shapes but must change the result: [2, 4] vs one head each.
    const oneHead: UNetConfig = { ...config, attention_head_dim: [1, 1] };
    const diff = tf.tidy(() => {
      const x = seeded([1, 8, 8, 4], 1) as tf.Tensor4D;
      const ctx = seeded([1, 5, 24], 2) as tf.Tensor3D;
      const a = unetForward(params, config, x, 500, ctx);
      const b = unetForward(params, oneHead, x, 500, ctx);
      return relError(a, b);
    });
    expect(diff).toBeGreaterThan(1e-3);
  });

  it('runs on batch 2 with per-sample timesteps and odd latent sizes', () => {
    tf.tidy(() => {
      const ctx = seeded([2, 77, 24], 3) as tf.Tensor3D;
      for (const [h, w] of [
        [8, 8],
        [7, 9],
      ] as const) {
        const out = unetForward(params, config, seeded([2, h, w, 4], 4) as tf.Tensor4D, tf.tensor1d([10.5, 900]), ctx);
        expect(out.shape).toEqual([2, h, w, 4]);
        expect(tf.all(tf.isFinite(out)).dataSync()[0]).toBe(1);
      }
    });
  });

  it('differentiates on wasm: conv_in.weight gets a finite, nonzero gradient', () => {
    const w = tf.variable(params.get('conv_in.weight')!, true, 'unet_conv_in');
    const trainable: Params = new Map(params);
    trainable.set('conv_in.weight', w);
    const norm = tf.tidy(() => {
      const x = seeded([2, 8, 8, 4], 5) as tf.Tensor4D;
      const ctx = seeded([2, 77, 24], 6) as tf.Tensor3D;
      const target = seeded([2, 8, 8, 4], 8);
      const { value, grads } = tf.variableGrads(
        () => tf.mean(tf.square(tf.sub(unetForward(trainable, config, x, tf.tensor1d([3, 700], 'int32'), ctx), target))) as tf.Scalar,
        [w],
      );
      expect(Number.isFinite(value.dataSync()[0])).toBe(true);
      const g = grads[w.name]!;
      expect(g.shape).toEqual([3, 3, 4, 16]);
      expect(tf.all(tf.isFinite(g)).dataSync()[0]).toBe(1);
      return tf.norm(g).dataSync()[0]!;
    });
    w.dispose();
    expect(norm).toBeGreaterThan(0);
  });
});

describe('timestep embedding', () => {
  beforeAll(async () => {
    await useBackend();
  });

  it('follows get_timestep_embedding: frequencies, order and flip', () => {
    const f = timestepFrequencies(4, 1);
    expect(f[0]).toBe(1);
    expect(f[3]).toBeCloseTo(Math.exp((-Math.log(10000) * 3) / 3), 6);
    const [plain, flipped, odd] = tf.tidy(() => {
      const t = tf.tensor1d([0, 2.5]);
      return [timestepEmbedding(t, 8, false, 0), timestepEmbedding(t, 8, true, 0), timestepEmbedding(t, 5, true, 0)].map((e) => e.arraySync());
    });
    const freqs = timestepFrequencies(4, 0);
    const expected = [...Array.from(freqs, (fr) => Math.sin(2.5 * fr)), ...Array.from(freqs, (fr) => Math.cos(2.5 * fr))];
    plain![1]!.forEach((v, i) => expect(v).toBeCloseTo(expected[i]!, 5));
    expect(plain![0]).toEqual([0, 0, 0, 0, 1, 1, 1, 1]);
    expect(flipped![0]).toEqual([1, 1, 1, 1, 0, 0, 0, 0]);
    expect(odd![0]).toEqual([1, 1, 0, 0, 0]);
  });
});
