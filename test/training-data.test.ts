/**
 * Training data as kohya and A1111 users prepare it: caption shuffling and dropout (kohya's
 * process_caption), masked loss (NAME.mask.png or the alpha channel), and training on the current
 * folder when none is named. Each would fail without the feature: statistics of the drawn
 * prompts, prompts that change the loss, masks that change (or, all white, do not change) what
 * is learnt, resume to the same bits with everything on.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { disposeModel } from '../src/core/model.js';
import { Rng } from '../src/core/random.js';
import { perSampleMse } from '../src/core/training/loss.js';
import { InterruptedError, PainterError } from '../src/errors.js';
import { readImageFolder, readSourceImage, scanImageFolder, type SourceImage } from '../src/io/dataset.js';
import { loadModel } from '../src/io/load-model.js';
import { augmentTags, PLAIN_CAPTIONS, trainingPrompt, type CaptionSettings } from '../src/train/captions.js';
import { createDreamBooth } from '../src/train/dreambooth.js';
import { train, type EngineConfig } from '../src/train/engine.js';
import { maskCropToLatent } from '../src/train/steps.js';
import { createInversion, type InvertSettings } from '../src/train/textual-inversion.js';
import { FIXTURES, ROOT, TINY_DREAMBOOTH_SETTINGS, TINY_INVERT_SETTINGS, TINY_SD_A, useBackend } from './helpers.js';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'painter-data-'));
const PHOTOS = path.join(FIXTURES, 'photos', 'cat');
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));
beforeAll(() => useBackend());

const ENGINE: EngineConfig = { steps: 4, gradAccum: 1, lr: 5e-3, lrSchedule: 'constant', warmupSteps: 0, weightDecay: 0.01, maxGradNorm: 1, checkpointEvery: 100, validationEvery: 0, seed: 11 };
const SETTINGS = (s: Partial<CaptionSettings>): CaptionSettings => ({ ...PLAIN_CAPTIONS, ...s });

describe('caption shuffling and dropout (kohya process_caption)', () => {
  const caption = 'orange fur, green eyes, sofa, window';

  it('plain settings draw nothing and give "prompt, caption"', () => {
    const rng = new Rng(1);
    const before = JSON.stringify(rng.state());
    expect(trainingPrompt('a photo of <cat>', caption, PLAIN_CAPTIONS, rng)).toBe(`a photo of <cat>, ${caption}`);
    expect(JSON.stringify(rng.state())).toBe(before);
  });

  it('shuffling keeps the prompt and the first --keep-tokens tags in place and draws every order of the rest about equally', () => {
    const rng = new Rng(2);
    const counts = new Map<string, number>();
    for (let i = 0; i < 1200; i++) {
      const p = trainingPrompt('a photo of <cat>', caption, SETTINGS({ shuffleCaptions: true, keepTokens: 1 }), rng);
      expect(p.startsWith('a photo of <cat>, orange fur, ')).toBe(true);
      const rest = p.slice('a photo of <cat>, orange fur, '.length);
      expect(rest.split(', ').sort()).toEqual(['green eyes', 'sofa', 'window']);
      counts.set(rest, (counts.get(rest) ?? 0) + 1);
    }
    expect(counts.size).toBe(6);
    for (const n of counts.values()) expect(Math.abs(n - 200)).toBeLessThan(60);
  });

  it('caption dropout trains the empty prompt with probability p; tag dropout leaves out each free tag with probability p', () => {
    const rng = new Rng(3);
    const n = 4000;
    let empty = 0;
    for (let i = 0; i < n; i++) if (trainingPrompt('a photo of <cat>', caption, SETTINGS({ captionDropout: 0.3 }), rng) === '') empty++;
    expect(Math.abs(empty / n - 0.3)).toBeLessThan(0.03);
    const kept = new Map<string, number>();
    for (let i = 0; i < n; i++) {
      const tags = augmentTags(caption, SETTINGS({ tagDropout: 0.5, keepTokens: 2 }), rng).split(', ');
      expect(tags.slice(0, 2)).toEqual(['orange fur', 'green eyes']);
      for (const t of tags.slice(2)) kept.set(t, (kept.get(t) ?? 0) + 1);
    }
    for (const t of ['sofa', 'window']) expect(Math.abs(kept.get(t)! / n - 0.5)).toBeLessThan(0.03);
    // Every tag dropped: the prompt alone, no dangling comma.
    expect(trainingPrompt('a photo of <cat>', 'sofa', SETTINGS({ tagDropout: 1 }), rng)).toBe('a photo of <cat>');
  });
});

async function catImages(n = 2, resolution = 32): Promise<SourceImage[]> {
  const files = fs.readdirSync(PHOTOS).filter((f) => f.endsWith('.jpg')).sort().slice(0, n);
  return Promise.all(files.map((f) => readSourceImage(path.join(PHOTOS, f), resolution)));
}

/** Textual Inversion for `steps` on `images`; the learnt rows and losses. */
async function invertRows(images: SourceImage[], settings: Partial<InvertSettings>, dir: string, opts: { stopAfter?: number; resume?: string } = {}) {
  const model = loadModel(TINY_SD_A);
  const setup = createInversion(model, images, { ...TINY_INVERT_SETTINGS, ...settings });
  let steps = 0;
  try {
    const r = await train(setup.task, ENGINE, dir, { test: true }, { onStep: () => steps++, shouldStop: () => opts.stopAfter !== undefined && steps >= opts.stopAfter }, opts.resume);
    return { rows: Float32Array.from(setup.rows.dataSync()), losses: r.losses };
  } finally {
    setup.dispose();
    disposeModel(model);
  }
}

