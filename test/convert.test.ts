/**
 * `painter convert`: models between a diffusers folder and a single file (and from .ckpt),
 * float32 ⇄ float16, embeddings between diffusers and A1111/kohya, LoRA between diffusers and
 * kohya naming. Round trips give back every tensor bit for bit where the formats allow; OUT is
 * written atomically and an existing OUT is refused without --overwrite.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { convert } from '../src/app/convert.js';
import { floatToHalf, halfToFloat } from '../src/io/float16.js';
import { readConfigs } from '../src/io/pipeline-configs.js';
import { loadSafetensors, type HostTensor } from '../src/io/safetensors.js';
import { singleFileSetup } from '../src/io/single-file-setup.js';
import { FIXTURES, ROOT, runCli, TINY_SD_A, useBackend } from './helpers.js';

const SINGLE = path.join(FIXTURES, 'tiny-sd-a-single-file', 'tiny-sd-a.safetensors');
const CKPT = path.join(ROOT, '..', 'shared', 'reference', 'single-file', 'tiny-sd-a.ckpt');
const INTEROP = path.join(FIXTURES, 'interop', 'tiny-sd-a');
const LORA_DIFFUSERS = path.join(INTEROP, 'lora', 'diffusers', 'pytorch_lora_weights.safetensors');
const LORA_KOHYA = path.join(INTEROP, 'lora', 'kohya', 'lora_kohya.safetensors');
const TI = path.join(INTEROP, 'textual_inversion');
const WEIGHTS = ['unet/diffusion_pytorch_model.safetensors', 'vae/diffusion_pytorch_model.safetensors', 'text_encoder/model.safetensors'];

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'painter-convert-'));
const at = (name: string) => path.join(tmp, name);
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));
beforeAll(() => useBackend());

const bytes = (t: HostTensor) => Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength);

/** Same keys, dtypes, shapes and values, bit for bit. */
function expectSameTensors(file: string, reference: string): void {
  const a = loadSafetensors(file).tensors;
  const b = loadSafetensors(reference).tensors;
  expect([...a.keys()].sort(), file).toEqual([...b.keys()].sort());
  for (const [k, t] of b) {
    const u = a.get(k)!;
    expect([u.dtype, u.shape], k).toEqual([t.dtype, t.shape]);
    expect(bytes(u).equals(bytes(t)), `${file}: ${k}`).toBe(true);
  }
}

