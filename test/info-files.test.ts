/**
 * `painter info FILE` on Textual Inversion embeddings and LoRA files of every layout the interop
 * fixtures hold (diffusers, AUTOMATIC1111 .pt, kohya), on a painter-written embedding, and on
 * files it cannot describe. Runs the built CLI (npm run build) as a user does.
 */
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { writeEmbeddingFile } from '../src/io/embeddings.js';
import { FIXTURES, ROOT } from './helpers.js';

const INTEROP = path.join(FIXTURES, 'interop', 'tiny-sd-a');
const TI = path.join(INTEROP, 'textual_inversion');
const FILES = {
  diffusersTi: path.join(TI, 'diffusers', 'kitty-2v', 'learned_embeds.safetensors'),
  a1111Ti: path.join(TI, 'a1111', 'kitty.pt'),
  kohyaTi: path.join(TI, 'kohya', 'kitty-2v.safetensors'),
  diffusersLora: path.join(INTEROP, 'lora', 'diffusers', 'pytorch_lora_weights.safetensors'),
  kohyaLora: path.join(INTEROP, 'lora', 'kohya', 'lora_kohya.safetensors'),
};

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

function painter(args: string[]): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [path.join(ROOT, 'bin', 'painter'), ...args], { env: { ...process.env, PAINTER_BACKEND: 'wasm' } });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

let tmp: string;
let painterTi: string;
let textFile: string;
// Every CLI run, started together in beforeAll: `${file}` is the text report, `${file} --json` the JSON.
const runs = new Map<string, Run>();

function text(file: string): string {
  const r = runs.get(file)!;
  expect(r.code, r.stderr).toBe(0);
  return r.stdout;
}

function json(file: string): Record<string, unknown> {
  const r = runs.get(`${file} --json`)!;
  expect(r.code, r.stderr).toBe(0);
  return JSON.parse(r.stdout) as Record<string, unknown>;
}

beforeAll(async () => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'painter-info-'));
  painterTi = path.join(tmp, 'learned_embeds.safetensors');
  await writeEmbeddingFile(painterTi, '<sks>', { data: new Float32Array(2 * 768).fill(0.01), shape: [2, 768] }, {
    metadata: { 'painter.base_model_hash': 'abc123', 'painter.steps': '500', 'painter.init_token': 'cat', 'painter.vectors': '2' },
  });
  textFile = path.join(tmp, 'notes.safetensors');
  fs.writeFileSync(textFile, 'just some text, not tensors\n');
  const files = [...Object.values(FILES), painterTi];
  const argLists = [...files.map((f) => [f]), ...files.map((f) => [f, '--json']), [path.join(ROOT, 'package.json')], [textFile], [path.join(tmp, 'missing.pt')]];
  const results = await Promise.all(argLists.map((a) => painter(['info', ...a])));
  argLists.forEach((a, i) => runs.set(a.join(' '), results[i]!));
}, 60_000);

afterAll(() => {
  fs.rmSync(tmp, { recursive: true, force: true });
});