describe('masked loss', () => {
  let dir = '';
  beforeAll(async () => {
    dir = path.join(tmp, 'masked');
    fs.mkdirSync(dir);
    const src = path.join(PHOTOS, 'chelsea-1.jpg');
    const { width, height } = await sharp(src).rotate().metadata();
    fs.copyFileSync(src, path.join(dir, 'cat.jpg'));
    // Left half learnt, right half ignored.
    const half = Buffer.alloc(width! * height!);
    for (let y = 0; y < height!; y++) half.fill(255, y * width!, y * width! + Math.floor(width! / 2));
    await sharp(half, { raw: { width: width!, height: height!, channels: 1 } }).png().toFile(path.join(dir, 'cat.mask.png'));
  });

  it('a NAME.mask.png is the photo\'s mask, not a training image; a mask of another shape, a black one and --alpha-mask without alpha are refused naming the file', async () => {
    expect(scanImageFolder(dir).images.map((f) => path.basename(f))).toEqual(['cat.jpg']);
    const [img] = await readImageFolder(dir, 32, { skipBad: false, warn: () => undefined });
    expect(img!.mask!.length).toBe(img!.width * img!.height);
    expect(img!.mask![0]).toBe(255);
    expect(img!.mask![img!.width - 1]).toBe(0);
    const bad = path.join(tmp, 'bad-masks');
    fs.mkdirSync(bad);
    fs.copyFileSync(path.join(PHOTOS, 'chelsea-1.jpg'), path.join(bad, 'a.jpg'));
    await sharp({ create: { width: 10, height: 40, channels: 3, background: '#fff' } }).png().toFile(path.join(bad, 'a.mask.png'));
    await expect(readSourceImage(path.join(bad, 'a.jpg'), 32)).rejects.toThrow(/a\.mask\.png: the mask is 10×40, not the shape of a\.jpg/);
    const { width, height } = await sharp(path.join(bad, 'a.jpg')).metadata();
    await sharp({ create: { width: width!, height: height!, channels: 3, background: '#000' } }).png().toFile(path.join(bad, 'a.mask.png'));
    await expect(readSourceImage(path.join(bad, 'a.jpg'), 32)).rejects.toThrow(/a\.mask\.png: the mask is black everywhere/);
    await expect(readSourceImage(path.join(bad, 'a.jpg'), 32, { alphaMask: true })).rejects.toThrow(/a\.jpg: --alpha-mask reads the alpha channel, but this image has none/);
    await expect(readSourceImage(path.join(bad, 'a.jpg'), 32)).rejects.toBeInstanceOf(PainterError);
  });

  it('the alpha channel is the mask with --alpha-mask', async () => {
    const file = path.join(tmp, 'alpha.png');
    const rgba = Buffer.alloc(40 * 40 * 4, 200);
    for (let i = 0; i < 40 * 40; i++) rgba[i * 4 + 3] = i % 40 < 20 ? 255 : 0;
    await sharp(rgba, { raw: { width: 40, height: 40, channels: 4 } }).png().toFile(file);
    const img = await readSourceImage(file, 32, { alphaMask: true });
    expect([img.mask![0], img.mask![31]]).toEqual([255, 0]);
    expect(img.rgb.length).toBe(32 * 32 * 3);
  });

  it('brings a crop of the mask to latent size by area averaging, mirrored with its photo', () => {
    const mask = new Uint8Array(8 * 4);
    mask.fill(255, 0, 2); // row 0, x 0–1
    const img = { file: 'x', width: 8, height: 4, rgb: Buffer.alloc(0), mask };
    expect(Array.from(maskCropToLatent(img, 4, 0, 0, false, 2, 2))).toEqual([0.5, 0, 0, 0]);
    expect(Array.from(maskCropToLatent(img, 4, 0, 0, true, 2, 2))).toEqual([0, 0.5, 0, 0]);
    expect(Array.from(maskCropToLatent(img, 4, 2, 0, false, 2, 2))).toEqual([0, 0, 0, 0]);
    expect(Array.from(maskCropToLatent(img, 4, 0, 0, false, 4, 4)).slice(0, 4)).toEqual([1, 1, 0, 0]);
  });

  it('weights each position: all ones equal the plain mean; the gradient is zero where the mask is', () => {
    const pred = tf.randomNormal([2, 4, 4, 3], 0, 1, 'float32', 1);
    const target = tf.randomNormal([2, 4, 4, 3], 0, 1, 'float32', 2);
    const plain = tf.mean(tf.square(tf.sub(pred, target)).reshape([2, -1]), 1);
    const ones = perSampleMse(pred, target, tf.ones([2, 4, 4, 1]));
    const d = tf.abs(tf.sub(plain, ones)).max().dataSync()[0]!;
    expect(d).toBeLessThan(1e-6);
    const mask = tf.tensor4d(Array.from({ length: 32 }, (_, i) => (i % 4 < 2 ? 1 : 0)), [2, 4, 4, 1]);
    const g = tf.grad((p: tf.Tensor) => tf.sum(perSampleMse(p, target, mask)))(pred);
    const gm = g.mul(tf.sub(1, mask)).abs().max().dataSync()[0]!;
    expect(gm).toBe(0);
    expect(g.mul(mask).abs().max().dataSync()[0]!).toBeGreaterThan(0);
    tf.dispose([pred, target, plain, ones, mask, g]);
  });

  it('an all-white mask learns what no mask learns; a half mask learns something else', async () => {
    const [plainImage] = await catImages(1);
    const white = { ...plainImage!, mask: new Uint8Array(plainImage!.width * plainImage!.height).fill(255) };
    const [halfImage] = await readImageFolder(dir, 32, { skipBad: false, warn: () => undefined });
    const plain = await invertRows([plainImage!], {}, path.join(tmp, 'm-plain'));
    const ones = await invertRows([white], {}, path.join(tmp, 'm-white'));
    const half = await invertRows([halfImage!], {}, path.join(tmp, 'm-half'));
    const maxDiff = (a: Float32Array, b: Float32Array) => a.reduce((m, v, i) => Math.max(m, Math.abs(v - b[i]!)), 0);
    expect(maxDiff(ones.rows, plain.rows)).toBeLessThan(1e-5);
    expect(maxDiff(half.rows, plain.rows)).toBeGreaterThan(1e-4);
  }, 300_000);
});