describe('models', () => {
  it('folder → single file → folder gives back every tensor, config and tokenizer file bit for bit', async () => {
    const single = at('tiny.safetensors');
    const r = await convert({ input: TINY_SD_A, output: single });
    expect([r.kind, r.from, r.tensors, r.dtypes]).toEqual(['model', 'diffusers folder', 512, { F32: 512 }]);
    // The same tensors diffusers' own conversion script wrote into the reference single file.
    expectSameTensors(single, SINGLE);
    const back = at('tiny-back');
    await convert({ input: single, output: back });
    for (const w of WEIGHTS) expectSameTensors(path.join(back, w), path.join(TINY_SD_A, w));
    expect(readConfigs(back)).toEqual(readConfigs(TINY_SD_A));
    expect(JSON.parse(fs.readFileSync(path.join(back, 'tokenizer', 'vocab.json'), 'utf8'))).toEqual(JSON.parse(fs.readFileSync(path.join(TINY_SD_A, 'tokenizer', 'vocab.json'), 'utf8')));
    expect(fs.readdirSync(tmp).filter((f) => /partial|\.tmp$/.test(f))).toEqual([]);
  });

  it('the SD 2.x layout (OpenCLIP text encoder, fused q/k/v) round-trips too, and is told as SD 2.x', async () => {
    const single = at('tiny-sd2.safetensors');
    await convert({ input: TINY_SD_A, output: single, arch: 'sd2' });
    const keys = [...loadSafetensors(single).tensors.keys()];
    expect(keys).toContain('cond_stage_model.model.transformer.resblocks.0.attn.in_proj_weight');
    expect(singleFileSetup(single).family).toBe('sd2-v');
    const back = at('tiny-sd2-back');
    await convert({ input: single, output: back });
    for (const w of WEIGHTS) expectSameTensors(path.join(back, w), path.join(TINY_SD_A, w));
  });

  it('--half stores float16: about half the size, each value the float16 rounding of the original; float16 stays float16', async () => {
    const full = at('tiny.safetensors');
    if (!fs.existsSync(full)) await convert({ input: TINY_SD_A, output: full });
    const half = at('tiny-fp16.safetensors');
    const r = await convert({ input: TINY_SD_A, output: half, half: true });
    expect(r.dtypes).toEqual({ F16: 512 });
    const ratio = fs.statSync(half).size / fs.statSync(full).size;
    console.log(`fp16 single file: ${fs.statSync(half).size} bytes, ${(ratio * 100).toFixed(1)}% of float32 (${fs.statSync(full).size})`);
    expect(ratio).toBeGreaterThan(0.49);
    expect(ratio).toBeLessThan(0.52);
    const a = loadSafetensors(half).tensors;
    for (const [k, t] of loadSafetensors(full).tensors) {
      const h = a.get(k)!;
      expect(h.dtype, k).toBe('F16');
      const want = Float32Array.from(t.data as Float32Array, (v) => halfToFloat(floatToHalf(v)));
      expect(Buffer.from((h.data as Float32Array).buffer).equals(Buffer.from(want.buffer)), k).toBe(true);
    }
    // Without --half a float16 input keeps its dtype, bit for bit.
    const folder = at('tiny-fp16-folder');
    await convert({ input: half, output: folder });
    const text = loadSafetensors(path.join(folder, 'text_encoder', 'model.safetensors')).tensors;
    expect([...text.values()].every((t) => t.dtype === 'F16')).toBe(true);
    expect(JSON.parse(fs.readFileSync(path.join(folder, 'text_encoder', 'config.json'), 'utf8')).torch_dtype).toBe('float16');
    const again = at('tiny-fp16-again.safetensors');
    await convert({ input: folder, output: again });
    expectSameTensors(again, half);
  });

  it('.ckpt → .safetensors (configs from --config) holds the tensors of the reference single file', async () => {
    const out = at('from-ckpt.safetensors');
    const r = await convert({ input: CKPT, output: out, config: TINY_SD_A });
    expect(r.leftOut).toEqual([]);
    expectSameTensors(out, SINGLE);
  });

  it('--prediction-type is written into the output scheduler config', async () => {
    const out = at('tiny-v');
    await convert({ input: TINY_SD_A, output: out, predictionType: 'v_prediction' });
    expect(readConfigs(out).scheduler.prediction_type).toBe('v_prediction');
  });
});

