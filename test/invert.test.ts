/**
 * Textual Inversion and the training engine: the TI gradient equals diffusers', the loss falls,
 * memory is flat, only the new rows change, interrupted runs resume to the same bits, and bad
 * input is reported clearly.
 */
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { disposeModel, type StableDiffusion } from '../src/core/model.js';
import { clipTextForward } from '../src/core/models/clip-text.js';
import { promptIds } from '../src/core/pipeline/text-to-image.js';
import { Rng } from '../src/core/random.js';
import { noiseSchedule } from '../src/core/schedulers/index.js';
import { addTokens } from '../src/core/tokenizer/clip-tokenizer.js';
import { diffusionLoss } from '../src/core/training/loss.js';
import { InterruptedError } from '../src/errors.js';
import { readSourceImage } from '../src/io/dataset.js';
import { readEmbeddingFile } from '../src/io/embeddings.js';
import { loadModel } from '../src/io/load-model.js';
import { loadSafetensors } from '../src/io/safetensors.js';
import { train, type EngineConfig, type TrainingTask } from '../src/train/engine.js';
import { createInversion } from '../src/train/textual-inversion.js';
import { FIXTURES, loadReference, nchwToNhwc, ref, relError, ROOT, TINY_INVERT_SETTINGS, TINY_SD_A, useBackend } from './helpers.js';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'painter-invert-'));
const PHOTOS = path.join(FIXTURES, 'photos', 'cat');
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

beforeAll(async () => {
  await useBackend();
});

const ENGINE: EngineConfig = {
  steps: 4,
  gradAccum: 1,
  lr: 5e-3,
  lrSchedule: 'constant',
  warmupSteps: 0,
  weightDecay: 0.01,
  maxGradNorm: 1,
  checkpointEvery: 100,
  validationEvery: 0,
  seed: 11,
};

async function photos(resolution: number) {
  const files = fs.readdirSync(PHOTOS).sort().slice(0, 3);
  return Promise.all(files.map((f) => readSourceImage(path.join(PHOTOS, f), resolution)));
}

function snapshot(model: StableDiffusion): Map<string, Float32Array> {
  const out = new Map<string, Float32Array>();
  for (const part of ['unet', 'vae', 'textEncoder'] as const) for (const [k, t] of model[part].params) out.set(`${part}/${k}`, Float32Array.from(t.dataSync()));
  return out;
}

describe('Textual Inversion gradient', () => {
  it('a new token row initialised from "cat" gets exactly diffusers\' gradient of the cat row (1e-4)', () => {
    const model = loadModel(TINY_SD_A);
    const r = loadReference('training.safetensors');
    const [id] = addTokens(model.tokenizer, ['<probe>']);
    const table = model.textEncoder.params.get('text_model.embeddings.token_embedding.weight')!;
    const rows = tf.variable(table.slice([535, 0], [1, -1]), true, 'probe_rows');
    const extraTokens = { offset: id!, rows };
    // Same prompts with "cat" replaced by the new token: the text encoder sees identical vectors.
    const ids = promptIds(model, ['a photo of a <probe>', 'a painting of a <probe> in the forest']);
    const timesteps = Array.from(ref(r, 'timesteps').dataSync());
    const { value, grads } = tf.variableGrads(() => {
      const ehs = clipTextForward(model.textEncoder.params, model.textEncoder.config, ids, { extraTokens }).lastHiddenState;
      return diffusionLoss(model.unet, noiseSchedule(model.scheduler), { latents: nchwToNhwc(ref(r, 'latents')), noise: nchwToNhwc(ref(r, 'noise')), timesteps, encoderHiddenStates: ehs }, { predictionType: 'epsilon' });
    }, [rows]);
    expect(Math.abs(value.dataSync()[0]! - ref(r, 'loss').dataSync()[0]!) / ref(r, 'loss').dataSync()[0]!).toBeLessThan(1e-4);
    expect(relError(grads[rows.name]!.reshape([-1]), ref(r, 'grad_token_embedding_row'))).toBeLessThan(1e-4);
    tf.dispose([rows, ids, value, ...Object.values(grads), ...r.values()]);
    disposeModel(model);
  });
});

