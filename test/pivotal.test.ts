/**
 * Pivotal tuning (dreambooth --ti-token): a new token's embedding trains with the LoRA for the
 * first fraction of the steps, then stays; the run folder holds the LoRA and the embedding alone
 * (diffusers), or a kohya LoRA with the embedding bundled as A1111 reads it plus an A1111 TI file;
 * generate --lora brings the embedding along; resume is bit-exact across the switch.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { applyConcepts } from '../src/app/concepts.js';
import { disposeModel } from '../src/core/model.js';
import { tokenId } from '../src/core/tokenizer/clip-tokenizer.js';
import { InterruptedError } from '../src/errors.js';
import { readSourceImage, type SourceImage } from '../src/io/dataset.js';
import { readEmbeddingFile } from '../src/io/embeddings.js';
import { readLoraFile } from '../src/io/lora-files.js';
import { loadModel } from '../src/io/load-model.js';
import { loadSafetensors } from '../src/io/safetensors.js';
import { createDreamBooth, type DreamBoothSettings } from '../src/train/dreambooth.js';
import { train, type EngineConfig } from '../src/train/engine.js';
import { PIVOTAL_VAR } from '../src/train/pivotal.js';
import { FIXTURES, ROOT, TINY_DREAMBOOTH_SETTINGS, TINY_SD_A, useBackend } from './helpers.js';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'painter-pivotal-'));
const PHOTOS = path.join(FIXTURES, 'photos', 'cat');
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));
beforeAll(() => useBackend());

const ENGINE: EngineConfig = { steps: 4, gradAccum: 1, lr: 1e-3, lrSchedule: 'constant', warmupSteps: 0, weightDecay: 0.01, maxGradNorm: 1, checkpointEvery: 100, validationEvery: 0, seed: 11 };
const TOKEN = '<pv>';
const settings = (format: 'diffusers' | 'kohya'): DreamBoothSettings => ({
  ...TINY_DREAMBOOTH_SETTINGS,
  identifier: TOKEN,
  instancePrompt: `a photo of ${TOKEN} cat`,
  format,
  pivotal: { token: TOKEN, vectors: 1, initToken: 'cat', steps: 2, lrScale: 5 },
});

async function catImages(n = 2): Promise<SourceImage[]> {
  const files = fs.readdirSync(PHOTOS).filter((f) => f.endsWith('.jpg')).sort().slice(0, n);
  return Promise.all(files.map((f) => readSourceImage(path.join(PHOTOS, f), 32)));
}

/** A pivotal run; the embedding and one LoRA up-matrix after each step. */
async function run(dir: string, format: 'diffusers' | 'kohya', opts: { stopAfter?: number; resume?: string } = {}) {
  const model = loadModel(TINY_SD_A);
  const setup = createDreamBooth(model, await catImages(), [], settings(format));
  const upKey = [...setup.task.vars.keys()].find((k) => k.endsWith('.up'))!;
  const trace: { rows: number[]; up: number[] }[] = [];
  let steps = 0;
  try {
    const onStep = () => {
      steps++;
      trace.push({ rows: Array.from(setup.task.vars.get(PIVOTAL_VAR)!.dataSync()), up: Array.from(setup.task.vars.get(upKey)!.dataSync()) });
    };
    const r = await train(setup.task, ENGINE, dir, { test: true }, { onStep, shouldStop: () => opts.stopAfter !== undefined && steps >= opts.stopAfter }, opts.resume);
    return { r, trace };
  } finally {
    setup.dispose();
    disposeModel(model);
  }
}

