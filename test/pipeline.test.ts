/**
 * Whole-pipeline parity with diffusers on tiny-sd-a: prompt encoding, the 10-step DDIM
 * generation with guidance 7.5 (every step), VAE decode and the final image; and the training
 * loss with its gradients on the token embedding and on conv_in.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import type { StableDiffusion } from '../src/core/model.js';
import { disposeModel } from '../src/core/model.js';
import { clipTextForward } from '../src/core/models/clip-text.js';
import { createScheduler, noiseSchedule } from '../src/core/schedulers/index.js';
import { decodeLatents, decodeLatentsRaw, denoise, encodePrompts, promptIds } from '../src/core/pipeline/text-to-image.js';
import { diffusionLoss, stratifiedTimesteps } from '../src/core/training/loss.js';
import { Rng } from '../src/core/random.js';
import { loadModel } from '../src/io/load-model.js';
import { loadReference, nchwToNhwc, nhwcToNchw, ref, relError, TINY_SD_A, useBackend } from './helpers.js';

let model: StableDiffusion;
const worst: Record<string, number> = {};
function track(name: string, err: number): number {
  worst[name] = Math.max(worst[name] ?? 0, err);
  return err;
}

beforeAll(async () => {
  await useBackend();
  model = loadModel(TINY_SD_A);
});
afterAll(() => {
  disposeModel(model);
  console.log('worst relative errors:', JSON.stringify(worst));
});

describe('text-to-image pipeline (DDIM, 10 steps, guidance 7.5)', () => {
  it('reproduces diffusers step by step and the final image within 1e-3', () => {
    const r = loadReference('pipeline.safetensors');
    const prompt = encodePrompts(model, ['a photo of a cat']);
    const negative = encodePrompts(model, ['']);
    expect(track('prompt_embeds', relError(prompt, ref(r, 'prompt_embeds')))).toBeLessThan(1e-4);
    expect(track('negative_prompt_embeds', relError(negative, ref(r, 'negative_prompt_embeds')))).toBeLessThan(1e-4);

    const scheduler = createScheduler('ddim', model.scheduler, 10);
    expect(scheduler.timesteps).toEqual(Array.from(ref(r, 'timesteps').dataSync()));
    const perStep = ref(r, 'latents_per_step');
    const unetPerStep = ref(r, 'unet_out_per_step');
    const loop = denoise(model, { scheduler, promptEmbeds: prompt, negativeEmbeds: negative, guidance: 7.5, latents: nchwToNhwc(ref(r, 'init_latents')) });
    let final: tf.Tensor4D | undefined;
    for (;;) {
      const s = loop.next();
      if (s.done) {
        final = s.value;
        break;
      }
      const i = s.value.step;
      const expected = perStep.slice([i, 0, 0, 0], [1, -1, -1, -1]);
      expect(track('latents_per_step', relError(nhwcToNchw(s.value.latents), expected)), `step ${i}`).toBeLessThan(1e-3);
      const expectedUnet = unetPerStep.slice([i, 0, 0, 0, 0], [1, -1, -1, -1, -1]).reshape([2, 4, 32, 32]);
      expect(track('unet_out_per_step', relError(nhwcToNchw(s.value.unetOutput), expectedUnet)), `step ${i}`).toBeLessThan(1e-3);
    }
    scheduler.dispose();
    expect(track('output_latent', relError(nhwcToNchw(final), ref(r, 'output_latent')))).toBeLessThan(1e-3);
    const raw = decodeLatentsRaw(model, final);
    expect(track('decoded_unclamped', relError(nhwcToNchw(raw), ref(r, 'decoded_unclamped')))).toBeLessThan(1e-3);
    const image = decodeLatents(model, final);
    expect(track('output_image_np', relError(image, ref(r, 'output_image_np')))).toBeLessThan(1e-3);
    const maxPixel = tf.max(tf.abs(tf.sub(image, ref(r, 'output_image_np')))).dataSync()[0]!;
    expect(maxPixel * 255).toBeLessThan(2);
    tf.dispose([prompt, negative, final, raw, image, ...r.values()]);
  });

  it('does not leak tensors across a generation', () => {
    const run = () => {
      const prompt = encodePrompts(model, ['a cat']);
      const negative = encodePrompts(model, ['']);
      const scheduler = createScheduler('dpm++2m', model.scheduler, 3);
      const init = tf.randomNormal([1, 8, 8, 4], 0, 1, 'float32', 5) as tf.Tensor4D;
      const loop = denoise(model, { scheduler, promptEmbeds: prompt, negativeEmbeds: negative, guidance: 3, latents: init });
      let s = loop.next();
      while (!s.done) s = loop.next();
      const img = decodeLatents(model, s.value);
      tf.dispose([prompt, negative, init, s.value, img]);
      scheduler.dispose();
    };
    run();
    const before = tf.memory().numTensors;
    run();
    expect(tf.memory().numTensors).toBe(before);
  });
});

describe('training loss and gradients (Textual Inversion / DreamBooth probes)', () => {
  it('matches diffusers: loss, token-embedding row gradient, conv_in gradient (1e-4)', () => {
    const r = loadReference('training.safetensors');
    const ids = promptIds(model, ['a photo of a cat', 'a painting of a cat in the forest']);
    expect(Array.from(ids.dataSync())).toEqual(Array.from(ref(r, 'input_ids').dataSync()));
    const tableKey = 'text_model.embeddings.token_embedding.weight';
    const table = tf.variable(model.textEncoder.params.get(tableKey)!.clone(), true, 'probe_table');
    const convIn = tf.variable(model.unet.params.get('conv_in.weight')!.clone(), true, 'probe_conv_in');
    const unetParams = new Map(model.unet.params);
    unetParams.set('conv_in.weight', convIn);
    const schedule = noiseSchedule(model.scheduler);
    const timesteps = Array.from(ref(r, 'timesteps').dataSync());
    const { value, grads } = tf.variableGrads(() => {
      const ehs = clipTextForward(model.textEncoder.params, model.textEncoder.config, ids, { tokenEmbedding: table }).lastHiddenState;
      return diffusionLoss(
        { params: unetParams, config: model.unet.config },
        schedule,
        { latents: nchwToNhwc(ref(r, 'latents')), noise: nchwToNhwc(ref(r, 'noise')), timesteps, encoderHiddenStates: ehs },
        { predictionType: 'epsilon' },
      );
    }, [table, convIn]);
    const loss = value.dataSync()[0]!;
    const refLoss = ref(r, 'loss').dataSync()[0]!;
    expect(track('loss', Math.abs(loss - refLoss) / refLoss)).toBeLessThan(1e-4);
    const tokenId = ref(r, 'ti_token_id').dataSync()[0]!;
    const row = grads[table.name]!.slice([tokenId, 0], [1, -1]).reshape([-1]);
    expect(track('grad_token_embedding_row', relError(row, ref(r, 'grad_token_embedding_row')))).toBeLessThan(1e-4);
    const tableNorm = tf.norm(grads[table.name]!).dataSync()[0]!;
    const refTableNorm = ref(r, 'grad_token_embedding_norm').dataSync()[0]!;
    expect(track('grad_token_embedding_norm', Math.abs(tableNorm - refTableNorm) / refTableNorm)).toBeLessThan(1e-4);
    // conv_in gradient: tfjs HWIO → PyTorch OIHW for comparison.
    const gConv = grads[convIn.name]!.transpose([3, 2, 0, 1]);
    expect(track('grad_conv_in_weight', relError(gConv, ref(r, 'grad_conv_in_weight')))).toBeLessThan(1e-4);
    const convNorm = tf.norm(gConv).dataSync()[0]!;
    const refConvNorm = ref(r, 'grad_conv_in_weight_norm').dataSync()[0]!;
    expect(track('grad_conv_in_weight_norm', Math.abs(convNorm - refConvNorm) / refConvNorm)).toBeLessThan(1e-4);
    tf.dispose([ids, table, convIn, value, ...Object.values(grads), ...r.values()]);
  });

  it('weighs the loss per latent position: a uniform map is the plain loss, halves average to it', () => {
    const r = loadReference('training.safetensors');
    const ehs = encodePrompts(model, ['a photo of a cat', 'a painting of a cat in the forest']);
    const latents = nchwToNhwc(ref(r, 'latents'));
    const [b, h, w] = latents.shape;
    const input = { latents, noise: nchwToNhwc(ref(r, 'noise')), timesteps: Array.from(ref(r, 'timesteps').dataSync()), encoderHiddenStates: ehs };
    const schedule = noiseSchedule(model.scheduler);
    const lossWith = (f?: (x: number) => number) => {
      const positionWeights = f && tf.tensor4d(Float32Array.from({ length: b * h * w }, (_, i) => f(i % w)), [b, h, w, 1]);
      const v = diffusionLoss(model.unet, schedule, { ...input, positionWeights }, { predictionType: 'epsilon' });
      const out = v.dataSync()[0]!;
      tf.dispose([v, positionWeights ?? []]);
      return out;
    };
    const plain = lossWith();
    expect(Math.abs(plain - ref(r, 'loss').dataSync()[0]!) / plain).toBeLessThan(1e-4);
    expect(Math.abs(lossWith(() => 5) - plain) / plain).toBeLessThan(1e-5);
    const left = lossWith((x) => (x < w / 2 ? 1 : 0));
    const right = lossWith((x) => (x < w / 2 ? 0 : 1));
    expect(Math.abs(left - right) / plain).toBeGreaterThan(1e-3);
    expect(Math.abs((left + right) / 2 - plain) / plain).toBeLessThan(1e-5);
    // Weight 3 on the left half: Σw·e²/Σw = (3·left + right) / 4.
    expect(Math.abs(lossWith((x) => (x < w / 2 ? 3 : 1)) - (3 * left + right) / 4) / plain).toBeLessThan(1e-5);
    tf.dispose([ehs, latents, input.noise, ...r.values()]);
  });

  it('draws stratified timesteps: one in each of n equal strata, deterministic from the seed', () => {
    const ts = stratifiedTimesteps(new Rng(4), 16, 1000);
    expect(ts).toEqual(stratifiedTimesteps(new Rng(4), 16, 1000));
    expect([...ts].sort((a, b) => a - b).map((t) => Math.floor(t / (1000 / 16)))).toEqual(Array.from({ length: 16 }, (_, i) => i));
    expect(ts).not.toEqual([...ts].sort((a, b) => a - b)); // shuffled across the batch's slots
    expect(stratifiedTimesteps(new Rng(5), 3, 10).every((t) => Number.isInteger(t) && t >= 0 && t < 10)).toBe(true);
  });
});