describe('LoRA and embeddings', () => {
  it('LoRA: diffusers → kohya → diffusers is the file diffusers wrote, tensor for tensor', async () => {
    const kohya = at('lora-kohya.safetensors');
    const r = await convert({ input: LORA_DIFFUSERS, output: kohya, format: 'kohya' });
    expect([r.from, r.to]).toEqual(['diffusers LoRA', 'kohya LoRA']);
    const k = loadSafetensors(kohya);
    expect([...k.tensors.keys()].every((key) => key.startsWith('lora_unet_') || key.startsWith('lora_te_'))).toBe(true);
    const back = at('lora-back.safetensors');
    await convert({ input: kohya, output: back, format: 'diffusers' });
    expectSameTensors(back, LORA_DIFFUSERS);
  });

  it('LoRA: kohya (alpha 2, rank 4) → diffusers folds alpha/rank into up, and back keeps the effect', async () => {
    const diffusers = at('kohya-as-diffusers.safetensors');
    await convert({ input: LORA_KOHYA, output: diffusers, format: 'diffusers' });
    const a = loadSafetensors(LORA_KOHYA).tensors;
    const d = loadSafetensors(diffusers).tensors;
    const up = a.get('lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_q.lora_up.weight')!;
    const upD = d.get('unet.down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q.lora.up.weight')!;
    expect(Array.from(upD.data)).toEqual(Array.from(up.data, (v) => Number(v) * 0.5));
    const back = at('kohya-back.safetensors');
    await convert({ input: diffusers, output: back, format: 'kohya' });
    expect(loadSafetensors(back).tensors.size).toBe(a.size);
  });

  it('embeddings: diffusers → A1111/kohya (emb_params) → diffusers keeps token and vectors bit for bit; A1111 .pt → diffusers', async () => {
    const src = path.join(TI, 'diffusers', 'kitty-2v', 'learned_embeds.safetensors');
    const a1111 = at('kitty-2v.safetensors');
    const r = await convert({ input: src, output: a1111, format: 'a1111' });
    expect([r.from, r.to]).toEqual(['diffusers embedding', 'A1111/kohya embedding (emb_params)']);
    expect([...loadSafetensors(a1111).tensors.keys()]).toEqual(['emb_params']);
    const back = at('kitty-2v-back.safetensors');
    await convert({ input: a1111, output: back, format: 'diffusers' });
    expect([...loadSafetensors(back).tensors.keys()]).toEqual(['<kitty-2v>']);
    expect(bytes(loadSafetensors(back).tensors.get('<kitty-2v>')!).equals(bytes(loadSafetensors(src).tensors.get('<kitty-2v>')!))).toBe(true);
    const kohya = at('kitty-kohya.safetensors');
    await convert({ input: src, output: kohya, format: 'kohya' });
    expect(bytes(loadSafetensors(kohya).tensors.get('emb_params')!).equals(bytes(loadSafetensors(path.join(TI, 'kohya', 'kitty-2v.safetensors')).tensors.get('emb_params')!))).toBe(true);
    const fromPt = at('kitty-from-pt.safetensors');
    await convert({ input: path.join(TI, 'a1111', 'kitty.pt'), output: fromPt, format: 'diffusers', token: '<kitty>' });
    expectSameTensors(fromPt, path.join(TI, 'diffusers', 'kitty', 'learned_embeds.safetensors'));
  });
});

describe('on the command line', () => {
  it('writes OUT and prints its path; an existing OUT is refused without --overwrite', async () => {
    const out = at('cli.safetensors');
    const ok = await runCli(['convert', TINY_SD_A, out]);
    expect(ok.code, ok.stderr).toBe(0);
    expect(ok.stdout.trim()).toBe(out);
    expect(ok.stderr).toMatch(/diffusers folder → single file .*512 tensors \(512 F32\)/);
    const again = await runCli(['convert', TINY_SD_A, out]);
    expect(again.code).toBe(1);
    expect(again.stderr).toMatch(/cli\.safetensors: already exists; .*--overwrite/);
    const json = await runCli(['convert', TINY_SD_A, out, '--overwrite', '--half', '--json']);
    expect(json.code, json.stderr).toBe(0);
    expect(JSON.parse(json.stdout)).toMatchObject({ output: out, kind: 'model', dtypes: { F16: 512 } });
  });

  it('usage errors exit 2: --format on a model, an embedding without --format, a .ckpt OUT', async () => {
    const model = await runCli(['convert', TINY_SD_A, at('x.safetensors'), '--format', 'kohya']);
    expect([model.code, model.stderr]).toEqual([2, expect.stringMatching(/--format applies to embeddings and LoRA/)]);
    const emb = await runCli(['convert', path.join(TI, 'kohya', 'kitty.safetensors'), at('k.safetensors')]);
    expect([emb.code, emb.stderr]).toEqual([2, expect.stringMatching(/--format diffusers, a1111 or kohya/)]);
    const ckpt = await runCli(['convert', TINY_SD_A, at('x.ckpt')]);
    expect(ckpt.code).toBe(2);
  });

  it('a failed conversion leaves no OUT behind and names the file and --config', async () => {
    const out = at('never');
    const r = await runCli(['convert', SINGLE, out]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/tiny-sd-a\.safetensors: .*pass --config DIR/);
    expect(fs.existsSync(out)).toBe(false);
    expect(fs.readdirSync(tmp).filter((f) => f.startsWith('never'))).toEqual([]);
  });
});
