/**
 * Aspect-ratio buckets (kohya's --enable_bucket): the bucket list and choice kohya computes, batches
 * that never mix buckets and cover every image once an epoch, images read to their bucket, and
 * Textual Inversion and DreamBooth (class rows in another bucket) training on them, resumable.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { disposeModel } from '../src/core/model.js';
import { Rng } from '../src/core/random.js';
import { BucketBatchSampler, makeBuckets, selectBucket, type Bucket } from '../src/core/training/buckets.js';
import { InterruptedError } from '../src/errors.js';
import { readSourceImage, type SourceImage } from '../src/io/dataset.js';
import { loadModel } from '../src/io/load-model.js';
import { createDreamBooth } from '../src/train/dreambooth.js';
import { train, type EngineConfig } from '../src/train/engine.js';
import { createInversion } from '../src/train/textual-inversion.js';
import { FIXTURES, ROOT, TINY_DREAMBOOTH_SETTINGS, TINY_INVERT_SETTINGS, TINY_SD_A, useBackend } from './helpers.js';
import { spawnSync } from 'node:child_process';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'painter-buckets-'));
const PHOTOS = path.join(FIXTURES, 'photos', 'cat');
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));
beforeAll(() => useBackend());

const ENGINE: EngineConfig = { steps: 4, gradAccum: 1, lr: 5e-3, lrSchedule: 'constant', warmupSteps: 0, weightDecay: 0.01, maxGradNorm: 1, checkpointEvery: 100, validationEvery: 0, seed: 11 };
const TINY_BUCKETS = makeBuckets({ resolution: 32, min: 16, max: 64, step: 8 });

describe('buckets as kohya makes and picks them', () => {
  it('SD at 512 (min 256, max 1024, step 64): kohya\'s 17 buckets; an image goes to the nearest aspect ratio', () => {
    const b = makeBuckets({ resolution: 512, min: 256, max: 1024, step: 64 });
    expect(b.map(([w, h]) => `${w}x${h}`).join(' ')).toBe(
      '256x832 256x896 256x960 256x1024 320x704 320x768 384x640 448x576 512x512 576x448 640x384 704x320 768x320 832x256 896x256 960x256 1024x256',
    );
    expect(selectBucket(b, 1200, 800)).toEqual([640, 384]);
    expect(selectBucket(b, 800, 1200)).toEqual([384, 640]);
    expect(selectBucket(b, 1000, 1000)).toEqual([512, 512]);
  });

  it('batches come from one bucket, cover every image once an epoch, and resume where they were', () => {
    const groups = [[0, 1, 2, 3, 4], [5, 6], [7]];
    const sampler = new BucketBatchSampler(groups, 2);
    const rng = new Rng(4);
    const seen: number[] = [];
    for (let i = 0; i < 5; i++) {
      const batch = sampler.next(rng);
      expect(groups.filter((g) => batch.every((x) => g.includes(x)))).toHaveLength(1);
      seen.push(...batch);
    }
    expect(seen.sort((a, b) => a - b)).toEqual([0, 1, 2, 3, 4, 5, 6, 7]);
    const copy = new BucketBatchSampler(groups, 2);
    copy.restore(JSON.parse(JSON.stringify(sampler.state())));
    const rng2 = new Rng(rng.state());
    for (let i = 0; i < 7; i++) expect(copy.next(rng2)).toEqual(sampler.next(rng));
  });
});

async function shaped(name: string, width: number, height: number): Promise<string> {
  const file = path.join(tmp, name);
  await sharp(path.join(PHOTOS, 'chelsea-1.jpg')).resize({ width, height, fit: 'cover' }).jpeg().toFile(file);
  return file;
}

describe('training on buckets', () => {
  let images: SourceImage[] = [];
  beforeAll(async () => {
    const files = [await shaped('wide-1.jpg', 160, 90), await shaped('wide-2.jpg', 150, 80), await shaped('tall.jpg', 80, 150), path.join(PHOTOS, 'chelsea-2.jpg')];
    images = await Promise.all(files.map((f) => readSourceImage(f, 32, { buckets: TINY_BUCKETS })));
  });

  it('reads each image to cover its bucket, keeping its aspect ratio', () => {
    const buckets = images.map((i) => i.bucket!);
    expect(buckets[0]![0]).toBeGreaterThan(buckets[0]![1]);
    expect(buckets[2]![0]).toBeLessThan(buckets[2]![1]);
    expect(buckets[3]).toEqual([32, 32]);
    for (const img of images) expect(img.width >= img.bucket![0] && img.height >= img.bucket![1] && (img.width === img.bucket![0] || img.height === img.bucket![1])).toBe(true);
  });

  it('Textual Inversion trains batch by bucket (no batch mixes shapes) and resumes to the same bits', async () => {
    const run = async (dir: string, opts: { stopAfter?: number; resume?: string; shapes?: string[] } = {}) => {
      const model = loadModel(TINY_SD_A);
      const setup = createInversion(model, images, { ...TINY_INVERT_SETTINGS, batch: 2 });
      const prepare = setup.task.prepareBatch.bind(setup.task);
      // Every batch's latents share one shape: sampleLatents' concat would throw otherwise.
      setup.task.prepareBatch = (rng) => {
        const fn = prepare(rng);
        return () => {
          const l = fn();
          opts.shapes?.push('ok');
          return l;
        };
      };
      let steps = 0;
      try {
        const r = await train(setup.task, ENGINE, dir, { test: true }, { onStep: () => steps++, shouldStop: () => opts.stopAfter !== undefined && steps >= opts.stopAfter }, opts.resume);
        return { rows: Float32Array.from(setup.rows.dataSync()), losses: r.losses };
      } finally {
        setup.dispose();
        disposeModel(model);
      }
    };
    const shapes: string[] = [];
    const straight = await run(path.join(tmp, 'ti'), { shapes });
    expect(shapes).toHaveLength(4);
    await expect(run(path.join(tmp, 'ti-resumed'), { stopAfter: 2 })).rejects.toBeInstanceOf(InterruptedError);
    const resumed = await run(path.join(tmp, 'ti-resumed'), { resume: path.join(tmp, 'ti-resumed', 'checkpoints', 'step-000002') });
    expect(Buffer.from(resumed.rows.buffer).equals(Buffer.from(straight.rows.buffer))).toBe(true);
    expect(resumed.losses).toEqual(straight.losses);
  }, 300_000);

  it('DreamBooth with instance rows in a wide bucket and square class rows: L = L_inst + λ·L_prior in two passes', async () => {
    const model = loadModel(TINY_SD_A);
    const wide = images.slice(0, 2);
    const classImages = await Promise.all([2, 3].map((n) => readSourceImage(path.join(PHOTOS, `chelsea-${n}.jpg`), 32, { buckets: TINY_BUCKETS })));
    const setup = createDreamBooth(model, wide, classImages, {
      ...TINY_DREAMBOOTH_SETTINGS,
      priorPreservation: true,
      priorWeight: 0.7,
    });
    try {
      const b = setup.draw(new Rng(9));
      expect(b.instance[0]!.mean.shape.join()).not.toBe(b.prior[0]!.mean.shape.join());
      const [total, inst, prior] = (['total', 'instance', 'prior'] as const).map((t) => setup.loss(b, t));
      const expected = inst!.dataSync()[0]! + 0.7 * prior!.dataSync()[0]!;
      expect(Math.abs(total!.dataSync()[0]! - expected)).toBeLessThan(1e-6 * Math.abs(expected));
      tf.dispose([total!, inst!, prior!]);
      const r = await train(setup.task, { ...ENGINE, steps: 2 }, path.join(tmp, 'db'), { test: true });
      expect(r.losses.every(Number.isFinite)).toBe(true);
    } finally {
      setup.dispose();
      disposeModel(model);
    }
  }, 300_000);

  it('the command line lists the buckets; bucket sizes without --buckets are refused', async () => {
    const dir = path.join(tmp, 'cli');
    fs.mkdirSync(dir);
    for (const f of ['wide-1.jpg', 'tall.jpg']) fs.copyFileSync(path.join(tmp, f), path.join(dir, f));
    const painter = (args: string[]) => spawnSync(process.execPath, [path.join(ROOT, 'bin', 'painter'), 'invert', dir, '--token', '<b>', '--model', TINY_SD_A, '--resolution', '32', '--validation-every', '0', ...args], { encoding: 'utf8', env: { ...process.env, PAINTER_BACKEND: 'wasm' }, timeout: 120_000 });
    const ok = painter(['--buckets', '--steps', '2', '--out', path.join(tmp, 'cli-run')]);
    expect(ok.status, ok.stderr).toBe(0);
    expect(ok.stderr).toMatch(/buckets \(width×height: images\): \d+×\d+: 1, \d+×\d+: 1/);
    expect(Object.keys(JSON.parse(fs.readFileSync(path.join(tmp, 'cli-run', 'config.json'), 'utf8')).bucketImages as object)).toHaveLength(2);
    const bad = painter(['--min-bucket', '16', '--out', path.join(tmp, 'cli-bad')]);
    expect([bad.status, bad.stderr.trim()]).toEqual([2, 'painter: --min-bucket sets aspect-ratio buckets; add --buckets']);
  }, 300_000);
});
