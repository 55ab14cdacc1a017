/**
 * `painter merge`: AUTOMATIC1111's Checkpoint Merger formulas checked tensor by tensor (weighted
 * sum, add difference, an inpainting A), LoRAs baked into a model generating what the same LoRA
 * applied on load generates, merge.json / A1111 recipe metadata, and the refusals.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generate } from '../src/app/generate.js';
import { merge, type MergeRecord } from '../src/app/merge.js';
import { parseInfotext } from '../src/core/infotext.js';
import { readPngText } from '../src/io/png-text.js';
import { openModelSources } from '../src/io/model-sources.js';
import { loadSafetensors, writeSafetensors, type TensorToWrite } from '../src/io/safetensors.js';
import { FIXTURES, runCli, TINY_SD_A, useBackend } from './helpers.js';

const INPAINT = path.join(FIXTURES, 'tiny-sd-a-inpaint');
const MINI = path.join(FIXTURES, 'painter-mini');
const LORA = path.join(FIXTURES, 'interop', 'tiny-sd-a', 'lora', 'diffusers', 'pytorch_lora_weights.safetensors');
const LORA_KOHYA = path.join(FIXTURES, 'interop', 'tiny-sd-a', 'lora', 'kohya', 'lora_kohya.safetensors');
const WEIGHTS = { unet: 'unet/diffusion_pytorch_model.safetensors', vae: 'vae/diffusion_pytorch_model.safetensors', text_encoder: 'text_encoder/model.safetensors' } as const;

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'painter-merge-'));
const at = (name: string) => path.join(tmp, name);
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

/** A copy of `from` whose floating-point weights are `f(x, i)` of the original's. */
async function perturbed(from: string, name: string, f: (x: number, i: number) => number): Promise<string> {
  const dir = at(name);
  fs.cpSync(from, dir, { recursive: true });
  for (const rel of Object.values(WEIGHTS)) {
    const file = path.join(dir, rel);
    const out = new Map<string, TensorToWrite>();
    for (const [k, t] of loadSafetensors(file).tensors) {
      const data = t.data instanceof Float32Array ? Float32Array.from(t.data, f) : t.data;
      out.set(k, { dtype: t.dtype, shape: t.shape, data: () => data as Float32Array });
    }
    fs.rmSync(file);
    await writeSafetensors(file, out, { format: 'pt' });
  }
  return dir;
}

/** Every weight of a model, diffusers-named, PyTorch layout. */
function weightsOf(model: string): Map<string, { shape: number[]; data: Float32Array }> {
  const m = openModelSources(model);
  try {
    const out = new Map<string, { shape: number[]; data: Float32Array }>();
    for (const component of ['unet', 'vae', 'text_encoder'] as const) {
      for (const [k, e] of m.parts[component].entries) out.set(`${component}/${k}`, { shape: e.shape, data: Float32Array.from(m.parts[component].read(k).data as Float32Array) });
    }
    return out;
  } finally {
    m.close();
  }
}

const f32 = Math.fround;
let B = '';
let C = '';

beforeAll(async () => {
  await useBackend('wasm');
  B = await perturbed(TINY_SD_A, 'b', (x, i) => x * 1.25 + ((i % 7) - 3) * 0.01);
  C = await perturbed(TINY_SD_A, 'c', (x, i) => x * 0.75 - ((i % 5) - 2) * 0.02);
});