describe('pivotal tuning', () => {
  it('trains the embedding in the first steps only, the LoRA throughout; writes the LoRA and the embedding alone; generate --lora brings the embedding', async () => {
    const dir = path.join(tmp, 'diffusers');
    const { r, trace } = await run(dir, 'diffusers');
    expect(trace[1]!.rows).not.toEqual(trace[0]!.rows);
    expect(trace[2]!.rows).toEqual(trace[1]!.rows);
    expect(trace[3]!.rows).toEqual(trace[1]!.rows);
    expect(trace[3]!.up).not.toEqual(trace[2]!.up);
    expect(fs.readdirSync(dir).filter((f) => f.endsWith('.safetensors')).sort()).toEqual(['dreambooth-lora.safetensors', 'pv.safetensors']);
    const emb = readEmbeddingFile(path.join(dir, 'pv.safetensors'));
    expect([emb.token, emb.format]).toEqual([TOKEN, 'painter']);
    // diffusers' learned_embeds layout: one tensor named by its token (load_textual_inversion(FILE, token=…)).
    expect([...loadSafetensors(path.join(dir, 'pv.safetensors')).tensors.keys()]).toEqual([TOKEN]);
    expect(Array.from(emb.vectors)).toEqual(trace[3]!.rows.map(Math.fround));
    const lora = readLoraFile(r.output);
    expect(lora.format).toBe('diffusers');
    expect(lora.metadata['painter.ti_token']).toBe(TOKEN);
    // generate --lora FILE: the embedding beside the LoRA comes with it.
    const base = loadModel(TINY_SD_A);
    try {
      const concepts = applyConcepts(base, { embeddings: [], loras: [r.output] });
      const id = tokenId(concepts.model.tokenizer, TOKEN);
      expect(id).toBeDefined();
      expect(Object.keys(concepts.tiHashes)).toEqual(['pv']);
      concepts.dispose();
    } finally {
      disposeModel(base);
    }
  }, 300_000);

  it('--format kohya bundles the embedding as A1111 reads it (bundle_emb.TOKEN.string_to_param.*) beside an A1111 TI file', async () => {
    const dir = path.join(tmp, 'kohya');
    const { r, trace } = await run(dir, 'kohya');
    const { tensors } = loadSafetensors(r.output);
    const bundled = tensors.get(`bundle_emb.${TOKEN}.string_to_param.*`)!;
    expect(bundled.shape).toEqual([1, trace[3]!.rows.length]);
    expect([...tensors.keys()].filter((k) => !k.startsWith('bundle_emb.')).every((k) => k.startsWith('lora_unet_'))).toBe(true);
    const lora = readLoraFile(r.output);
    expect(lora.embeddings!.map((e) => [e.token, Array.from(e.vectors)])).toEqual([[TOKEN, Array.from(bundled.data as Float32Array)]]);
    expect(readEmbeddingFile(path.join(dir, 'pv.safetensors')).format).toBe('a1111-safetensors');
    // The bundle alone (no file beside) is enough for generate.
    const alone = path.join(tmp, 'alone.safetensors');
    fs.copyFileSync(r.output, alone);
    const base = loadModel(TINY_SD_A);
    try {
      const concepts = applyConcepts(base, { embeddings: [], loras: [alone] });
      expect(tokenId(concepts.model.tokenizer, TOKEN)).toBeDefined();
      concepts.dispose();
    } finally {
      disposeModel(base);
    }
  }, 300_000);

  it('resumes to the same bits across the end of the embedding\'s steps', async () => {
    const straight = await run(path.join(tmp, 'straight'), 'diffusers');
    await expect(run(path.join(tmp, 'resumed'), 'diffusers', { stopAfter: 3 })).rejects.toBeInstanceOf(InterruptedError);
    const resumed = await run(path.join(tmp, 'resumed'), 'diffusers', { resume: path.join(tmp, 'resumed', 'checkpoints', 'step-000003') });
    expect(resumed.trace.at(-1)).toEqual(straight.trace.at(-1));
    expect(resumed.r.losses).toEqual(straight.r.losses);
  }, 300_000);

  it('the command line installs the embedding and refuses --ti-token without LoRA', () => {
    const embeddings = path.join(tmp, 'embeddings');
    const painter = (args: string[]) =>
      spawnSync(process.execPath, [path.join(ROOT, 'bin', 'painter'), 'dreambooth', PHOTOS, '--class', 'cat', '--model', TINY_SD_A, '--resolution', '32', '--validation-every', '0', '--no-prior-preservation', ...args], {
        encoding: 'utf8',
        env: { ...process.env, PAINTER_BACKEND: 'wasm', PAINTER_EMBEDDINGS: embeddings },
        timeout: 120_000,
      });
    const ok = painter(['--ti-token', '<cli>', '--steps', '2', '--out', path.join(tmp, 'cli-run')]);
    expect(ok.status, ok.stderr).toBe(0);
    expect(fs.existsSync(path.join(embeddings, 'cli.safetensors'))).toBe(true);
    expect(ok.stderr).toMatch(/pivotal tuning: <cli> in .*cli\.safetensors, installed as/);
    const full = painter(['--ti-token', '<cli2>', '--mode', 'full', '--out', path.join(tmp, 'cli-full')]);
    expect([full.status, full.stderr.trim()]).toEqual([2, 'painter: --ti-token learns an embedding with LoRA adapters (pivotal tuning); use --mode lora']);
  }, 300_000);
});
