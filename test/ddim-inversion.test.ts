/**
 * DDIM inversion against diffusers (DiffEdit's invert with DDIMInverseScheduler, 10 steps,
 * guidance 1; then StableDiffusionPipeline with DDIM from the inverted noise): every inverse
 * step and every regeneration step within 1e-3, through the library and through
 * `painter ddim-invert` + `painter generate --latents`; v-prediction inverts by its own formula.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { disposeModel, type StableDiffusion } from '../src/core/model.js';
import { ddimInvert } from '../src/core/pipeline/ddim-inversion.js';
import { encodeLatents } from '../src/core/pipeline/edit.js';
import { decodeLatents, denoise, encodePrompts } from '../src/core/pipeline/text-to-image.js';
import { createScheduler, overrideSchedulerConfig } from '../src/core/schedulers/index.js';
import { DdimInverseScheduler } from '../src/core/schedulers/ddim-inverse.js';
import { loadModel } from '../src/io/load-model.js';
import { loadSafetensors, writeSafetensors } from '../src/io/safetensors.js';
import { loadReference, nchwToNhwc, nhwcToNchw, ref, relError, runCli, TINY_SD_A, useBackend } from './helpers.js';

const PROMPT = 'a photo of a cat';
let model: StableDiffusion;
let refs: Map<string, tf.Tensor>;
let tmp: string;

beforeAll(async () => {
  await useBackend();
  model = loadModel(TINY_SD_A);
  refs = loadReference('editing.safetensors');
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'painter-inversion-'));
});
afterAll(() => {
  disposeModel(model);
  tf.dispose([...refs.values()]);
  fs.rmSync(tmp, { recursive: true, force: true });
});

const step = (t: tf.Tensor, i: number) => t.slice([i], [1]).reshape(t.shape.slice(1));

describe('DDIM inversion', () => {
  it('climbs the timesteps diffusers climbs', () => {
    const s = new DdimInverseScheduler(model.scheduler, 10);
    expect(s.timesteps).toEqual(Array.from(ref(refs, 'inversion.inverse_timesteps').dataSync()));
  });

  it('inverts and regenerates as diffusers does (each step within 1e-3)', () => {
    const latents = tf.tidy(() => encodeLatents(model, nchwToNhwc(ref(refs, 'input.image')), nchwToNhwc(ref(refs, 'inversion.posterior_noise'))));
    expect(relError(nhwcToNchw(latents), ref(refs, 'inversion.image_latents'))).toBeLessThan(1e-4);
    const promptEmbeds = encodePrompts(model, [PROMPT]);
    expect(relError(promptEmbeds, ref(refs, 'inversion.prompt_embeds'))).toBeLessThan(1e-4);
    const perStep = ref(refs, 'inversion.inverted_latents_per_step');
    const loop = ddimInvert(model, { latents, promptEmbeds, guidance: 1, steps: 10 });
    let r = loop.next();
    while (!r.done) {
      expect(relError(nhwcToNchw(r.value.latents), step(perStep, r.value.step)), `inverse step ${r.value.step}`).toBeLessThan(1e-3);
      r = loop.next();
    }
    const inverted = r.value;
    expect(relError(nhwcToNchw(inverted), ref(refs, 'inversion.inverted_noise'))).toBeLessThan(1e-3);
    const regen = ref(refs, 'inversion.regen_latents_per_step');
    const back = denoise(model, { scheduler: createScheduler('ddim', model.scheduler, 10), promptEmbeds, guidance: 1, latents: inverted });
    let b = back.next();
    while (!b.done) {
      expect(relError(nhwcToNchw(b.value.latents), step(regen, b.value.step)), `regeneration step ${b.value.step}`).toBeLessThan(1e-3);
      b = back.next();
    }
    expect(relError(nhwcToNchw(b.value), ref(refs, 'inversion.regen_final_latents'))).toBeLessThan(1e-3);
    tf.dispose([latents, promptEmbeds, inverted, b.value]);
  });

  it('reads ε, v and x₀ predictions: an output that means (x̂₀, ε̂) at the lower level gives √ᾱ_t·x̂₀ + √(1−ᾱ_t)·ε̂', () => {
    for (const predictionType of ['epsilon', 'v_prediction', 'sample'] as const) {
      const config = overrideSchedulerConfig(model.scheduler, { prediction_type: predictionType });
      const inverse = new DdimInverseScheduler(config, 10);
      const t = inverse.timesteps[3]!;
      const acp = inverse.schedule.alphasCumprod;
      const [aS, aT] = [acp[t - 100]!, acp[t]!];
      tf.tidy(() => {
        const x0 = tf.randomNormal([1, 4, 4, 4], 0, 1, 'float32', 1);
        const eps = tf.randomNormal([1, 4, 4, 4], 0, 1, 'float32', 2);
        const mix = (a: number, u: tf.Tensor, v: tf.Tensor) => tf.add(tf.mul(u, Math.sqrt(a)), tf.mul(v, Math.sqrt(1 - a)));
        const xs = mix(aS, x0, eps);
        const output = predictionType === 'epsilon' ? eps : predictionType === 'sample' ? x0 : tf.sub(tf.mul(eps, Math.sqrt(aS)), tf.mul(x0, Math.sqrt(1 - aS)));
        expect(relError(inverse.step(output, t, xs), mix(aT, x0, eps)), predictionType).toBeLessThan(1e-5);
      });
    }
  });

  it('painter ddim-invert writes the noise generate --latents regenerates from', async () => {
    const input = path.join(tmp, 'input.png');
    const bytes = tf.tidy(() => Buffer.from(tf.round(tf.mul(tf.add(nchwToNhwc(ref(refs, 'input.image')), 1), 127.5)).dataSync()));
    await sharp(bytes, { raw: { width: 64, height: 64, channels: 3 } }).png().toFile(input);
    const posterior = ref(refs, 'inversion.posterior_noise');
    const noise = path.join(tmp, 'posterior.safetensors');
    await writeSafetensors(noise, { posterior: { shape: posterior.shape, data: posterior.dataSync() as Float32Array } });
    const out = path.join(tmp, 'inverted.safetensors');
    const r = await runCli(['ddim-invert', input, '--model', TINY_SD_A, '--prompt', PROMPT, '--steps', '10', '--noise', noise, '--out', out, '--json']);
    expect(r.code, r.stderr).toBe(0);
    const written = loadSafetensors(out).tensors;
    expect([...written.keys()]).toEqual(['latents']);
    const got = tf.tensor(written.get('latents')!.data as Float32Array, written.get('latents')!.shape);
    // The PNG's 8-bit pixels are the reference image's (it was made from 8-bit pixels).
    expect(relError(got, ref(refs, 'inversion.inverted_noise'))).toBeLessThan(1e-3);
    got.dispose();
    const regen = (JSON.parse(r.stdout) as { regenerate: string }).regenerate;
    expect(regen).toContain('--scheduler ddim --steps 10 --guidance 1');
    const g = await runCli(['generate', PROMPT, '--model', TINY_SD_A, '--latents', out, '--scheduler', 'ddim', '--steps', '10', '--guidance', '1', '--out', path.join(tmp, 'regen'), '--json']);
    expect(g.code, g.stderr).toBe(0);
    const file = (JSON.parse(g.stdout) as { files: { file: string }[] }).files[0]!.file;
    const { data } = await sharp(file).raw().toBuffer({ resolveWithObject: true });
    const expected = tf.tidy(() => tf.mul(decodeLatents(model, nchwToNhwc(ref(refs, 'inversion.regen_final_latents'))), 255));
    const err = tf.tidy(() => tf.max(tf.abs(tf.sub(tf.tensor4d(Float32Array.from(data), [1, 64, 64, 3]), expected))).dataSync()[0]!);
    expected.dispose();
    expect(err).toBeLessThanOrEqual(2);
  });

  it('painter edit --source redraws the photo from its inversion: the reconstruction as diffusers regenerates it, then the edit', async () => {
    const input = path.join(tmp, 'input.png');
    const noise = path.join(tmp, 'posterior.safetensors');
    expect(fs.existsSync(input) && fs.existsSync(noise)).toBe(true);
    const r = await runCli(['edit', input, 'a photo of a dog', '--source', PROMPT, '--model', TINY_SD_A, '--steps', '10', '--guidance', '1', '--noise', noise, '--out', path.join(tmp, 'p2p'), '--json']);
    expect(r.code, r.stderr).toBe(0);
    const out = JSON.parse(r.stdout) as { mode: string; files: { file: string; prompt: string }[] };
    expect(out.mode).toBe('prompt-to-prompt');
    expect(out.files.map((f) => f.prompt)).toEqual([PROMPT, 'a photo of a dog']);
    const [rec, edited] = await Promise.all(out.files.map(async (f) => Float32Array.from((await sharp(f.file).raw().toBuffer()).values())));
    const expected = tf.tidy(() => tf.mul(decodeLatents(model, nchwToNhwc(ref(refs, 'inversion.regen_final_latents'))), 255));
    const err = tf.tidy(() => tf.max(tf.abs(tf.sub(tf.tensor4d(rec!, [1, 64, 64, 3]), expected))).dataSync()[0]!);
    expected.dispose();
    expect(err).toBeLessThanOrEqual(2);
    expect(edited!.some((v, i) => v !== rec![i])).toBe(true);
  });
});

