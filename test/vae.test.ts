import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseVaeConfig, vaeDecode, vaeEncode, vaeLatentFactor, vaeParamShapes, vaeSample, type VaeConfig } from '../src/core/models/vae.js';
import { disposeParams, initParams, param, type Params } from '../src/core/params.js';
import { PainterError } from '../src/errors.js';
import { loadWeights, readJson } from '../src/io/load-weights.js';
import { loadSafetensors, writeSafetensors, type TensorToWrite } from '../src/io/safetensors.js';
import { TINY_SD_A, loadReference, nchwToNhwc, nhwcToNchw, ref, relError, useBackend } from './helpers.js';

const CONFIG_FILE = path.join(TINY_SD_A, 'vae', 'config.json');
const WEIGHTS_FILE = path.join(TINY_SD_A, 'vae', 'diffusion_pytorch_model.safetensors');

let config: VaeConfig;
let params: Params;
let reference: Map<string, tf.Tensor>;
let tmp: string;

beforeAll(async () => {
  await useBackend();
  config = parseVaeConfig(readJson(CONFIG_FILE), CONFIG_FILE);
  params = loadWeights([WEIGHTS_FILE], vaeParamShapes(config), 'VAE');
  reference = loadReference('vae.safetensors');
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'painter-vae-'));
});

afterAll(() => {
  disposeParams(params);
  for (const t of reference.values()) t.dispose();
  fs.rmSync(tmp, { recursive: true, force: true });
});

/** A reference tensor (NCHW as stored) in NHWC. */
function nhwc(key: string): tf.Tensor4D {
  return nchwToNhwc(ref(reference, key));
}

async function editedCheckpoint(name: string, edit: (m: Map<string, TensorToWrite>) => void): Promise<string> {
  const m = new Map<string, TensorToWrite>();
  for (const [k, t] of loadSafetensors(WEIGHTS_FILE).tensors) m.set(k, t as TensorToWrite);
  edit(m);
  const file = path.join(tmp, name);
  await writeSafetensors(file, m);
  return file;
}

describe('parseVaeConfig', () => {
  it('reads the tiny-sd-a config', () => {
    expect(config).toMatchObject({ block_out_channels: [32, 64], layers_per_block: 1, latent_channels: 4, scaling_factor: 0.18215, shift_factor: null });
    expect(vaeLatentFactor(config)).toBe(2);
    expect(vaeLatentFactor({ ...config, block_out_channels: [128, 256, 512, 512] })).toBe(8);
  });

  it('names the file and every bad field', () => {
    const base = readJson(CONFIG_FILE) as object;
    const bad = { ...base, act_fn: 'tanh', down_block_types: ['DownEncoderBlock2D', 'AttnDownEncoderBlock2D'], use_quant_conv: 'yes' };
    expect(() => parseVaeConfig(bad, 'v/config.json')).toThrow(PainterError);
    expect(() => parseVaeConfig(bad, 'v/config.json')).toThrow(/v\/config\.json.*"down_block_types".*"use_quant_conv".*"act_fn"/);
    expect(() => parseVaeConfig({ ...base, block_out_channels: [32, 64, 64] }, 'c.json')).toThrow(/one entry per/);
    expect(() => parseVaeConfig({ ...base, norm_num_groups: 24 }, 'c.json')).toThrow(/divisible/);
  });
});

describe('AutoencoderKL parity with diffusers', () => {
  it('encodes: latent_dist mean, logvar, std, sample', () => {
    const errs = tf.tidy(() => {
      const post = vaeEncode(params, config, nhwc('image'));
      expect(post.mean.shape).toEqual([1, 32, 32, 4]);
      const sample = vaeSample(post, nhwc('posterior_noise'));
      return {
        mean: relError(nhwcToNchw(post.mean), ref(reference, 'latent_mean')),
        logvar: relError(nhwcToNchw(post.logvar), ref(reference, 'latent_logvar')),
        std: relError(nhwcToNchw(post.std), ref(reference, 'latent_std')),
        sample: relError(nhwcToNchw(sample), ref(reference, 'posterior_sample')),
      };
    });
    for (const e of Object.values(errs)) expect(e).toBeLessThan(1e-4);
  });

  it('decodes raw latents', () => {
    const err = tf.tidy(() => {
      const img = vaeDecode(params, config, nhwc('decode_latent'));
      expect(img.shape).toEqual([1, 64, 64, 3]);
      return relError(nhwcToNchw(img), ref(reference, 'decoded'));
    });
    expect(err).toBeLessThan(1e-4);
  });

  it('rejects images of the wrong layout or size', () => {
    tf.tidy(() => {
      expect(() => vaeEncode(params, config, tf.zeros([1, 3, 64, 64]) as tf.Tensor4D)).toThrow(/NHWC/);
      expect(() => vaeEncode(params, config, tf.zeros([1, 63, 64, 3]) as tf.Tensor4D)).toThrow(/multiple of 2/);
      expect(() => vaeDecode(params, config, tf.zeros([1, 8, 8, 3]) as tf.Tensor4D)).toThrow(/NHWC/);
    });
  });

  it('does not leak tensors', () => {
    const image = nhwc('image');
    const latent = nhwc('decode_latent');
    const once = (): void => {
      const post = vaeEncode(params, config, image);
      const s = vaeSample(post, latent);
      const img = vaeDecode(params, config, s);
      for (const t of [post.mean, post.logvar, post.std, s, img]) t.dispose();
    };
    once();
    const before = tf.memory().numTensors;
    once();
    once();
    expect(tf.memory().numTensors).toBe(before);
    image.dispose();
    latent.dispose();
  });
});

