/**
 * Single-file checkpoints: the shared tiny-sd-a file (written by diffusers' own conversion
 * functions) loads to weights identical to the diffusers folder; painter's inverse mapping
 * writes that same file back; an SD 2.x (OpenCLIP) file round-trips.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { CLIP_TEXT_IGNORED_KEYS, clipTextParamShapes, parseClipTextConfig } from '../src/core/models/clip-text.js';
import { parseUNetConfig, unetParamShapes } from '../src/core/models/unet.js';
import { parseVaeConfig, vaeParamShapes } from '../src/core/models/vae.js';
import type { Params } from '../src/core/params.js';
import { loadSafetensors } from '../src/io/safetensors.js';
import { loadWeights, readJson } from '../src/io/load-weights.js';
import { detectArch, loadSingleFile, writeSingleFile, type PipelineConfigs, type PipelineParams } from '../src/io/single-file.js';
import { FIXTURES, TINY_SD_A, useBackend } from './helpers.js';

const SINGLE = path.join(FIXTURES, 'tiny-sd-a-single-file', 'tiny-sd-a.safetensors');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'painter-single-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

let configs: PipelineConfigs;
let folder: PipelineParams;

function expectSameParams(a: Params, b: Params, label: string): void {
  expect([...a.keys()].sort(), label).toEqual([...b.keys()].sort());
  for (const [k, t] of a) {
    const u = b.get(k)!;
    expect(u.shape, k).toEqual(t.shape);
    expect(Buffer.from((u.dataSync() as Float32Array).buffer).equals(Buffer.from((t.dataSync() as Float32Array).buffer)), k).toBe(true);
  }
}

beforeAll(async () => {
  await useBackend();
  const cfg = (c: string) => readJson(path.join(TINY_SD_A, c, 'config.json'));
  configs = {
    unet: parseUNetConfig(cfg('unet'), 'unet/config.json'),
    vae: parseVaeConfig(cfg('vae'), 'vae/config.json'),
    textEncoder: parseClipTextConfig(cfg('text_encoder'), 'text_encoder/config.json'),
  };
  folder = {
    unet: loadWeights([path.join(TINY_SD_A, 'unet', 'diffusion_pytorch_model.safetensors')], unetParamShapes(configs.unet), 'unet'),
    vae: loadWeights([path.join(TINY_SD_A, 'vae', 'diffusion_pytorch_model.safetensors')], vaeParamShapes(configs.vae), 'vae'),
    textEncoder: loadWeights([path.join(TINY_SD_A, 'text_encoder', 'model.safetensors')], clipTextParamShapes(configs.textEncoder), 'text_encoder', { ignore: CLIP_TEXT_IGNORED_KEYS }),
  };
});

describe('single-file checkpoints', () => {
  it('the reference single file loads bit-identical to the diffusers folder', () => {
    expect(detectArch(SINGLE)).toBe('sd1');
    const single = loadSingleFile(SINGLE, configs);
    expectSameParams(folder.unet, single.unet, 'unet');
    expectSameParams(folder.vae, single.vae, 'vae');
    expectSameParams(folder.textEncoder, single.textEncoder, 'text_encoder');
  });

  it('writing the folder as a single file reproduces the reference file tensor for tensor', async () => {
    const out = path.join(tmp, 'sd1.safetensors');
    await writeSingleFile(out, folder, configs, 'sd1');
    const ours = loadSafetensors(out).tensors;
    const theirs = loadSafetensors(SINGLE).tensors;
    expect([...ours.keys()].sort()).toEqual([...theirs.keys()].sort());
    for (const [k, t] of theirs) {
      const o = ours.get(k)!;
      expect(o.shape, k).toEqual(t.shape);
      expect(Buffer.from(o.data.buffer).equals(Buffer.from(t.data.buffer)), k).toBe(true);
    }
  });

  it('an SD 2.x (OpenCLIP) single file round-trips, fused q/k/v split back', async () => {
    const out = path.join(tmp, 'sd2.safetensors');
    await writeSingleFile(out, folder, configs, 'sd2');
    expect(detectArch(out)).toBe('sd2');
    const keys = [...loadSafetensors(out).tensors.keys()];
    expect(keys).toContain('cond_stage_model.model.transformer.resblocks.0.attn.in_proj_weight');
    expect(keys.some((k) => k.includes('q_proj'))).toBe(false);
    const back = loadSingleFile(out, configs, 'sd2');
    expectSameParams(folder.textEncoder, back.textEncoder, 'text_encoder');
    expectSameParams(folder.unet, back.unet, 'unet');
  });

  it('says when --arch contradicts the checkpoint, and names unexpected keys', async () => {
    expect(() => loadSingleFile(SINGLE, configs, 'sd2')).toThrow(/use --arch sd1/);
    const wrong = { ...configs, unet: { ...configs.unet, layers_per_block: 1 } };
    expect(() => loadSingleFile(SINGLE, wrong)).toThrow(/"model\.diffusion_model\.[^"]+" of unet|unexpected weight\(s\) for unet, e\.g\. "model\.diffusion_model\./);
  });

  it('leaves no tensors behind when loading fails', () => {
    const before = tf.memory().numTensors;
    const wrong = { ...configs, vae: { ...configs.vae, latent_channels: 8 } };
    expect(() => loadSingleFile(SINGLE, wrong)).toThrow(/vae/);
    expect(tf.memory().numTensors).toBe(before);
  });
});