describe('checkpoint merges (A1111 Checkpoint Merger)', () => {
  it('weighted sum = A·(1 − M) + B·M for every tensor, as float32 arithmetic computes it; merge.json and A1111 recipe metadata record the inputs', async () => {
    const out = at('ws.safetensors');
    const r = await merge({ models: [TINY_SD_A, B], out, multiplier: 0.3 });
    expect([r.method, r.multiplier, r.models.map((m) => m.role)]).toEqual(['weighted-sum', 0.3, ['A', 'B']]);
    const a = weightsOf(TINY_SD_A);
    const b = weightsOf(B);
    const m = weightsOf(out);
    expect([...m.keys()].sort()).toEqual([...a.keys()].sort());
    let maxRel = 0;
    for (const [k, t] of m) {
      const x = a.get(k)!.data;
      const y = b.get(k)!.data;
      for (let i = 0; i < t.data.length; i++) {
        const expected = f32(f32(f32(0.7) * x[i]!) + f32(f32(0.3) * y[i]!));
        if (t.data[i] !== expected) throw new Error(`${k}[${i}]: ${t.data[i]} ≠ ${expected}`);
        // and within float32 rounding of the exact formula
        const exact = 0.7 * x[i]! + 0.3 * y[i]!;
        maxRel = Math.max(maxRel, Math.abs(t.data[i]! - exact) / (0.7 * Math.abs(x[i]!) + 0.3 * Math.abs(y[i]!) + 1e-30));
      }
    }
    expect(maxRel).toBeLessThan(3e-7);
    const record = JSON.parse(fs.readFileSync(at('ws.merge.json'), 'utf8')) as MergeRecord;
    expect(record.models.map((x) => [x.role, x.path])).toEqual([['A', TINY_SD_A], ['B', B]]);
    expect(record.models[0]!.sha256).toMatch(/^[0-9a-f]{64}$/);
    expect(record.output.hash).toBe(r.output.hash);
    const meta = loadSafetensors(out).metadata;
    const recipe = JSON.parse(meta['sd_merge_recipe']!) as Record<string, unknown>;
    expect([recipe['interp_method'], recipe['multiplier'], recipe['primary_model_hash'], recipe['secondary_model_hash'], recipe['tertiary_model_hash']]).toEqual([
      'Weighted sum',
      0.3,
      record.models[0]!.sha256,
      record.models[1]!.sha256,
      null,
    ]);
    expect(Object.keys(JSON.parse(meta['sd_merge_models']!) as object).sort()).toEqual([record.models[0]!.sha256, record.models[1]!.sha256].sort());
  }, 120_000);

  it('add difference = A + (B − C)·M into a folder (merge.json inside); M = 0 and B = C give A back bit for bit', async () => {
    const out = at('ad');
    const r = await merge({ models: [TINY_SD_A, B, C], out, multiplier: 0.5 });
    expect(r.method).toBe('add-difference');
    const [a, b, c, m] = [TINY_SD_A, B, C, out].map(weightsOf);
    for (const [k, t] of m!) {
      const x = a!.get(k)!.data;
      const y = b!.get(k)!.data;
      const z = c!.get(k)!.data;
      for (let i = 0; i < t.data.length; i++) {
        const expected = f32(x[i]! + f32(f32(0.5) * f32(y[i]! - z[i]!)));
        if (t.data[i] !== expected) throw new Error(`${k}[${i}]: ${t.data[i]} ≠ ${expected}`);
      }
    }
    expect((JSON.parse(fs.readFileSync(path.join(out, 'merge.json'), 'utf8')) as MergeRecord).output.hash).toBe(r.output.hash);
    for (const [models, multiplier, name] of [[[TINY_SD_A, B], 0, 'zero'], [[TINY_SD_A, B, B], 0.8, 'same']] as const) {
      await merge({ models: [...models], out: at(`${name}.safetensors`), multiplier });
      const back = weightsOf(at(`${name}.safetensors`));
      for (const [k, t] of weightsOf(TINY_SD_A)) expect(Buffer.from(back.get(k)!.data.buffer).equals(Buffer.from(t.data.buffer)), k).toBe(true);
    }
  }, 180_000);

  it('an inpainting A merges only its first 4 UNet input channels with an ordinary B; an ordinary A with an inpainting B is refused', async () => {
    const out = at('inpaint.safetensors');
    const r = await merge({ models: [INPAINT, TINY_SD_A], out, multiplier: 0.4 });
    expect(r.inpainting).toBe(true);
    const a = weightsOf(INPAINT).get('unet/conv_in.weight')!;
    const b = weightsOf(TINY_SD_A).get('unet/conv_in.weight')!;
    const m = weightsOf(out).get('unet/conv_in.weight')!;
    const [o, ca, kh, kw] = a.shape as [number, number, number, number];
    expect([ca, b.shape[1]]).toEqual([9, 4]);
    for (let oi = 0; oi < o; oi++) {
      for (let ci = 0; ci < ca; ci++) {
        for (let p = 0; p < kh * kw; p++) {
          const i = (oi * ca + ci) * kh * kw + p;
          const expected = ci < 4 ? f32(f32(f32(0.6) * a.data[i]!) + f32(f32(0.4) * b.data[(oi * 4 + ci) * kh * kw + p]!)) : a.data[i]!;
          expect(m.data[i]).toBe(expected);
        }
      }
    }
    await expect(merge({ models: [TINY_SD_A, INPAINT], out: at('wrong.safetensors') })).rejects.toThrow(/unet weight "conv_in\.weight" has 9 input channels.*inpainting model must be A/);
    expect(fs.existsSync(at('wrong.safetensors'))).toBe(false);
  }, 120_000);

  it('models of different architectures are refused before anything is written, naming the weight', async () => {
    await expect(merge({ models: [TINY_SD_A, MINI], out: at('mixed') })).rejects.toThrow(/^B \(.*painter-mini\): unet weight ".*" (has shape|has no).*different architectures/);
    expect(fs.existsSync(at('mixed'))).toBe(false);
  });
});

