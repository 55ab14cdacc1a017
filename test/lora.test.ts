/**
 * LoRA interop with diffusers on tiny-sd-a (fixtures/interop/tiny-sd-a): diffusers- and
 * kohya-named files read to the same adapters, merged as W + s·(α/r)·up@down they reproduce
 * the lora_diffusers / lora_kohya / scale 0.5 / fuse / unfuse generations, files written in
 * either naming match the reference files, and bad files fail with errors naming file and key.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { applyLora, disposeLora, loraDelta, type LoraModel, type LoraWeights } from '../src/core/lora.js';
import { disposeModel, type StableDiffusion } from '../src/core/model.js';
import { PainterError } from '../src/errors.js';
import { kohyaToModule, moduleToKohya, readLoraFile, writeLoraFile } from '../src/io/lora-files.js';
import { loadModel } from '../src/io/load-model.js';
import { loadSafetensors, writeSafetensors, type HostTensor, type TensorToWrite } from '../src/io/safetensors.js';
import { TINY_SD_A, useBackend } from './helpers.js';
import { compareCase, disposeGeneration, generate, INTEROP, loadInteropReference, torchSave, type CaseErrors } from './interop-helpers.js';

const DIFFUSERS_FILE = path.join(INTEROP, 'lora', 'diffusers', 'pytorch_lora_weights.safetensors');
const KOHYA_FILE = path.join(INTEROP, 'lora', 'kohya', 'lora_kohya.safetensors');
const PROMPT = 'a photo of a cat';
const MODULES = (
  JSON.parse(fs.readFileSync(path.join(INTEROP, 'reference', 'interop.json'), 'utf8')) as {
    lora: { modules: { component: string; module: string; in: number; out: number }[] };
  }
).lora.modules;

let base: StableDiffusion;
let reference: Map<string, tf.Tensor>;
let diffusersLora: LoraWeights;
let kohyaLora: LoraWeights;
let tmp: string;
const measured: Record<string, CaseErrors> = {};

beforeAll(async () => {
  await useBackend();
  base = loadModel(TINY_SD_A);
  reference = loadInteropReference();
  diffusersLora = readLoraFile(DIFFUSERS_FILE);
  kohyaLora = readLoraFile(KOHYA_FILE);
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'painter-lora-'));
});
afterAll(() => {
  disposeModel(base);
  disposeLora(diffusersLora);
  disposeLora(kohyaLora);
  tf.dispose([...reference.values()]);
  fs.rmSync(tmp, { recursive: true, force: true });
  console.log('LoRA interop errors:', JSON.stringify(measured));
});

const maxAbs = (a: tf.Tensor, b: tf.Tensor) => tf.tidy(() => tf.max(tf.abs(tf.sub(a, b))).dataSync()[0]!);

function checkCase(name: string, e: CaseErrors): void {
  measured[name] = e;
  expect(e.idsEqual, name).toBe(true);
  expect(e.negativeIdsEqual, name).toBe(true);
  expect(e.promptEmbeds, name).toBeLessThan(1e-4);
  expect(e.negativeEmbeds, name).toBeLessThan(1e-4);
  if (e.latents !== undefined) expect(e.latents, name).toBeLessThan(1e-3);
  if (e.imagePixels !== undefined) expect(e.imagePixels, name).toBeLessThan(2);
}

describe('reading LoRA files', () => {
  it('reads the diffusers file: 48 UNet + 20 text-encoder adapters, no alpha, tfjs layout', () => {
    expect(diffusersLora.format).toBe('diffusers');
    expect(diffusersLora.metadata).toEqual({ format: 'pt' });
    const got = diffusersLora.adapters.map((a) => `${a.component}/${a.module}`).sort();
    expect(got).toEqual(MODULES.map((m) => `${m.component}/${m.module}`).sort());
    for (const m of MODULES) {
      const a = diffusersLora.adapters.find((x) => x.module === m.module)!;
      expect([a.down.shape, a.up.shape, a.alpha]).toEqual([[m.in, 4], [4, m.out], undefined]);
    }
  });

  it('reads the kohya file to the same adapters with alpha 2', () => {
    expect(kohyaLora.format).toBe('kohya');
    expect(kohyaLora.metadata).toEqual({ ss_network_module: 'networks.lora', ss_network_dim: '4', ss_network_alpha: '2.0' });
    expect(kohyaLora.adapters).toHaveLength(68);
    for (const k of kohyaLora.adapters) {
      const d = diffusersLora.adapters.find((x) => x.component === k.component && x.module === k.module)!;
      expect(k.alpha).toBe(2);
      expect(maxAbs(k.down, d.down)).toBe(0);
      expect(maxAbs(k.up, d.up)).toBe(0);
    }
  });

  it('maps kohya names to module paths for every Linear/Conv weight of the model', () => {
    let checked = 0;
    for (const [component, params] of [
      ['unet', base.unet.params],
      ['text_encoder', base.textEncoder.params],
    ] as const) {
      for (const [key, t] of params) {
        if (!key.endsWith('.weight') || (t.rank !== 2 && t.rank !== 4) || key.includes('embedding')) continue;
        const module = key.slice(0, -'.weight'.length);
        const name = moduleToKohya(component, module);
        expect(kohyaToModule(name.replace(/^lora_(unet|te)_/, '')), name).toBe(module);
        checked++;
      }
    }
    expect(checked).toBeGreaterThan(100);
  });

  it('reads peft (lora_A/lora_B) and the older attention-processor naming', async () => {
    const { tensors } = loadSafetensors(DIFFUSERS_FILE);
    const rename = async (name: string, fn: (k: string) => string) => {
      const out = new Map<string, TensorToWrite>();
      for (const [k, t] of tensors) out.set(fn(k), t as TensorToWrite);
      const f = path.join(tmp, name);
      await writeSafetensors(f, out);
      return readLoraFile(f);
    };
    const peft = await rename('peft.safetensors', (k) => k.replace(/\.(lora|lora_linear_layer)\.down\.weight$/, '.lora_A.weight').replace(/\.(lora|lora_linear_layer)\.up\.weight$/, '.lora_B.weight'));
    const old = await rename('old.safetensors', (k) =>
      k
        .replace(/\.(attn\d)\.(to_q|to_k|to_v)\.lora\.(down|up)/, '.$1.processor.$2_lora.$3')
        .replace(/\.(attn\d)\.to_out\.0\.lora\.(down|up)/, '.$1.processor.to_out_lora.$2')
        .replace(/\.(q|k|v)_proj\.lora_linear_layer\.(down|up)/, '.to_$1_lora.$2')
        .replace(/\.out_proj\.lora_linear_layer\.(down|up)/, '.to_out_lora.$1'),
    );
    expect(peft.format).toBe('peft');
    for (const l of [peft, old]) {
      expect(l.adapters.map((a) => `${a.component}/${a.module}`).sort()).toEqual(diffusersLora.adapters.map((a) => `${a.component}/${a.module}`).sort());
      for (const a of l.adapters) {
        const d = diffusersLora.adapters.find((x) => x.component === a.component && x.module === a.module)!;
        expect(maxAbs(a.up, d.up)).toBe(0);
      }
      disposeLora(l);
    }
  });
  it('reads a torch.save state dict (.bin) like its safetensors twin', () => {
    const { tensors } = loadSafetensors(DIFFUSERS_FILE);
    const dict = Object.fromEntries([...tensors].map(([k, t]) => [k, { shape: t.shape, data: t.data as Float32Array }]));
    const bin = path.join(tmp, 'pytorch_lora_weights.bin');
    fs.writeFileSync(bin, torchSave('archive', dict, true));
    const l = readLoraFile(bin);
    expect(l.format).toBe('diffusers');
    expect(l.adapters).toHaveLength(68);
    for (const a of l.adapters) {
      const d = diffusersLora.adapters.find((x) => x.component === a.component && x.module === a.module)!;
      expect(maxAbs(a.down, d.down) + maxAbs(a.up, d.up)).toBe(0);
    }
    disposeLora(l);
  });
});

describe('applying LoRA as diffusers (merged weights)', () => {
  it('merges W + scale·(alpha/rank)·up@down into a copy and frees it on dispose', () => {
    const before = tf.memory().numTensors;
    const merged = applyLora(base, kohyaLora, 1);
    expect(merged.merged).toEqual({ unet: 48, text_encoder: 20 });
    expect(tf.memory().numTensors).toBe(before + 68);
    const a = kohyaLora.adapters.find((x) => x.module.endsWith('mid_block.attentions.0.transformer_blocks.0.attn2.to_k'))!;
    const key = `${a.module}.weight`;
    // Host check in PyTorch terms: W_torch + 0.5 · up_torch @ down_torch, compared in tfjs layout.
    const [inF, outF] = base.unet.params.get(key)!.shape as [number, number];
    const w = base.unet.params.get(key)!.dataSync();
    const down = a.down.dataSync();
    const up = a.up.dataSync();
    const got = merged.model.unet.params.get(key)!.dataSync();
    let worst = 0;
    for (let i = 0; i < inF; i++) {
      for (let o = 0; o < outF; o++) {
        let s = 0;
        for (let r = 0; r < 4; r++) s += up[r * outF + o]! * down[i * 4 + r]!;
        worst = Math.max(worst, Math.abs(got[i * outF + o]! - (w[i * outF + o]! + 0.5 * s)));
      }
    }
    expect(worst).toBeLessThan(1e-6);
    expect(merged.model.unet.params.get('conv_in.weight')).toBe(base.unet.params.get('conv_in.weight'));
    expect(base.unet.params.get(key)!.dataSync()).toEqual(w);
    merged.dispose();
    expect(tf.memory().numTensors).toBe(before);
  });

  it('merges only the chosen components', () => {
    const unetOnly = applyLora(base, diffusersLora, 1, { components: ['unet'] });
    expect(unetOnly.merged).toEqual({ unet: 48, text_encoder: 0 });
    for (const [k, t] of base.textEncoder.params) expect(unetOnly.model.textEncoder.params.get(k)).toBe(t);
    unetOnly.dispose();
  });

  it('scale 0.5 on the diffusers file equals the kohya file (alpha 2 / rank 4) weight for weight', () => {
    const half = applyLora(base, diffusersLora, 0.5);
    const kohya = applyLora(base, kohyaLora, 1);
    for (const a of diffusersLora.adapters) {
      const key = `${a.module}.weight`;
      const p = a.component === 'unet' ? 'unet' : 'textEncoder';
      expect(maxAbs(half.model[p].params.get(key)!, kohya.model[p].params.get(key)!)).toBe(0);
    }
    const g = generate(half.model, PROMPT, reference, false);
    checkCase('lora_diffusers_scale05(embeds)', compareCase(g, reference, 'lora_diffusers_scale05'));
    disposeGeneration(g);
    half.dispose();
    kohya.dispose();
  });

  let fused: LoraModel;
  it('reproduces lora_diffusers (= lora_fused_unet = lora_unfused_unet_adapter_still_active)', () => {
    fused = applyLora(base, diffusersLora, 1);
    const g = generate(fused.model, PROMPT, reference);
    for (const name of ['lora_diffusers', 'lora_fused_unet', 'lora_unfused_unet_adapter_still_active']) checkCase(name, compareCase(g, reference, name));
    disposeGeneration(g);
  });

  it('reproduces lora_kohya (= lora_diffusers_scale05)', () => {
    const kohya = applyLora(base, kohyaLora, 1);
    const g = generate(kohya.model, PROMPT, reference);
    for (const name of ['lora_kohya', 'lora_diffusers_scale05']) checkCase(name, compareCase(g, reference, name));
    disposeGeneration(g);
    kohya.dispose();
  });

  it('unfuses with scale −1 back to the base weights and reproduces lora_unfused_then_unloaded', () => {
    const unfused = applyLora(fused.model, diffusersLora, -1);
    let worst = 0;
    for (const [k, t] of base.unet.params) worst = Math.max(worst, maxAbs(unfused.model.unet.params.get(k)!, t));
    for (const [k, t] of base.textEncoder.params) worst = Math.max(worst, maxAbs(unfused.model.textEncoder.params.get(k)!, t));
    expect(worst).toBeLessThan(1e-6);
    const g = generate(unfused.model, PROMPT, reference);
    checkCase('lora_unfused_then_unloaded', compareCase(g, reference, 'lora_unfused_then_unloaded'));
    disposeGeneration(g);
    unfused.dispose();
    fused.dispose();
  });

  it('loraDelta is differentiable in down and up (for LoRA training)', () => {
    const down = tf.variable(tf.randomNormal([6, 2], 0, 1, 'float32', 1));
    const up = tf.variable(tf.randomNormal([2, 5], 0, 1, 'float32', 2));
    const { value, grads } = tf.variableGrads(() => tf.sum(tf.square(loraDelta(down, up, 0.5))) as tf.Scalar, [down, up]);
    // d/dup Σ (s·DU)² = 2s²·Dᵀ(DU)
    const expected = tf.tidy(() => tf.mul(2 * 0.25, tf.matMul(down, tf.matMul(down, up), true, false)));
    expect(maxAbs(grads[up.name]!, expected)).toBeLessThan(1e-5);
    const conv = loraDelta(tf.ones([3, 3, 4, 2]), tf.ones([1, 1, 2, 8]), 1);
    expect(conv.shape).toEqual([3, 3, 4, 8]);
    expect(conv.dataSync()[0]).toBe(2);
    tf.dispose([down, up, value, expected, conv, ...Object.values(grads)]);
  });
});

describe('writing LoRA files', () => {
  const sameTensors = (a: Map<string, HostTensor>, b: Map<string, HostTensor>, scaleUp = 1) => {
    expect([...a.keys()].sort()).toEqual([...b.keys()].sort());
    for (const [k, t] of a) {
      const expected = b.get(k)!;
      const factor = k.includes('up.weight') ? scaleUp : 1;
      expect(t.shape, k).toEqual(expected.shape);
      expect(Array.from(t.data as Float32Array), k).toEqual(Array.from(expected.data as Float32Array, (v) => v * factor));
    }
  };

  it('round-trips each reference file in its own naming byte for byte', async () => {
    for (const [lora, src, format] of [
      [diffusersLora, DIFFUSERS_FILE, 'diffusers'],
      [kohyaLora, KOHYA_FILE, 'kohya'],
    ] as const) {
      const out = path.join(tmp, `same-${format}.safetensors`);
      await writeLoraFile(out, lora.adapters, { format });
      expect(fs.readFileSync(out).equals(fs.readFileSync(src)), format).toBe(true);
    }
  });

  it('converts diffusers → kohya naming (alpha = rank keeps the effect)', async () => {
    const out = path.join(tmp, 'to-kohya.safetensors');
    await writeLoraFile(out, diffusersLora.adapters, { format: 'kohya' });
    const mine = loadSafetensors(out);
    const theirs = loadSafetensors(KOHYA_FILE);
    expect(mine.metadata).toEqual({ ss_network_module: 'networks.lora', ss_network_dim: '4', ss_network_alpha: '4.0' });
    const weights = (m: Map<string, HostTensor>) => new Map([...m].filter(([k]) => !k.endsWith('.alpha')));
    sameTensors(weights(mine.tensors), weights(theirs.tensors));
    for (const [k, t] of mine.tensors) if (k.endsWith('.alpha')) expect([t.shape, t.data[0]]).toEqual([[], 4]);
    expect([...mine.tensors.keys()].sort()).toEqual([...theirs.tensors.keys()].sort());
  });

  it('converts kohya → diffusers naming (alpha/rank folded into up)', async () => {
    const out = path.join(tmp, 'to-diffusers.safetensors');
    await writeLoraFile(out, kohyaLora.adapters, { format: 'diffusers' });
    const mine = loadSafetensors(out);
    expect(mine.metadata).toEqual({ format: 'pt' });
    sameTensors(mine.tensors, loadSafetensors(DIFFUSERS_FILE).tensors, 0.5);
    // Re-read and merged, it equals the kohya file's merge.
    const back = readLoraFile(out);
    const a = applyLora(base, back, 1);
    const b = applyLora(base, kohyaLora, 1);
    for (const ad of back.adapters.filter((x) => x.component === 'unet')) {
      expect(maxAbs(a.model.unet.params.get(`${ad.module}.weight`)!, b.model.unet.params.get(`${ad.module}.weight`)!)).toBeLessThan(1e-7);
    }
    a.dispose();
    b.dispose();
    disposeLora(back);
  });

  it('stores another alpha in kohya files by rescaling up', async () => {
    const out = path.join(tmp, 'alpha1.safetensors');
    await writeLoraFile(out, kohyaLora.adapters, { format: 'kohya', alpha: 1 });
    const back = readLoraFile(out);
    expect(back.metadata['ss_network_alpha']).toBe('1.0');
    const a = applyLora(base, back, 1);
    const b = applyLora(base, kohyaLora, 1);
    const key = `${back.adapters[0]!.module}.weight`;
    const p = back.adapters[0]!.component === 'unet' ? 'unet' : 'textEncoder';
    expect(maxAbs(a.model[p].params.get(key)!, b.model[p].params.get(key)!)).toBeLessThan(1e-6);
    a.dispose();
    b.dispose();
    disposeLora(back);
  });
});

describe('errors name the file and key', () => {
  const rejects = async (name: string, tensors: Record<string, TensorToWrite>, ...parts: (string | RegExp)[]) => {
    const f = path.join(tmp, name);
    await writeSafetensors(f, tensors);
    let error: unknown;
    try {
      const l = readLoraFile(f);
      try {
        applyLora(base, l, 1).dispose();
      } finally {
        disposeLora(l);
      }
    } catch (e) {
      error = e;
    }
    expect(error, name).toBeInstanceOf(PainterError);
    for (const p of [name, ...parts]) expect((error as Error).message).toMatch(p);
  };
  const m = (shape: number[]): TensorToWrite => ({ shape, data: new Float32Array(shape.reduce((a, b) => a * b, 1)) });
  const attn = 'down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q';

  it('unknown keys, missing modules, wrong shapes, unpaired matrices, unsupported variants', async () => {
    await rejects('unknown.safetensors', { 'unet.foo.weird.weight': m([4, 4]) }, 'unet.foo.weird.weight');
    await rejects(
      'missing.safetensors',
      { 'unet.down_blocks.9.attentions.0.proj_in.lora.down.weight': m([4, 64]), 'unet.down_blocks.9.attentions.0.proj_in.lora.up.weight': m([64, 4]) },
      'unet.down_blocks.9.attentions.0.proj_in.lora.down.weight',
      /does not have/,
    );
    await rejects('shape.safetensors', { [`unet.${attn}.lora.down.weight`]: m([4, 48]), [`unet.${attn}.lora.up.weight`]: m([64, 4]) }, `unet.${attn}.lora.down.weight`, /\[64, 64\]/);
    await rejects('unpaired.safetensors', { [`${moduleToKohya('unet', attn)}.lora_down.weight`]: m([4, 64]) }, /no matching up/);
    await rejects('loha.safetensors', { [`${moduleToKohya('unet', attn)}.hada_w1_a`]: m([64, 4]) }, /LoHa/);
    await rejects('sdxl.safetensors', { 'lora_te2_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight': m([4, 32]) }, /SDXL/);
  });

  it('truncated files', () => {
    const cut = path.join(tmp, 'cut.safetensors');
    const bytes = fs.readFileSync(KOHYA_FILE);
    fs.writeFileSync(cut, bytes.subarray(0, bytes.length / 2));
    expect(() => readLoraFile(cut)).toThrow(/cut\.safetensors/);
    expect(() => readLoraFile(path.join(tmp, 'absent.safetensors'))).toThrow(PainterError);
  });
});