describe('painter info on embeddings', () => {
  it('diffusers learned_embeds: the token named in the file, vectors and width', () => {
    const j = json(FILES.diffusersTi);
    expect(j).toMatchObject({ kind: 'embedding', format: 'diffusers', token: '<kitty-2v>', tokenFrom: 'file', vectors: 2, width: 32, metadata: { format: 'pt' } });
    expect(j['base']).toBeUndefined();
    const t = text(FILES.diffusersTi);
    expect(t).toMatch(/^embedding .*learned_embeds\.safetensors$/m);
    expect(t).toMatch(/format\s+diffusers/);
    expect(t).toMatch(/token\s+<kitty-2v> \(named in the file\)/);
    expect(t).toMatch(/vectors\s+2$/m);
    expect(t).toMatch(/width\s+32 \(not an SD 1\.x \(768\) or SD 2\.x \(1024\) embedding/);
  });

  it('AUTOMATIC1111 .pt: the file stem as token, and the fields the .pt stores', () => {
    const j = json(FILES.a1111Ti);
    expect(j).toMatchObject({ kind: 'embedding', format: 'a1111-pt', token: 'kitty', tokenFrom: 'file name', vectors: 1, width: 32 });
    expect(j['metadata']).toEqual({ name: 'kitty', step: '0' });
    expect(j['training']).toEqual({ steps: '0' });
    const t = text(FILES.a1111Ti);
    expect(t).toMatch(/format\s+AUTOMATIC1111 \.pt/);
    expect(t).toMatch(/token\s+kitty \(the file name, as AUTOMATIC1111 triggers it\)/);
    expect(t).toMatch(/vectors\s+1$/m);
    expect(t).toMatch(/name = kitty/);
  });

  it('kohya emb_params .safetensors: the file stem as token', () => {
    expect(json(FILES.kohyaTi)).toMatchObject({ kind: 'embedding', format: 'a1111-safetensors', token: 'kitty-2v', tokenFrom: 'file name', vectors: 2, width: 32, metadata: {} });
    const t = text(FILES.kohyaTi);
    expect(t).toMatch(/format\s+AUTOMATIC1111\/kohya \.safetensors \(emb_params\)/);
    expect(t).toMatch(/token\s+kitty-2v /);
    expect(t).not.toMatch(/metadata/);
  });

  it("painter's own file: SD 1.x width and the training metadata painter writes", () => {
    const j = json(painterTi);
    expect(j).toMatchObject({ format: 'painter', token: '<sks>', vectors: 2, width: 768, base: 'SD 1.x' });
    expect(j['training']).toEqual({ steps: '500', baseModelHash: 'abc123', initToken: 'cat' });
    expect(j['metadata']).toMatchObject({ 'painter.base_model_hash': 'abc123', 'painter.vectors': '2' });
    const t = text(painterTi);
    expect(t).toMatch(/width\s+768 \(SD 1\.x text encoder\)/);
    expect(t).toMatch(/trained\s+500 steps, base model hash abc123, from init token "cat"/);
    expect(t).toMatch(/painter\.base_model_hash = abc123/);
  });
});

describe('painter info on LoRA files', () => {
  const unetTargets = ['attn1.to_k', 'attn1.to_out.0', 'attn1.to_q', 'attn1.to_v', 'attn2.to_k', 'attn2.to_out.0', 'attn2.to_q', 'attn2.to_v'];
  const teTargets = ['self_attn.k_proj', 'self_attn.out_proj', 'self_attn.q_proj', 'self_attn.v_proj'];

  it('diffusers naming: rank 4, no alpha (scale 1), UNet and text-encoder modules', () => {
    const j = json(FILES.diffusersLora);
    expect(j).toMatchObject({ kind: 'lora', naming: 'diffusers', ranks: [4], alphas: [], scales: [1], modules: 68, metadata: { format: 'pt' } });
    expect(j['components']).toEqual([
      { component: 'unet', modules: 48, targets: unetTargets, ranks: [4], alphas: [] },
      { component: 'text_encoder', modules: 20, targets: teTargets, ranks: [4], alphas: [] },
    ]);
    const t = text(FILES.diffusersLora);
    expect(t).toMatch(/^lora .*pytorch_lora_weights\.safetensors$/m);
    expect(t).toMatch(/naming\s+diffusers/);
    expect(t).toMatch(/rank\s+4$/m);
    expect(t).toMatch(/alpha\s+none stored \(scale 1/);
    expect(t).toMatch(/unet\s+48 modules: attn1\.to_k .*attn2\.to_v$/m);
    expect(t).toMatch(/text_encoder\s+20 modules: self_attn\.k_proj/);
  });

  it('kohya naming: alpha per module and the ss_* metadata', () => {
    const j = json(FILES.kohyaLora);
    expect(j).toMatchObject({ kind: 'lora', naming: 'kohya', ranks: [4], alphas: [2], scales: [0.5], modules: 68 });
    expect(j['metadata']).toEqual({ ss_network_module: 'networks.lora', ss_network_dim: '4', ss_network_alpha: '2.0' });
    expect((j['components'] as { modules: number; targets: string[] }[]).map((c) => [c.modules, c.targets])).toEqual([
      [48, unetTargets],
      [20, teTargets],
    ]);
    const t = text(FILES.kohyaLora);
    expect(t).toMatch(/naming\s+kohya/);
    expect(t).toMatch(/alpha\s+2 \(scale alpha\/rank = 0\.5\)/);
    expect(t).toMatch(/ss_network_dim = 4/);
  });
});

describe('painter info on other files', () => {
  it.each([
    ['package.json', () => path.join(ROOT, 'package.json'), /not a safetensors, torch\.save or PNG file/],
    ['a text file named .safetensors', () => textFile, /not a safetensors, torch\.save or PNG file/],
    ['a missing file', () => path.join(tmp, 'missing.pt'), /: not found/],
  ])('%s: one line naming the file and what painter describes, exit 1', (_, file, why) => {
    const r = runs.get(file())!;
    expect(r.code).toBe(1);
    expect(r.stdout).toBe('');
    const lines = r.stderr.split('\n').filter(Boolean);
    expect(lines).toHaveLength(1);
    expect(lines[0]).toContain(file());
    expect(lines[0]).toMatch(why);
    expect(lines[0]).toMatch(/describes a diffusers model folder .*Textual Inversion embedding .*LoRA/);
    expect(r.stderr).not.toMatch(/\s+at /);
  });
});