describe('painter invert (engine)', () => {
  it('the loss falls over 50 steps at a fixed timestep and noise; tensors stay flat from step 2; only the new row changes', async () => {
    const model = loadModel(TINY_SD_A);
    const before = snapshot(model);
    const setup = createInversion(model, (await photos(32)).slice(0, 1), { ...TINY_INVERT_SETTINGS, flip: false });
    const initial = Float32Array.from(setup.rows.dataSync());
    // Replays the same draws every step: same image, template, timestep and noise.
    const fixed: TrainingTask = { ...setup.task, prepareBatch: () => setup.task.prepareBatch(new Rng(5)) };
    const counts: number[] = [];
    const result = await train(fixed, { ...ENGINE, steps: 50, lr: 2e-2, weightDecay: 0 }, path.join(tmp, 'falls'), {}, { onStep: () => counts.push(tf.memory().numTensors) });
    const first = result.losses.slice(0, 5).reduce((a, b) => a + b) / 5;
    const last = result.losses.slice(-5).reduce((a, b) => a + b) / 5;
    expect(last).toBeLessThan(first * 0.985);
    expect(result.losses.at(-1)!).toBeLessThan(Math.min(...result.losses.slice(0, 10)));
    expect(new Set(counts.slice(1)).size).toBe(1);
    const after = snapshot(model);
    for (const [k, v] of before) expect(Buffer.from(after.get(k)!.buffer).equals(Buffer.from(v.buffer)), k).toBe(true);
    expect(Array.from(setup.rows.dataSync())).not.toEqual(Array.from(initial));
    // The result is a diffusers learned_embeds file: one tensor named by the token.
    const { tensors, metadata } = loadSafetensors(result.output);
    expect([...tensors.keys()]).toEqual(['<kitty>']);
    expect(tensors.get('<kitty>')!.shape).toEqual([1, 32]);
    expect(Array.from(tensors.get('<kitty>')!.data as Float32Array)).toEqual(Array.from(setup.rows.dataSync()));
    expect(metadata).toMatchObject({ format: 'pt', 'painter.steps': '50', 'painter.init_token': 'cat' });
    const back = readEmbeddingFile(result.output);
    expect(back.token).toBe('<kitty>');
    expect(back.shape).toEqual([1, 32]);
    setup.dispose();
    disposeModel(model);
  });

  it('trains on "template, caption" prompts when an image has a caption file', async () => {
    const image = (await photos(32)).slice(0, 1);
    const lossOf = (images: typeof image) => {
      const model = loadModel(TINY_SD_A);
      const setup = createInversion(model, images, { ...TINY_INVERT_SETTINGS, flip: false });
      try {
        return tf.tidy(() => (setup.task.prepareBatch(new Rng(5))() as tf.Scalar).dataSync()[0]!);
      } finally {
        setup.dispose();
        disposeModel(model);
      }
    };
    const plain = lossOf(image);
    expect(lossOf(image)).toBe(plain);
    // Same image, template, timestep and noise: only the prompt's ", blue background" differs.
    expect(lossOf([{ ...image[0]!, caption: 'blue background' }])).not.toBe(plain);
  });

  it('2 steps + interrupt + resume + 2 steps equals 4 uninterrupted steps, bit for bit', async () => {
    const run = async (dir: string, stopAfter?: number, resume?: string) => {
      const model = loadModel(TINY_SD_A);
      const setup = createInversion(model, await photos(32), { ...TINY_INVERT_SETTINGS, vectors: 2 });
      let steps = 0;
      try {
        const r = await train(setup.task, { ...ENGINE, checkpointEvery: 3 }, dir, { test: true }, { onStep: () => steps++, shouldStop: () => stopAfter !== undefined && steps >= stopAfter }, resume);
        return { rows: Float32Array.from(setup.rows.dataSync()), losses: r.losses };
      } finally {
        setup.dispose();
        disposeModel(model);
      }
    };
    const straight = await run(path.join(tmp, 'straight'));
    await expect(run(path.join(tmp, 'resumed'), 2)).rejects.toBeInstanceOf(InterruptedError);
    const checkpoint = path.join(tmp, 'resumed', 'checkpoints', 'step-000002');
    expect(fs.existsSync(path.join(checkpoint, 'state.json'))).toBe(true);
    const resumed = await run(path.join(tmp, 'resumed'), undefined, checkpoint);
    expect(Buffer.from(resumed.rows.buffer).equals(Buffer.from(straight.rows.buffer))).toBe(true);
    expect(resumed.losses).toEqual(straight.losses);
  });
});

