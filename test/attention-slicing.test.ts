/**
 * Attention slicing (diffusers' enable_attention_slicing): scores over attentionSliceBytes() are
 * computed in slices of query rows, each freed before the next; with gradient checkpointing each
 * slice is also recomputed in the backward pass. Softmax is per row, so the results must be the
 * plain ones: attention itself (with and without a causal mask, and its gradients), the UNet
 * against diffusers' reference, and a checkpointed UNet training step's gradients.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { disposeModel, type StableDiffusion } from '../src/core/model.js';
import { unetForward } from '../src/core/models/unet.js';
import { attention, attentionSliceRows, setAttentionSliceBytes } from '../src/core/ops.js';
import { loadModel } from '../src/io/load-model.js';
import { loadReference, nchwToNhwc, nhwcToNchw, ref, relError, TINY_SD_A, useBackend } from './helpers.js';

let model: StableDiffusion;

beforeAll(async () => {
  await useBackend();
  model = loadModel(TINY_SD_A);
});
afterEach(() => setAttentionSliceBytes(undefined));
afterAll(() => disposeModel(model));

describe('attention slicing', () => {
  it('slices only scores over the budget, in rows that fit it', () => {
    // SD-1.5 at 512², classifier-free guidance: 2·8·4096² floats = 1 GiB of scores → 8 slices of 512 rows.
    expect(attentionSliceRows(2, 8, 4096, 4096)).toBe(512);
    expect(attentionSliceRows(2, 8, 64, 77)).toBe(64);
    setAttentionSliceBytes(1000);
    expect(attentionSliceRows(1, 1, 10, 100)).toBe(2);
    expect(attentionSliceRows(1, 1, 10, 1000)).toBe(1);
  });

  it('gives the unsliced result and gradients, with and without a causal mask and slice checkpointing', () => {
    const [b, l, c, heads] = [2, 37, 24, 3];
    const q = tf.randomNormal([b, l, c], 0, 1, 'float32', 1);
    const k = tf.randomNormal([b, l, c], 0, 1, 'float32', 2);
    const v = tf.randomNormal([b, l, c], 0, 1, 'float32', 3);
    const causal = tf.tidy(() => tf.mul(tf.sub(1, tf.linalg.bandPart(tf.ones([l, l]), -1, 0)), -1e9).reshape([1, 1, l, l]));
    const upstream = tf.randomNormal([b, l, c], 0, 1, 'float32', 4);
    for (const mask of [undefined, causal]) {
      for (const checkpointSlices of [false, true]) {
        const run = (budget: number | undefined) => {
          setAttentionSliceBytes(budget);
          const f = (a: tf.Tensor, bb: tf.Tensor, cc: tf.Tensor) => tf.sum(tf.mul(attention(a, bb, cc, heads, mask, { checkpointSlices }), upstream)) as tf.Scalar;
          const out = attention(q, k, v, heads, mask);
          const grads = tf.grads(f)([q, k, v]);
          return [out, ...grads];
        };
        const plain = run(undefined);
        // 5 query rows of 2·3·37 floats per slice: 8 slices, the last one short.
        const sliced = run(5 * 2 * 3 * 37 * 4);
        const what = `mask ${mask ? 'causal' : 'none'}, checkpointSlices ${checkpointSlices}`;
        plain.forEach((p, i) => expect(relError(sliced[i]!, p), `${what}, tensor ${i}`).toBeLessThan(1e-6));
        tf.dispose([...plain, ...sliced]);
      }
    }
    tf.dispose([q, k, v, causal, upstream]);
  });

  it("keeps the UNet at diffusers' reference (1e-4) with every attention sliced", () => {
    const r = loadReference('unet.safetensors');
    setAttentionSliceBytes(4096);
    const out = unetForward(model.unet.params, model.unet.config, nchwToNhwc(ref(r, 'sample')), ref(r, 'timesteps_int'), ref(r, 'encoder_hidden_states') as tf.Tensor3D);
    expect(relError(nhwcToNchw(out), ref(r, 'noise_pred_int'))).toBeLessThan(1e-4);
    tf.dispose([out, ...r.values()]);
  });

  it('gives a checkpointed training step the plain gradients with sliced, recomputed attention', () => {
    const x = tf.randomNormal([1, 16, 16, 4], 0, 1, 'float32', 5) as tf.Tensor4D;
    const ctx = tf.randomNormal([1, 77, model.unet.config.cross_attention_dim], 0, 1, 'float32', 6) as tf.Tensor3D;
    const keys = [...model.unet.params.keys()].filter((k) => k.includes('attentions'));
    const gradsOf = (sliceBytes: number | undefined, checkpoint: boolean) => {
      setAttentionSliceBytes(sliceBytes);
      const vars = keys.map((k) => model.unet.params.get(k)!);
      return tf.grads((...ws: tf.Tensor[]) => {
        const p = new Map(model.unet.params);
        keys.forEach((k, i) => p.set(k, ws[i]!));
        const opts = checkpoint ? { checkpoint: { weights: (key: string) => keys.includes(key) } } : {};
        return tf.mean(tf.square(unetForward(p, model.unet.config, x, 500, ctx, opts))) as tf.Scalar;
      })(vars);
    };
    const plain = gradsOf(undefined, false);
    const sliced = gradsOf(2048, true);
    const overall = tf.tidy(() => {
      const a = tf.concat(plain.map((g) => g.reshape([-1])));
      const b = tf.concat(sliced.map((g) => g.reshape([-1])));
      return relError(b, a);
    });
    expect(overall).toBeLessThan(1e-6);
    tf.dispose([x, ctx, ...plain, ...sliced]);
  });
});
