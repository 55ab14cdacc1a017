/** Training-engine behaviour that does not need a real model: the NaN guard and LR schedules. */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { learningRate } from '../src/core/training/optimizer.js';
import { PainterError } from '../src/errors.js';
import { train, type EngineConfig, type TrainingTask } from '../src/train/engine.js';
import { useBackend } from './helpers.js';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'painter-engine-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));
beforeAll(async () => {
  await useBackend();
});

const CFG: EngineConfig = { steps: 6, gradAccum: 1, lr: 0.1, lrSchedule: 'constant', warmupSteps: 0, weightDecay: 0, maxGradNorm: 0, checkpointEvery: 2, validationEvery: 0, seed: 1 };

function quadratic(poisonAt: number): { task: TrainingTask; w: tf.Variable } {
  const w = tf.variable(tf.tensor1d([1, -2]), true, `w_${Math.random()}`);
  let calls = 0;
  const task: TrainingTask = {
    vars: new Map([['w', w]]),
    prepareBatch() {
      calls++;
      const poison = calls === poisonAt;
      return () => (poison ? tf.sum(tf.mul(w, NaN)) : tf.sum(tf.square(w))) as tf.Scalar;
    },
    saveState: () => ({}),
    restoreState: () => {},
    saveResult: async (dir) => path.join(dir, 'result'),
  };
  return { task, w };
}

describe('training engine', () => {
  it('stops on a NaN loss without applying the update, keeping the last good checkpoint', async () => {
    const { task, w } = quadratic(5);
    const dir = path.join(tmp, 'nan');
    const err = await train(task, CFG, dir, {}).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(PainterError);
    expect((err as Error).message).toMatch(/the loss became NaN at step 5; training stopped without applying that update \(the last good checkpoint is .*step-000004\)/);
    expect(Array.from(w.dataSync()).every(Number.isFinite)).toBe(true);
    expect(fs.readdirSync(path.join(dir, 'checkpoints')).sort()).toEqual(['step-000002', 'step-000004']);
    expect(fs.existsSync(path.join(dir, 'result'))).toBe(false);
    w.dispose();
  });

  it('minimises a simple loss and writes log, loss curve and a final checkpoint', async () => {
    const { task, w } = quadratic(-1);
    const dir = path.join(tmp, 'ok');
    const r = await train(task, { ...CFG, steps: 30 }, dir, {});
    expect(r.losses.at(-1)!).toBeLessThan(r.losses[0]! / 5);
    expect(fs.readFileSync(path.join(dir, 'train.log'), 'utf8').trim().split('\n')).toHaveLength(30);
    expect(fs.readFileSync(path.join(dir, 'loss.svg'), 'utf8')).toContain('<svg');
    expect(r.checkpoint).toMatch(/step-000030$/);
    w.dispose();
  });

  it('learning-rate schedules follow diffusers (warmup from 0, cosine and linear to 0)', () => {
    expect([0, 1, 2, 5].map((s) => learningRate(1, 'constant', s, 10, 2))).toEqual([0, 0.5, 1, 1]);
    expect(learningRate(1, 'cosine', 2, 10, 2)).toBeCloseTo(1);
    expect(learningRate(1, 'cosine', 6, 10, 2)).toBeCloseTo(0.5);
    expect(learningRate(1, 'cosine', 10, 10, 2)).toBeCloseTo(0);
    expect(learningRate(1, 'linear', 6, 10, 2)).toBeCloseTo(0.5);
    expect(learningRate(1, 'linear', 10, 10, 2)).toBe(0);
  });
});