function painter(args: string[]) {
  const r = spawnSync(process.execPath, [path.join(ROOT, 'bin', 'painter'), ...args], { encoding: 'utf8', env: { ...process.env, PAINTER_BACKEND: 'wasm' }, timeout: 120_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

describe('painter invert (command line)', () => {
  it('bad input: one clear line naming the file or flag, exit 1 (2 for usage), no output', () => {
    const bad = path.join(tmp, 'bad-folder');
    fs.mkdirSync(bad);
    fs.copyFileSync(path.join(FIXTURES, 'photos', 'truncated.jpg'), path.join(bad, 'broken.jpg'));
    fs.copyFileSync(path.join(PHOTOS, 'chelsea-1.jpg'), path.join(bad, 'good.jpg'));
    fs.writeFileSync(path.join(bad, 'sketch.psd'), 'not an image');
    const empty = path.join(tmp, 'empty');
    fs.mkdirSync(empty);
    const base = ['--model', TINY_SD_A, '--steps', '1', '--validation-every', '0'];
    const cases: [string[], RegExp, number][] = [
      [[PHOTOS, '--token', '!', ...base], /--token "!" already exists in the model's vocabulary/, 1],
      [[PHOTOS, '--token', '<x>', '--init-token', 'a dog', ...base], /--init-token "a dog" is 2 tokens/, 1],
      [[bad, '--token', '<x>', ...base], /broken\.jpg: cannot read this image .*--skip-bad-images/, 1],
      [[empty, '--token', '<x>', ...base], /empty: no usable image found/, 1],
      [[path.join(tmp, 'missing'), '--token', '<x>', ...base], /missing: folder not found/, 1],
      [[PHOTOS, ...base], /--token is required/, 2],
      [[PHOTOS, '--token', '<x>', '--resume', 'latest', '--out', path.join(tmp, 'none'), ...base], /--resume latest: no checkpoint/, 1],
      [[PHOTOS, '--token', '<x>', '--resolution', '33', ...base], /--resolution 33: size 33x33 is not a multiple/, 1],
    ];
    for (const [args, message, exitCode] of cases) {
      const out = path.join(tmp, 'bad-out');
      const r = painter(['invert', ...args, ...(args.includes('--out') ? [] : ['--out', out])]);
      expect(r.code, args.join(' ')).toBe(exitCode);
      expect(r.stderr, args.join(' ')).toMatch(message);
      expect(r.stderr).not.toMatch(/\n\s+at /);
      expect(fs.existsSync(path.join(out, 'x.safetensors'))).toBe(false);
    }
    const skipped = painter(['invert', bad, '--token', '<x>', '--skip-bad-images', '--resolution', '32', '--out', path.join(tmp, 'skip'), ...base]);
    expect(skipped.code, skipped.stderr).toBe(0);
    expect(skipped.stderr).toMatch(/warning: skipping .*broken\.jpg/);
    expect(skipped.stderr).toMatch(/warning: skipping .*sketch\.psd: not an image/);
    expect(fs.existsSync(path.join(tmp, 'skip', 'x.safetensors'))).toBe(true);
  });

  it('Ctrl-C saves a checkpoint and exits 130; --resume latest finishes the run', async () => {
    const out = path.join(tmp, 'sigint');
    const args = [path.join(ROOT, 'bin', 'painter'), 'invert', PHOTOS, '--token', '<cat-toy>', '--model', TINY_SD_A, '--steps', '400', '--resolution', '32', '--validation-every', '0', '--out', out];
    const child = spawn(process.execPath, args, { env: { ...process.env, PAINTER_BACKEND: 'wasm' } });
    let stderr = '';
    child.stderr.on('data', (d) => (stderr += String(d)));
    const log = path.join(out, 'train.log');
    await new Promise<void>((resolve) => {
      const t = setInterval(() => {
        if (fs.existsSync(log) && fs.readFileSync(log, 'utf8').split('\n').length > 2) {
          clearInterval(t);
          resolve();
        }
      }, 100);
    });
    child.kill('SIGINT');
    const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
    expect(code, stderr).toBe(130);
    expect(stderr).toMatch(/interrupted at step \d+\/400; checkpoint saved/);
    const saved = fs.readdirSync(path.join(out, 'checkpoints'));
    expect(saved).toHaveLength(1);
    const step = Number(saved[0]!.slice(5));
    const r = painter(['invert', PHOTOS, '--resume', 'latest', '--out', out, '--steps', String(step + 2), '--json']);
    expect(r.code, r.stderr).toBe(0);
    const done = JSON.parse(r.stdout) as { steps: number; output: string; installed: string };
    expect(done.steps).toBe(step + 2);
    expect(done.output).toBe(path.join(out, 'cat-toy.safetensors'));
    // Also installed, byte for byte, in the embeddings folder generate reads (vitest's $PAINTER_EMBEDDINGS).
    expect(done.installed).toBe(path.join(process.env['PAINTER_EMBEDDINGS']!, 'cat-toy.safetensors'));
    expect(fs.readFileSync(done.installed).equals(fs.readFileSync(done.output))).toBe(true);
  });
});
