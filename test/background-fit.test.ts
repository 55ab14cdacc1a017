/**
 * --preserve-background (Blended Latent Diffusion's background reconstruction): the decoder fitted
 * to the input outside the mask brings the decoded background to the input while the edit inside
 * the mask stays as decoded; the model's own weights are untouched and nothing leaks.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { disposeModel } from '../src/core/model.js';
import { fitDecoderToBackground } from '../src/core/pipeline/background-fit.js';
import { vaeDecode } from '../src/core/models/vae.js';
import { loadModel } from '../src/io/load-model.js';
import { FIXTURES, runCli, TINY_SD_A, useBackend } from './helpers.js';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'painter-bgfit-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));
beforeAll(() => useBackend());

/** Mean |a − b| where w (broadcast over channels) is 1. */
function meanError(a: tf.Tensor4D, b: tf.Tensor4D, w: tf.Tensor4D): number {
  return tf.tidy(() => tf.div(tf.sum(tf.mul(tf.abs(tf.sub(a, b)), w)), tf.mul(tf.sum(w), 3)).dataSync()[0]!);
}

describe('decoder fitted to the background', () => {
  it('brings the background to the input and keeps the edit; the model is untouched and nothing leaks', async () => {
    // painter-mini's decoder (with mid-block attention, as SD's): an edit's latents inside the
    // mask change the decoded background too.
    const model = loadModel(path.join(FIXTURES, 'painter-mini'));
    try {
      const sf = model.vae.config.scaling_factor;
      const zIn = tf.randomNormal([1, 16, 16, 4], 0, 1, 'float32', 3) as tf.Tensor4D;
      const input = tf.tidy(() => vaeDecode(model.vae.params, model.vae.config, tf.div(zIn, sf) as tf.Tensor4D));
      const [, H, W] = input.shape;
      const mask = tf.tidy(() => tf.pad(tf.ones([1, H / 2, W / 2, 1]), [[0, 0], [H / 4, H / 4], [W / 4, W / 4], [0, 0]]) as tf.Tensor4D);
      const keep = tf.tidy(() => tf.sub(1, mask) as tf.Tensor4D);
      const latentMask = tf.tidy(() => tf.pad(tf.ones([1, 8, 8, 1]), [[0, 0], [4, 4], [4, 4], [0, 0]]));
      const latents = tf.tidy(() => tf.add(tf.mul(zIn, tf.sub(1, latentMask)), tf.mul(tf.randomNormal([1, 16, 16, 4], 0, 1, 'float32', 4), latentMask)) as tf.Tensor4D);
      latentMask.dispose();
      const decode = (params = model.vae.params) => tf.tidy(() => vaeDecode(params, model.vae.config, tf.div(latents, sf) as tf.Tensor4D));
      const before = Array.from(model.vae.params.get('decoder.conv_out.weight')!.dataSync());
      const plain = decode();
      const tensors = tf.memory().numTensors;
      const fitted = await fitDecoderToBackground(model, latents, input, mask, { steps: 30, lr: 1e-4, lambda: 100 });
      const out = decode(fitted.params);
      expect(fitted.losses.at(-1)!).toBeLessThan(fitted.losses[0]! / 2);
      const outside = [meanError(plain, input, keep), meanError(out, input, keep)];
      expect(outside[1]!).toBeLessThan(outside[0]! * 0.8);
      // Inside the mask the result stays the edit: nearer the plain decoding than the input there.
      expect(meanError(out, plain, mask)).toBeLessThan(meanError(out, input, mask) / 2);
      fitted.dispose();
      out.dispose();
      expect(tf.memory().numTensors).toBe(tensors);
      expect(Array.from(model.vae.params.get('decoder.conv_out.weight')!.dataSync())).toEqual(before);
      tf.dispose([zIn, input, mask, keep, latents, plain]);
    } finally {
      disposeModel(model);
    }
  }, 300_000);

  it('needs a mask', async () => {
    const r = await runCli(['edit', path.join(tmp, 'none.png'), 'x', '--preserve-background', '--model', TINY_SD_A]);
    expect([r.code, r.stderr.trim()]).toEqual([2, 'painter: --preserve-background fits the decoder to the picture outside a mask; give --mask or --outpaint']);
  });
});