describe('training with caption augmentation and masks', () => {
  it('Textual Inversion with shuffled, dropped captions and a mask resumes to the same bits, and the captions change what is learnt', async () => {
    const images = (await catImages(2)).map((img, i) => ({ ...img, caption: i === 0 ? 'sofa, window, blanket' : 'floor, lamp' }));
    const captions = { shuffleCaptions: true, keepTokens: 0, captionDropout: 0.25, tagDropout: 0.3 };
    const straight = await invertRows(images, { captions }, path.join(tmp, 'c-straight'));
    await expect(invertRows(images, { captions }, path.join(tmp, 'c-resumed'), { stopAfter: 2 })).rejects.toBeInstanceOf(InterruptedError);
    const resumed = await invertRows(images, { captions }, path.join(tmp, 'c-resumed'), { resume: path.join(tmp, 'c-resumed', 'checkpoints', 'step-000002') });
    expect(Buffer.from(resumed.rows.buffer).equals(Buffer.from(straight.rows.buffer))).toBe(true);
    expect(resumed.losses).toEqual(straight.losses);
    const plain = await invertRows(images, {}, path.join(tmp, 'c-plain'));
    expect(plain.losses).not.toEqual(straight.losses);
  }, 300_000);

  it('DreamBooth draws per-step prompts (the empty one with caption dropout 1) and trains on them; without varying captions its cached prompts stay', async () => {
    const model = loadModel(TINY_SD_A);
    const images = (await catImages(2)).map((img) => ({ ...img, caption: 'sofa, window' }));
    const base = TINY_DREAMBOOTH_SETTINGS;
    try {
      for (const [captions, expected] of [
        [SETTINGS({ captionDropout: 1 }), ['']],
        [SETTINGS({ shuffleCaptions: true }), ['a photo of sks cat, sofa, window', 'a photo of sks cat, window, sofa']],
        [PLAIN_CAPTIONS, undefined],
      ] as const) {
        const setup = createDreamBooth(model, images, [], { ...base, captions });
        try {
          const rng = new Rng(5);
          for (let i = 0; i < 6; i++) {
            const b = setup.draw(rng);
            if (expected === undefined) expect(b.instancePrompts).toBeUndefined();
            else for (const p of b.instancePrompts!) expect(expected).toContain(p);
            const loss = setup.loss(b, 'total');
            expect(Number.isFinite(loss.dataSync()[0])).toBe(true);
            loss.dispose();
          }
        } finally {
          setup.dispose();
        }
      }
    } finally {
      disposeModel(model);
    }
  }, 300_000);
});

