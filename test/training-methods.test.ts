/**
 * Training methods beyond the plain objective: an EMA of the trained weights (diffusers'
 * EMAModel update, checked step by step), saved beside the result and resumable bit for bit; a
 * validation loss on held-out images at fixed timesteps and noise, logged and resumable.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { disposeModel } from '../src/core/model.js';
import { InterruptedError } from '../src/errors.js';
import { readSourceImage, type SourceImage } from '../src/io/dataset.js';
import { readEmbeddingFile } from '../src/io/embeddings.js';
import { loadModel } from '../src/io/load-model.js';
import { emaDecay } from '../src/train/ema.js';
import { train, type EngineConfig } from '../src/train/engine.js';
import { applyLora, disposeLora } from '../src/core/lora.js';
import { readLoraFile } from '../src/io/lora-files.js';
import { loadSafetensors } from '../src/io/safetensors.js';
import { createDreamBooth, type DreamBoothSettings } from '../src/train/dreambooth.js';
import { loraTargetKeys } from '../src/train/lora-training.js';
import { createInversion } from '../src/train/textual-inversion.js';
import { FIXTURES, ROOT, TINY_DREAMBOOTH_SETTINGS, TINY_INVERT_SETTINGS, TINY_SD_A, useBackend } from './helpers.js';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'painter-methods-'));
const PHOTOS = path.join(FIXTURES, 'photos', 'cat');
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));
beforeAll(() => useBackend());

const ENGINE: EngineConfig = { steps: 5, gradAccum: 1, lr: 5e-2, lrSchedule: 'constant', warmupSteps: 0, weightDecay: 0.01, maxGradNorm: 1, checkpointEvery: 100, validationEvery: 0, seed: 11 };

async function catImages(n = 2): Promise<SourceImage[]> {
  const files = fs.readdirSync(PHOTOS).filter((f) => f.endsWith('.jpg')).sort().slice(0, n);
  return Promise.all(files.map((f) => readSourceImage(path.join(PHOTOS, f), 32)));
}

describe('EMA of the trained weights (diffusers EMAModel)', () => {
  it('decays as EMAModel.get_decay: 0 at the first step, then (1 + k)/(10 + k) up to the decay', () => {
    expect([1, 2, 3, 10, 1000].map((n) => emaDecay(0.9999, n))).toEqual([0, 2 / 11, 3 / 12, 10 / 19, 1000 / 1009]);
    expect(emaDecay(0.5, 100)).toBe(0.5);
  });

  it('follows θ̄ ← θ̄ − (1 − d)(θ̄ − θ) step by step in float32; the result and NAME-ema are written; a resumed run gives the same bits', async () => {
    const images = await catImages(2);
    const run = async (dir: string, opts: { stopAfter?: number; resume?: string; trace?: Float32Array[] } = {}) => {
      const model = loadModel(TINY_SD_A);
      const setup = createInversion(model, images, { ...TINY_INVERT_SETTINGS });
      opts.trace?.push(Float32Array.from(setup.rows.dataSync()));
      let steps = 0;
      try {
        const onStep = () => {
          steps++;
          opts.trace?.push(Float32Array.from(setup.rows.dataSync()));
        };
        return await train(setup.task, { ...ENGINE, emaDecay: 0.9 }, dir, { test: true }, { onStep, shouldStop: () => opts.stopAfter !== undefined && steps >= opts.stopAfter }, opts.resume);
      } finally {
        setup.dispose();
        disposeModel(model);
      }
    };
    const trace: Float32Array[] = [];
    const r = await run(path.join(tmp, 'ema'), { trace });
    expect(path.basename(r.emaOutput!)).toBe(path.basename(r.output).replace('.safetensors', '-ema.safetensors'));
    // EMAModel from the initial weights, one update per optimisation step.
    const f = Math.fround;
    const expected = Float32Array.from(trace[0]!);
    for (let n = 1; n < trace.length; n++) {
      const oneMinus = f(1 - emaDecay(0.9, n));
      for (let i = 0; i < expected.length; i++) expected[i] = f(expected[i]! - f(f(expected[i]! - trace[n]![i]!) * oneMinus));
    }
    const ema = readEmbeddingFile(r.emaOutput!).vectors as Float32Array;
    const raw = readEmbeddingFile(r.output).vectors as Float32Array;
    expect(Array.from(ema)).toEqual(Array.from(expected));
    expect(Array.from(raw)).toEqual(Array.from(trace.at(-1)!));
    expect(Array.from(ema)).not.toEqual(Array.from(raw));
    await expect(run(path.join(tmp, 'ema-resumed'), { stopAfter: 2 })).rejects.toBeInstanceOf(InterruptedError);
    const resumed = await run(path.join(tmp, 'ema-resumed'), { resume: path.join(tmp, 'ema-resumed', 'checkpoints', 'step-000002') });
    expect(Buffer.from((readEmbeddingFile(resumed.emaOutput!).vectors as Float32Array).buffer).equals(Buffer.from(ema.buffer))).toBe(true);
  }, 300_000);
});

describe('validation loss on held-out images', () => {
  const logOf = (dir: string) =>
    fs
      .readFileSync(path.join(dir, 'train.log'), 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { step: number; val_loss?: number });

  it('is logged every validation step and at the last, is the same after a resume, moves with the weights, and is drawn in loss.svg', async () => {
    const [a, b, c] = await catImages(3);
    const run = async (dir: string, opts: { stopAfter?: number; resume?: string } = {}) => {
      const model = loadModel(TINY_SD_A);
      const setup = createInversion(model, [a!, b!], { ...TINY_INVERT_SETTINGS }, [c!]);
      let steps = 0;
      try {
        return await train(setup.task, { ...ENGINE, validationEvery: 2 }, dir, { test: true }, { onStep: () => steps++, shouldStop: () => opts.stopAfter !== undefined && steps >= opts.stopAfter }, opts.resume);
      } finally {
        setup.dispose();
        disposeModel(model);
      }
    };
    const straight = await run(path.join(tmp, 'val'));
    const log = logOf(path.join(tmp, 'val'));
    expect(log.filter((l) => l.val_loss !== undefined).map((l) => l.step)).toEqual([2, 4, 5]);
    expect(straight.valLosses!.map((p) => p.step)).toEqual([2, 4, 5]);
    const [v2, v4] = straight.valLosses!.map((p) => p.loss);
    expect(v2).not.toBe(v4);
    expect(fs.readFileSync(path.join(tmp, 'val', 'loss.svg'), 'utf8')).toContain('validation loss');
    await expect(run(path.join(tmp, 'val-resumed'), { stopAfter: 3 })).rejects.toBeInstanceOf(InterruptedError);
    const resumed = await run(path.join(tmp, 'val-resumed'), { resume: path.join(tmp, 'val-resumed', 'checkpoints', 'step-000003') });
    expect(resumed.valLosses).toEqual(straight.valLosses);
    expect(logOf(path.join(tmp, 'val-resumed')).map((l) => l.val_loss)).toEqual(log.map((l) => l.val_loss));
  }, 300_000);

  it('DreamBooth measures it with the current LoRA weights, the same twice', async () => {
    const model = loadModel(TINY_SD_A);
    const [a, b] = await catImages(2);
    const base = { ...TINY_DREAMBOOTH_SETTINGS, releaseUnused: true };
    const setup = createDreamBooth(model, [a!], [], base, [b!]);
    try {
      const first = await setup.task.validationLoss!();
      expect(Number.isFinite(first)).toBe(true);
      expect(await setup.task.validationLoss!()).toBe(first);
    } finally {
      setup.dispose();
      disposeModel(model);
    }
  }, 120_000);

  it('--validation-split holds out images by the seed and says which; impossible splits are refused', () => {
    const painter = (args: string[]) => spawnSync(process.execPath, [path.join(ROOT, 'bin', 'painter'), 'invert', ...args], { encoding: 'utf8', env: { ...process.env, PAINTER_BACKEND: 'wasm' }, timeout: 120_000 });
    const three = path.join(tmp, 'three');
    fs.mkdirSync(three);
    for (const f of ['chelsea-1.jpg', 'chelsea-2.jpg', 'chelsea-3.jpg']) fs.copyFileSync(path.join(PHOTOS, f), path.join(three, f));
    const common = ['--token', '<v>', '--model', TINY_SD_A, '--resolution', '32', '--validation-every', '0'];
    const r = painter([three, ...common, '--steps', '2', '--validation-split', '0.3', '--out', path.join(tmp, 'split-run')]);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/validation loss on 1 held-out image\(s\): chelsea-\d\.jpg/);
    const config = JSON.parse(fs.readFileSync(path.join(tmp, 'split-run', 'config.json'), 'utf8')) as { images: string[]; heldOut: string[] };
    expect([config.images.length, config.heldOut.length]).toEqual([2, 1]);
    expect(fs.readFileSync(path.join(tmp, 'split-run', 'train.log'), 'utf8')).toContain('"val_loss"');
    const one = path.join(tmp, 'one');
    fs.mkdirSync(one);
    fs.copyFileSync(path.join(PHOTOS, 'chelsea-1.jpg'), path.join(one, 'a.jpg'));
    const bad = painter([one, ...common, '--validation-split', '0.5', '--out', path.join(tmp, 'bad-split')]);
    expect([bad.status, bad.stderr.trim()]).toEqual([1, 'painter: --validation-split 0.5: 1 image(s) leave none to train on; add images or give --validation-dir']);
    const both = painter([three, ...common, '--validation-split', '0.3', '--validation-dir', one, '--out', path.join(tmp, 'both')]);
    expect([both.status, both.stderr.trim().split('\n').at(-1)]).toEqual([2, expect.stringMatching(/--validation-split and --validation-dir both choose held-out images; give one/)]);
  }, 300_000);
});

describe('LoRA targets, LoCon and the text encoder\'s own learning rate', () => {
  const DB: DreamBoothSettings = { ...TINY_DREAMBOOTH_SETTINGS, format: 'kohya' };

  it('adapts diffusers\' attention set, kohya\'s transformer set, and with a conv rank kohya\'s LoCon modules at their ranks', () => {
    const model = loadModel(TINY_SD_A);
    try {
      const unet = model.unet.params;
      const attention = loraTargetKeys(unet, 'unet', { rank: 2, alpha: 2 });
      expect(attention.every((k) => /attn[12]\.(to_q|to_k|to_v|to_out\.0)\.weight$/.test(k))).toBe(true);
      const transformer = loraTargetKeys(unet, 'unet', { rank: 2, alpha: 2, targets: 'transformer' });
      expect(transformer.filter((k) => !attention.includes(k)).map((k) => k.replace(/^.*?(ff\.net\.\d(\.proj)?|proj_in|proj_out)\.weight$/, '$1')).sort()).toEqual(
        expect.arrayContaining(['ff.net.0.proj', 'ff.net.2', 'proj_in', 'proj_out']),
      );
      expect(loraTargetKeys(model.textEncoder.params, 'text_encoder', { rank: 2, alpha: 2, targets: 'transformer' }).some((k) => k.endsWith('mlp.fc1.weight'))).toBe(true);
      const locon = loraTargetKeys(unet, 'unet', { rank: 2, alpha: 2, convRank: 3 }).filter((k) => !attention.includes(k));
      expect(locon.some((k) => /resnets\.\d+\.conv1\.weight$/.test(k))).toBe(true);
      expect(locon.some((k) => /resnets\.\d+\.time_emb_proj\.weight$/.test(k))).toBe(true);
      expect(locon.some((k) => /(down|up)samplers\.0\.conv\.weight$/.test(k))).toBe(true);
      expect(locon.every((k) => /(resnets\.\d+\.(conv1|conv2|conv_shortcut|time_emb_proj)|samplers\.0\.conv)\.weight$/.test(k))).toBe(true);
    } finally {
      disposeModel(model);
    }
  });

  it('a LoCon run writes kohya\'s keys, shapes, alphas and network args, and the file merges to the weights it trained', async () => {
    const model = loadModel(TINY_SD_A);
    const [a] = await catImages(1);
    const setup = createDreamBooth(model, [a!], [], { ...DB, convRank: 3, convAlpha: 1.5 });
    try {
      const r = await train(setup.task, { ...ENGINE, steps: 2 }, path.join(tmp, 'locon'), { test: true });
      const { tensors, metadata } = loadSafetensors(r.output);
      const conv = [...tensors.keys()].find((k) => /^lora_unet_down_blocks_0_resnets_0_conv1\.lora_down\.weight$/.test(k))!;
      expect(conv).toBeDefined();
      const w = model.unet.params.get('down_blocks.0.resnets.0.conv1.weight')!.shape; // HWIO
      expect(tensors.get(conv)!.shape).toEqual([3, w[2], w[0], w[1]]);
      expect(tensors.get(conv.replace('lora_down', 'lora_up'))!.shape).toEqual([w[3], 3, 1, 1]);
      expect(Array.from(tensors.get(conv.replace('lora_down.weight', 'alpha'))!.data as Float32Array)).toEqual([1.5]);
      expect([metadata['ss_network_dim'], metadata['ss_network_alpha'], JSON.parse(metadata['ss_network_args']!)]).toEqual(['2', '2.0', { conv_dim: '3', conv_alpha: '1.5' }]);
      // The file, applied as generate applies it, gives the weights training used.
      const lora = readLoraFile(r.output);
      const fused = applyLora(model, lora, 1);
      const trained = setup.trainedModel();
      try {
        const attention = lora.adapters.find((x) => x.module.endsWith('attn1.to_q'))!.module;
        for (const key of ['down_blocks.0.resnets.0.conv1.weight', `${attention}.weight`]) {
          const x = fused.model.unet.params.get(key)!.dataSync();
          const y = trained.model.unet.params.get(key)!.dataSync();
          const base = model.unet.params.get(key)!.dataSync();
          expect(x.some((v, i) => v !== base[i]), key).toBe(true);
          expect(x.reduce((m, v, i) => Math.max(m, Math.abs(v - y[i]!)), 0), key).toBeLessThan(1e-6);
        }
      } finally {
        trained.dispose();
        fused.dispose();
        disposeLora(lora);
      }
    } finally {
      setup.dispose();
      disposeModel(model);
    }
  }, 300_000);

  it('--text-encoder-lr scales the text encoder\'s steps only', async () => {
    const [a] = await catImages(1);
    const stepOnce = async (textEncoderLrScale: number) => {
      const model = loadModel(TINY_SD_A);
      const setup = createDreamBooth(model, [a!], [], { ...DB, trainTextEncoder: true, textEncoderLrScale });
      try {
        await train(setup.task, { ...ENGINE, steps: 1, weightDecay: 0 }, path.join(tmp, `te-${textEncoderLrScale}`), { test: true });
        return new Map([...setup.task.vars].map(([k, v]) => [k, Float32Array.from(v.dataSync())]));
      } finally {
        setup.dispose();
        disposeModel(model);
      }
    };
    const full = await stepOnce(1);
    const half = await stepOnce(0.5);
    for (const [k, v] of full) {
      if (!k.endsWith('.up')) continue; // up starts at 0: its first Adam step is the whole update
      const h = half.get(k)!;
      if (k.includes('text_encoder')) {
        const i = v.findIndex((x) => Math.abs(x) > 1e-6);
        expect(h[i]! / v[i]!, k).toBeCloseTo(0.5, 4);
      } else {
        expect(Array.from(h), k).toEqual(Array.from(v));
      }
    }
  }, 300_000);
});

describe('every training option at once', () => {
  it('DreamBooth-LoRA with pivotal tuning, LoCon, kohya targets, text encoder at its own LR, buckets, masks, caption augmentation, validation loss and EMA resumes to the same bits', async () => {
    const { makeBuckets } = await import('../src/core/training/buckets.js');
    const buckets = makeBuckets({ resolution: 32, min: 16, max: 64, step: 8 });
    const files = fs.readdirSync(PHOTOS).filter((f) => f.endsWith('.jpg')).sort().slice(0, 3);
    const read = await Promise.all(files.map((f) => readSourceImage(path.join(PHOTOS, f), 32, { buckets })));
    const images = read.map((img, i) => ({
      ...img,
      caption: i === 0 ? 'sofa, window, blanket' : 'floor, lamp',
      mask: Uint8Array.from({ length: img.width * img.height }, (_, p) => (p % img.width < img.width / 2 ? 255 : 40)),
    }));
    const settings: DreamBoothSettings = {
      ...TINY_DREAMBOOTH_SETTINGS,
      batch: 2,
      identifier: '<all>',
      instancePrompt: 'a photo of <all> cat',
      trainTextEncoder: true,
      textEncoderLrScale: 0.5,
      format: 'kohya',
      loraTargets: 'transformer',
      convRank: 2,
      captions: { shuffleCaptions: true, keepTokens: 1, captionDropout: 0.2, tagDropout: 0.2 },
      pivotal: { token: '<all>', vectors: 2, initToken: 'cat', steps: 2, lrScale: 3 },
    };
    const run = async (dir: string, opts: { stopAfter?: number; resume?: string } = {}) => {
      const model = loadModel(TINY_SD_A);
      const setup = createDreamBooth(model, images.slice(0, 2), [], settings, [images[2]!]);
      let steps = 0;
      try {
        const r = await train(setup.task, { ...ENGINE, steps: 4, validationEvery: 2, emaDecay: 0.9 }, dir, { test: true }, { onStep: () => steps++, shouldStop: () => opts.stopAfter !== undefined && steps >= opts.stopAfter }, opts.resume);
        return { r, vars: [...setup.task.vars].map(([k, v]) => [k, Array.from(v.dataSync())] as const) };
      } finally {
        setup.dispose();
        disposeModel(model);
      }
    };
    const straight = await run(path.join(tmp, 'all'));
    await expect(run(path.join(tmp, 'all-resumed'), { stopAfter: 3 })).rejects.toBeInstanceOf(InterruptedError);
    const resumed = await run(path.join(tmp, 'all-resumed'), { resume: path.join(tmp, 'all-resumed', 'checkpoints', 'step-000003') });
    expect(resumed.vars).toEqual(straight.vars);
    expect(resumed.r.losses).toEqual(straight.r.losses);
    expect(resumed.r.valLosses).toEqual(straight.r.valLosses);
    for (const out of [straight.r.output, straight.r.emaOutput!]) {
      const other = path.join(tmp, 'all-resumed', path.basename(out));
      expect(fs.readFileSync(other).equals(fs.readFileSync(out)), out).toBe(true);
    }
  }, 300_000);
});