describe('LoRAs baked into a model', () => {
  const png = async (file: string) => (await sharp(file).raw().toBuffer()) as Buffer;

  it('a LoRA baked at scale s generates what applying it on load at scale s generates; the infotext carries the hash merge.json records', async () => {
    const out = at('baked');
    const r = await merge({ models: [TINY_SD_A], lora: [`${LORA}:0.7`, `${LORA_KOHYA}:0.5`], out });
    expect(r.method).toBe('lora');
    expect(r.changed.unet).toBeGreaterThan(0);
    const settings = { prompt: 'a photo of a cat', steps: 4, seed: 11, backend: 'wasm' as const };
    const baked = await generate({ ...settings, model: out, out: at('gen-baked') });
    const onLoad = await generate({ ...settings, model: TINY_SD_A, lora: [`${LORA}:0.7`, `${LORA_KOHYA}:0.5`], out: at('gen-on-load') });
    const base = await generate({ ...settings, model: TINY_SD_A, out: at('gen-base') });
    const [x, y, z] = await Promise.all([baked, onLoad, base].map((g) => png(g.files[0]!.file)));
    let maxDiff = 0;
    for (let i = 0; i < x!.length; i++) maxDiff = Math.max(maxDiff, Math.abs(x![i]! - y![i]!));
    expect(maxDiff).toBeLessThanOrEqual(1);
    // The LoRA does change the picture: the comparison is not between two base images.
    expect(x!.equals(z!)).toBe(false);
    const infotext = parseInfotext(readPngText(fs.readFileSync(baked.files[0]!.file))['parameters']!);
    expect(infotext.modelHash).toBe(r.output.hash);
    expect(r.loras.map((l) => l.scale)).toEqual([0.7, 0.5]);
  }, 300_000);

  it('a LoRA for another architecture is refused naming its file and key; nothing is written', async () => {
    await expect(merge({ models: [MINI], lora: [LORA], out: at('bad-lora') })).rejects.toThrow(/pytorch_lora_weights\.safetensors: LoRA key ".*"/);
    expect(fs.existsSync(at('bad-lora'))).toBe(false);
  });
});

describe('painter merge on the command line', () => {
  it('writes OUT, prints its path and the hash; usage errors exit 2 with one line', async () => {
    const out = at('cli.safetensors');
    const ok = await runCli(['merge', TINY_SD_A, B, '--out', out, '--multiplier', '0.5']);
    expect(ok.code, ok.stderr).toBe(0);
    expect(ok.stdout.trim()).toBe(out);
    expect(ok.stderr).toMatch(/A·\(1 − M\) \+ B·M with M = 0\.5/);
    expect(ok.stderr).toMatch(/Model hash [0-9a-f]{10}/);
    const again = await runCli(['merge', TINY_SD_A, B, '--out', out]);
    expect([again.code, again.stderr.trim()]).toEqual([1, `painter: ${out}: already exists; choose another output or pass --overwrite`]);
    for (const [args, pattern] of [
      [['merge', TINY_SD_A, '--out', at('x')], /nothing to merge/],
      [['merge', TINY_SD_A, B], /--out is required/],
      [['merge', TINY_SD_A, B, C, '--method', 'weighted-sum', '--out', at('x')], /weighted-sum merges two models/],
      [['merge', TINY_SD_A, B, '--out', at('x.ckpt')], /not torch pickles/],
    ] as const) {
      const r = await runCli([...args]);
      expect([r.code, r.stderr.trim().split('\n').length], r.stderr).toEqual([2, 1]);
      expect(r.stderr).toMatch(pattern);
    }
  }, 180_000);
});