describe('no folder named', () => {
  it('trains on the images in the current folder, not its subfolders, and says so', () => {
    const cwd = path.join(tmp, 'here');
    fs.mkdirSync(path.join(cwd, 'old-run'), { recursive: true });
    for (const f of ['chelsea-1.jpg', 'chelsea-2.jpg']) fs.copyFileSync(path.join(PHOTOS, f), path.join(cwd, f));
    // A subfolder's unreadable image would stop the run if it were read.
    fs.copyFileSync(path.join(FIXTURES, 'photos', 'truncated.jpg'), path.join(cwd, 'old-run', 'broken.jpg'));
    const run = (args: string[], dir: string) =>
      spawnSync(process.execPath, [path.join(ROOT, 'bin', 'painter'), 'invert', ...args], { cwd: dir, encoding: 'utf8', env: { ...process.env, PAINTER_BACKEND: 'wasm' }, timeout: 120_000 });
    const r = run(['--token', '<here>', '--steps', '1', '--resolution', '32', '--validation-every', '0', '--out', path.join(tmp, 'here-run'), '--model', TINY_SD_A], cwd);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stderr).toContain(`training on the images in the current folder, ${fs.realpathSync(cwd)}`);
    expect(JSON.parse(fs.readFileSync(path.join(tmp, 'here-run', 'config.json'), 'utf8')).images.map((f: string) => path.basename(f))).toEqual(['chelsea-1.jpg', 'chelsea-2.jpg']);
    const empty = path.join(tmp, 'empty');
    fs.mkdirSync(empty);
    const e = run(['--token', '<here>', '--steps', '1', '--model', TINY_SD_A, '--out', path.join(tmp, 'empty-run')], empty);
    expect([e.status, e.stderr.trim().split('\n').at(-1)]).toEqual([1, expect.stringMatching(/^painter: the current folder \(.*empty\) holds no usable image; name the folder of training images/)]);
  }, 300_000);
});