describe('other configurations', () => {
  it('runs without mid-block attention, quant convs, with 3 blocks and 2 layers (random weights)', () => {
    const cfg = parseVaeConfig(
      {
        ...(readJson(CONFIG_FILE) as object),
        block_out_channels: [32, 32, 64],
        down_block_types: Array(3).fill('DownEncoderBlock2D'),
        up_block_types: Array(3).fill('UpDecoderBlock2D'),
        layers_per_block: 2,
        mid_block_add_attention: false,
        use_quant_conv: false,
        use_post_quant_conv: false,
      },
      'variant.json',
    );
    const shapes = vaeParamShapes(cfg);
    expect([...shapes.keys()].some((k) => k.includes('attentions') || k.includes('quant_conv'))).toBe(false);
    expect(shapes.has('decoder.up_blocks.2.resnets.2.conv2.weight')).toBe(true);
    const p = initParams(shapes, 5);
    try {
      tf.tidy(() => {
        const post = vaeEncode(p, cfg, tf.randomUniform([2, 16, 16, 3], -1, 1, 'float32', 1) as tf.Tensor4D);
        expect(post.mean.shape).toEqual([2, 4, 4, 4]);
        const img = vaeDecode(p, cfg, post.mean);
        expect(img.shape).toEqual([2, 16, 16, 3]);
        expect(Number.isFinite(tf.sum(img).dataSync()[0])).toBe(true);
      });
    } finally {
      disposeParams(p);
    }
  });
});

describe('gradients', () => {
  it('differentiates decode w.r.t. latents and weights on wasm', () => {
    expect(tf.getBackend()).toBe(process.env['PAINTER_TEST_BACKEND'] ?? 'wasm');
    const latent = tf.variable(nhwc('decode_latent').slice([0, 0, 0, 0], [1, 8, 8, 4]), true, 'latent');
    const w = tf.variable(param(params, 'decoder.up_blocks.0.upsamplers.0.conv.weight').clone(), true, 'up_w');
    try {
      const loss = (z: tf.Tensor4D = latent): tf.Scalar => tf.tidy(() => tf.mean(tf.square(vaeDecode(new Map([...params, ['decoder.up_blocks.0.upsamplers.0.conv.weight', w]]), config, z))));
      const { value, grads } = tf.variableGrads(() => loss(), [latent, w]);
      const gz = grads['latent']!;
      const gw = grads['up_w']!;
      expect(gz.shape).toEqual([1, 8, 8, 4]);
      expect(gw.shape).toEqual(w.shape);
      expect(tf.tidy(() => tf.sum(tf.abs(gw)).dataSync()[0]!)).toBeGreaterThan(0);
      // Directional derivative against a central finite difference.
      const dir = tf.randomNormal([1, 8, 8, 4], 0, 1, 'float32', 9) as tf.Tensor4D;
      const eps = 1e-2;
      const f = (s: number): number => tf.tidy(() => loss(tf.add(latent, tf.mul(dir, s)) as tf.Tensor4D).dataSync()[0]!);
      const fd = (f(eps) - f(-eps)) / (2 * eps);
      const analytic = tf.tidy(() => tf.sum(tf.mul(gz, dir)).dataSync()[0]!);
      expect(Math.abs(fd - analytic) / Math.abs(analytic)).toBeLessThan(2e-2);
      for (const t of [value, gz, gw, dir]) t.dispose();
    } finally {
      latent.dispose();
      w.dispose();
    }
  });
});

describe('strict loading', () => {
  it('rejects unknown, missing and misshapen weights, naming the key', async () => {
    const extra = await editedCheckpoint('extra.safetensors', (m) => m.set('encoder.mid_block.attentions.0.query.weight', { shape: [64, 64], data: new Float32Array(64 * 64) }));
    expect(() => loadWeights([extra], vaeParamShapes(config), 'VAE')).toThrow(/unexpected.*attentions\.0\.query\.weight/);

    const missing = await editedCheckpoint('missing.safetensors', (m) => m.delete('decoder.up_blocks.1.resnets.0.conv_shortcut.bias'));
    expect(() => loadWeights([missing], vaeParamShapes(config), 'VAE')).toThrow(/missing.*conv_shortcut\.bias/);

    expect(() => loadWeights([WEIGHTS_FILE], vaeParamShapes({ ...config, latent_channels: 8 }), 'VAE')).toThrow(/shape/);
    expect(() => loadWeights([WEIGHTS_FILE], vaeParamShapes({ ...config, use_quant_conv: false }), 'VAE')).toThrow(/unexpected.*quant_conv/);
    expect(() => loadWeights([WEIGHTS_FILE], vaeParamShapes({ ...config, layers_per_block: 2 }), 'VAE')).toThrow(/missing.*resnets\.1/);
  });
});
