/** Loading diffusers folders: fp16 weight variants (computed in float32) and clear errors. */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { disposeModel } from '../src/core/model.js';
import { floatToHalf, halfToFloat } from '../src/io/float16.js';
import { loadModel } from '../src/io/load-model.js';
import { loadSafetensors, writeSafetensors, type TensorToWrite } from '../src/io/safetensors.js';
import { TINY_SD_A, useBackend } from './helpers.js';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'painter-load-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));
beforeAll(async () => {
  await useBackend();
});

describe('loadModel', () => {
  it('reads *.fp16.safetensors variants, computing in float32', async () => {
    const dir = path.join(tmp, 'fp16');
    fs.cpSync(TINY_SD_A, dir, { recursive: true });
    const file = path.join(dir, 'unet', 'diffusion_pytorch_model.safetensors');
    const { tensors } = loadSafetensors(file);
    const half = new Map<string, TensorToWrite>();
    for (const [k, t] of tensors) half.set(k, { dtype: 'F16', shape: t.shape, data: t.data as Float32Array });
    await writeSafetensors(path.join(dir, 'unet', 'diffusion_pytorch_model.fp16.safetensors'), half, { format: 'pt' });
    fs.rmSync(file);
    const model = loadModel(dir);
    const w = model.unet.params.get('conv_in.weight')!;
    expect(w.dtype).toBe('float32');
    // HWIO in painter; the first element is the same in both layouts.
    const orig = (tensors.get('conv_in.weight')!.data as Float32Array)[0]!;
    expect(w.dataSync()[0]).toBe(halfToFloat(floatToHalf(orig)));
    disposeModel(model);
  });

  it('names what is missing or wrong', () => {
    const dir = path.join(tmp, 'broken');
    fs.cpSync(TINY_SD_A, dir, { recursive: true });
    fs.rmSync(path.join(dir, 'vae'), { recursive: true });
    expect(() => loadModel(dir)).toThrow(/component folder "vae\/" missing/);
    expect(() => loadModel(path.join(tmp, 'nowhere'))).toThrow(/--model .*nowhere: not found/);
    expect(() => loadModel(path.join(TINY_SD_A, 'unet', 'diffusion_pytorch_model.safetensors'))).toThrow(/pass --config DIR/);
    const cfg = path.join(tmp, 'badcfg');
    fs.cpSync(TINY_SD_A, cfg, { recursive: true });
    const unetCfg = path.join(cfg, 'unet', 'config.json');
    fs.writeFileSync(unetCfg, fs.readFileSync(unetCfg, 'utf8').replace('"cross_attention_dim": 32', '"cross_attention_dim": 16'));
    expect(() => loadModel(cfg)).toThrow(/attn2\.to_k\.weight.*does not match the config/);
  });
});
