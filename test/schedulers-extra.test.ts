/**
 * UniPC, LCM and DPM++ SDE. UniPC and LCM against diffusers 0.30.3 (fixtures/tiny-sd-a/reference/
 * editing.*, cases sched.unipc and sched.lcm): config defaults, timesteps, sigmas, and the whole
 * text-to-image loop with the tiny model (latents per step 1e-3 relative, image within 2/255).
 * DPM++ SDE has no reference (diffusers draws its noise from a Brownian tree): it is checked on
 * problems with known answers.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { disposeModel, type StableDiffusion } from '../src/core/model.js';
import { decodeLatents, denoise } from '../src/core/pipeline/text-to-image.js';
import {
  createScheduler,
  overrideSchedulerConfig,
  parseSchedulerConfig,
  schedulerConfigFor,
  DpmSolverMultistepScheduler,
  DpmSolverSdeScheduler,
  LcmScheduler,
  UniPcMultistepScheduler,
  type Scheduler,
  type SchedulerConfig,
  type SchedulerKind,
  type SchedulerValues,
} from '../src/core/schedulers/index.js';
import { PainterError } from '../src/errors.js';
import { loadModel } from '../src/io/load-model.js';
import { parsePythonJson } from '../src/io/load-weights.js';
import { REFERENCE, TINY_SD_A, loadReference, nchwToNhwc, nhwcToNchw, ref, relError, useBackend } from './helpers.js';

interface SchedCase {
  num_inference_steps: number;
  guidance_scale: number;
  scheduler: { class: string; config: Record<string, unknown>; timesteps: number[]; sigmas?: number[]; init_noise_sigma: number };
}

const EDITING = parsePythonJson(fs.readFileSync(path.join(REFERENCE, 'editing.json'), 'utf8')) as { cases: Record<string, SchedCase> };
const CONFIG_FILE = path.join(TINY_SD_A, 'scheduler', 'scheduler_config.json');

let model: StableDiffusion;
let R: Map<string, tf.Tensor>;
let S: Map<string, tf.Tensor>;
let config: SchedulerConfig;

beforeAll(async () => {
  await useBackend();
  model = loadModel(TINY_SD_A);
  R = loadReference('editing.safetensors');
  S = loadReference('schedulers.safetensors');
  config = parseSchedulerConfig(JSON.parse(fs.readFileSync(CONFIG_FILE, 'utf8')), CONFIG_FILE);
});

afterAll(() => {
  disposeModel(model);
  tf.dispose([...R.values(), ...S.values()]);
});

const floats = (m: Map<string, tf.Tensor>, key: string): number[] => Array.from(ref(m, key).dataSync());
const configOf = (kind: SchedulerKind, o: Partial<SchedulerValues> = {}): SchedulerConfig => overrideSchedulerConfig(schedulerConfigFor(config, kind), o);

describe('config', () => {
  it('applies UniPCMultistepScheduler\'s and LCMScheduler\'s defaults to the keys the file leaves out', () => {
    for (const [kind, name] of [
      ['unipc', 'sched.unipc'],
      ['lcm', 'sched.lcm'],
    ] as const) {
      const eff = schedulerConfigFor(config, kind) as unknown as Record<string, unknown>;
      for (const [k, v] of Object.entries(EDITING.cases[name]!.scheduler.config)) {
        if (!k.startsWith('_')) expect([kind, k, eff[k]]).toEqual([kind, k, v]);
      }
    }
    // DPMSolverSDEScheduler's __init__ defaults, for the keys the tiny config leaves out.
    const sde = schedulerConfigFor(config, 'dpm++sde');
    expect([sde.timestep_spacing, sde.use_karras_sigmas, sde.noise_sampler_seed, sde.prediction_type]).toEqual(['linspace', false, null, 'epsilon']);
    expect(schedulerConfigFor(parseSchedulerConfig({}, 'c.json'), 'dpm++sde').beta_start).toBe(0.00085);
    expect(schedulerConfigFor(parseSchedulerConfig({}, 'c.json'), 'lcm').beta_schedule).toBe('scaled_linear');
  });

  it('keeps solver_type per class: DPM rewrites bh1/bh2/logrho to midpoint, UniPC midpoint/heun/logrho to bh2', () => {
    const cases: [string, SchedulerKind, string][] = [
      ['bh1', 'unipc', 'bh1'],
      ['bh2', 'unipc', 'bh2'],
      ['midpoint', 'unipc', 'bh2'],
      ['heun', 'unipc', 'bh2'],
      ['logrho', 'unipc', 'bh2'],
      ['bh1', 'dpm++2m', 'midpoint'],
      ['logrho', 'dpm++2m', 'midpoint'],
      ['heun', 'dpm++2m', 'heun'],
    ];
    for (const [given, kind, want] of cases) {
      const c = parseSchedulerConfig({ solver_type: given }, 'c.json');
      expect([given, kind, schedulerConfigFor(c, kind).solver_type]).toEqual([given, kind, want]);
      expect(createScheduler(kind, c, 10).config.solver_type).toBe(want);
    }
    // A UniPC file keeps bh1 when parsed for its own class.
    const own = parseSchedulerConfig({ _class_name: 'UniPCMultistepScheduler', solver_type: 'bh1' }, 'c.json');
    expect(own.solver_type).toBe('bh1');
  });

  it('refuses what it does not implement, naming the setting', () => {
    const bad: [SchedulerKind, Partial<SchedulerValues>, RegExp][] = [
      ['unipc', { solver_p: 'DPMSolverMultistepScheduler' }, /solver_p/],
      ['unipc', { thresholding: true }, /thresholding/],
      ['unipc', { predict_x0: false }, /predict_x0/],
      ['unipc', { lower_order_final: false }, /lower_order_final/],
      ['unipc', { use_karras_sigmas: true, use_exponential_sigmas: true }, /use_exponential_sigmas/],
      ['lcm', { thresholding: true }, /thresholding/],
      ['dpm++sde', { prediction_type: 'sample' }, /prediction_type/],
    ];
    for (const [kind, o, re] of bad) {
      expect(() => createScheduler(kind, configOf(kind, o), 10)).toThrow(PainterError);
      expect(() => createScheduler(kind, configOf(kind, o), 10)).toThrow(re);
    }
    expect(() => createScheduler('lcm', config, 51)).toThrow(/original_inference_steps/);
    expect(() => parseSchedulerConfig({ disable_corrector: [1.5], original_inference_steps: 0 }, 'c.json')).toThrow(/disable_corrector[\s\S]*original_inference_steps/);
  });
});

describe('timesteps and sigmas', () => {
  it('UniPC and LCM equal diffusers\'', () => {
    const unipc = new UniPcMultistepScheduler(config, 10);
    expect(unipc.timesteps).toEqual(EDITING.cases['sched.unipc']!.scheduler.timesteps);
    expect(unipc.timesteps).toEqual(floats(R, 'sched.unipc.timesteps'));
    expect(Array.from(unipc.sigmas)).toEqual(floats(R, 'sched.unipc.sigmas'));
    expect(unipc.initNoiseSigma).toBe(floats(R, 'sched.unipc.init_noise_sigma')[0]);
    const lcm = new LcmScheduler(config, 4);
    expect(lcm.timesteps).toEqual([999, 759, 499, 259]);
    expect(lcm.timesteps).toEqual(floats(R, 'sched.lcm.timesteps'));
    expect(lcm.initNoiseSigma).toBe(floats(R, 'sched.lcm.init_noise_sigma')[0]);
  });

  it('follow diffusers\' set_timesteps for other spacings and counts (values from numpy)', () => {
    const unipc = (o: Partial<SchedulerValues>, n: number) => new UniPcMultistepScheduler(configOf('unipc', o), n).timesteps;
    expect(unipc({ timestep_spacing: 'leading' }, 7)).toEqual([876, 751, 626, 501, 376, 251, 126]);
    expect(unipc({ timestep_spacing: 'trailing' }, 7)).toEqual([999, 856, 713, 570, 428, 285, 142]);
    const lcm = (o: Partial<SchedulerValues>, n: number) => new LcmScheduler(configOf('lcm', o), n).timesteps;
    expect(lcm({}, 1)).toEqual([999]);
    expect(lcm({}, 8)).toEqual([999, 879, 759, 639, 499, 379, 259, 139]);
    expect(lcm({ original_inference_steps: 100 }, 3)).toEqual([999, 669, 339]);
    expect(lcm({ original_inference_steps: 30 }, 7)).toEqual([989, 857, 725, 593, 428, 296, 164]);
    // A Karras UniPC: σ over the whole training range, rounded timesteps (as DPM-Solver).
    const karras = new UniPcMultistepScheduler(configOf('unipc', { use_karras_sigmas: true }), 10);
    expect(karras.timesteps).toEqual([999, 916, 815, 687, 523, 327, 146, 41, 7, 0]);
    expect(karras.sigmas[0]).toBe(karras.sigmas.reduce((m, s) => Math.max(m, s), 0));
  });

  it('DPM++ SDE interleaves each step\'s timestep with its midpoint\'s, and repeats the inner σ', () => {
    const s = new DpmSolverSdeScheduler(config, 4);
    expect(s.timesteps.length).toBe(7);
    expect(s.sigmas.length).toBe(8);
    const [s0, s1, s1b, s2, s2b, s3, s3b, zero] = Array.from(s.sigmas);
    expect([s1b, s2b, s3b, zero]).toEqual([s1, s2, s3, 0]);
    expect(s.timesteps.filter((_, i) => i % 2 === 0)).toEqual([999, 666, 333, 0]);
    // The midpoint in t = −log σ has σ_s = √(σ·σ_next); its timestep lies between the two.
    for (let i = 1; i < 7; i += 2) {
      expect(s.timesteps[i]!).toBeLessThan(s.timesteps[i - 1]!);
      expect(s.timesteps[i]!).toBeGreaterThan(s.timesteps[i + 1]!);
    }
    expect(s.initNoiseSigma).toBe(s0);
    const karras = new DpmSolverSdeScheduler(configOf('dpm++sde', { use_karras_sigmas: true }), 4);
    expect(karras.sigmas[0]).toBeCloseTo(s0!, 4);
    expect(karras.sigmas[5]).toBeCloseTo(s3!, 5);
  });
});

describe('the text-to-image loop matches diffusers', () => {
  /** Runs denoise() like the reference pipeline; returns the worst per-step latents error and the image error ×255. */
  function run(name: string, kind: SchedulerKind): { steps: number; latents: number; image: number; tensors: number } {
    const info = EDITING.cases[name]!;
    const scheduler = createScheduler(kind, config, info.num_inference_steps);
    const noise = R.get(`${name}.step_noise`);
    const before = tf.memory().numTensors;
    const prompt = ref(R, 'text.edit.prompt_embeds') as tf.Tensor3D;
    const negative = ref(R, 'text.edit.negative_prompt_embeds') as tf.Tensor3D;
    const latents = nchwToNhwc(ref(R, 'input.latents'));
    const perStep = ref(R, `${name}.latents_per_step`);
    const loop = denoise(model, {
      scheduler,
      promptEmbeds: prompt,
      negativeEmbeds: negative,
      guidance: info.guidance_scale,
      latents,
      // diffusers' draw of step i; the last LCM step draws none.
      noise: (i, shape) => (noise && i < noise.shape[0]! ? tf.tidy(() => nchwToNhwc(noise.slice(i, 1).squeeze([0]))) : tf.zeros(shape)),
    });
    let worst = 0;
    let steps = 0;
    let r = loop.next();
    while (!r.done) {
      const want = tf.tidy(() => perStep.slice(steps, 1).squeeze([0]));
      const got = tf.tidy(() => nhwcToNchw(r.value.latents));
      worst = Math.max(worst, relError(got, want));
      tf.dispose([want, got]);
      steps++;
      r = loop.next();
    }
    const final = r.value;
    const image = decodeLatents(model, final);
    const latentsErr = tf.tidy(() => relError(nhwcToNchw(final), ref(R, `${name}.final_latents`)));
    const imageErr = tf.tidy(() => tf.max(tf.abs(tf.sub(nhwcToNchw(image), ref(R, `${name}.image`)))).dataSync()[0]! * 255);
    tf.dispose([final, image, latents]);
    scheduler.dispose();
    return { steps, latents: Math.max(worst, latentsErr), image: imageErr, tensors: tf.memory().numTensors - before };
  }

  it('UniPC (bh2, order 2, 10 steps): latents 1e-3 at every step, image 2/255', () => {
    const e = run('sched.unipc', 'unipc');
    expect(e.steps).toBe(10);
    expect(e.latents).toBeLessThan(1e-3);
    expect(e.image).toBeLessThan(2);
    expect(e.tensors).toBe(0);
  });

  it('LCM (4 steps, the recorded step noise): latents 1e-3 at every step, image 2/255', () => {
    const e = run('sched.lcm', 'lcm');
    expect(e.steps).toBe(4);
    expect(e.latents).toBeLessThan(1e-3);
    expect(e.image).toBeLessThan(2);
    expect(e.tensors).toBe(0);
  });
});

describe('UniPC', () => {
  /** Runs a scheduler over the reference's fixed fake model outputs (schedulers.safetensors). */
  function fakeLoop(s: Scheduler): tf.Tensor[] {
    const outputs = tf.unstack(ref(S, 'model_outputs'));
    let x = tf.clone(ref(S, 'sample'));
    const xs: tf.Tensor[] = [];
    s.timesteps.forEach((t, i) => {
      const out = s.step(outputs[i]!, t, x);
      out.predOriginalSample?.dispose();
      x.dispose();
      x = out.prevSample;
      xs.push(tf.clone(x));
    });
    x.dispose();
    tf.dispose(outputs);
    s.dispose();
    return xs;
  }

  it('is DPM-Solver++ when the corrector is off (bh2: UniP-2 = 2M midpoint; order 1 = DDIM)', () => {
    const off = Array.from({ length: 10 }, (_, i) => i);
    for (const order of [1, 2]) {
      const before = tf.memory().numTensors;
      const uni = fakeLoop(new UniPcMultistepScheduler(configOf('unipc', { disable_corrector: off, solver_order: order }), 10));
      const dpm = fakeLoop(createScheduler('dpm++2m', overrideSchedulerConfig(config, { solver_order: order }), 10));
      const worst = Math.max(...uni.map((u, i) => relError(u, dpm[i]!)));
      expect([order, worst < 1e-5]).toEqual([order, true]);
      tf.dispose([...uni, ...dpm]);
      expect(tf.memory().numTensors).toBe(before);
    }
    // With the corrector the samples differ from step 2 on.
    const uni = fakeLoop(new UniPcMultistepScheduler(config, 10));
    const dpm = fakeLoop(createScheduler('dpm++2m', config, 10));
    expect(relError(uni[0]!, dpm[0]!)).toBeLessThan(1e-6);
    expect(relError(uni[1]!, dpm[1]!)).toBeGreaterThan(1e-3);
    tf.dispose([...uni, ...dpm]);
  });

  /**
   * Gaussian data N(0, v): the ideal model is known and the probability-flow ODE solves exactly,
   * x_t = x_T·√(α_t²v + σ_t²)/√(α_T²v + σ_T²). Returns the relative error at t = 500.
   */
  function solve(overrides: Partial<SchedulerValues>, steps: number): number {
    const v = 0.25;
    const s = new UniPcMultistepScheduler(configOf('unipc', { final_sigmas_type: 'sigma_min', ...overrides }), steps);
    const acp = s.schedule.alphasCumprod;
    const ab = (t: number): [number, number] => [Math.sqrt(acp[t]!), Math.sqrt(1 - acp[t]!)];
    let x = tf.clone(ref(S, 'sample'));
    // Integrate from t = 999 to t = 500 (a timestep for every even step count).
    const half = s.timesteps.length / 2;
    for (const t of s.timesteps.slice(0, half)) {
      const [a, sg] = ab(t);
      const next = tf.tidy(() => {
        const x0 = tf.mul(x, (a * v) / (a * a * v + sg * sg));
        const out = s.step(tf.div(tf.sub(x, tf.mul(x0, a)), sg), t, x);
        out.predOriginalSample?.dispose();
        return out.prevSample;
      });
      x.dispose();
      x = next;
    }
    expect(s.timesteps[half]).toBe(500);
    const [aT, sT] = ab(s.timesteps[0]!);
    const [a0, s0] = ab(500);
    const exact = tf.mul(ref(S, 'sample'), Math.sqrt(a0 * a0 * v + s0 * s0) / Math.sqrt(aT * aT * v + sT * sT));
    const err = relError(x, exact);
    tf.dispose([x, exact]);
    s.dispose();
    return err;
  }

  /**
   * The same errors from a float64 numpy transcription of diffusers' UniPC step, predictor and
   * corrector, on this problem at 12 and 24 steps (orders 1–3). The ε̂ form converges less
   * cleanly there than the x̂_0 form (diffusers' too): the table pins it.
   */
  const DIFFUSERS_ERRORS: Record<string, number[][]> = {
    'x0.bh1': [[0.001846, 0.0004733], [0.0002094, 2.421e-5], [1.893e-5, 2.756e-6]],
    'x0.bh2': [[0.002607, 0.0007039], [0.0005636, 7.413e-5], [7.421e-5, 3.166e-6]],
    'eps.bh1': [[0.000845, 0.0002105], [2.687e-5, 7.734e-6], [0.0002327, 2.388e-5]],
    'eps.bh2': [[0.0001427, 4.942e-5], [0.0001592, 2.45e-5], [0.000374, 3.044e-5]],
  };

  it('matches diffusers\' UniPC on Gaussian data at orders 1–3, bh1 and bh2, x̂_0 and ε̂ forms', () => {
    for (const predict_x0 of [true, false]) {
      for (const solver_type of ['bh1', 'bh2'] as const) {
        const key = `${predict_x0 ? 'x0' : 'eps'}.${solver_type}`;
        const errors = [1, 2, 3].map((solver_order) => [12, 24].map((steps) => solve({ predict_x0, solver_type, solver_order }, steps)));
        // float32 against float64: 5% of the error, or 1e-6 of the sample.
        const close = errors.every((row, o) => row.every((e, j) => Math.abs(e - DIFFUSERS_ERRORS[key]![o]![j]!) < 0.05 * e + 1e-6));
        expect([key, close, errors]).toEqual([key, true, errors]);
        if (predict_x0) {
          // UniPC-p converges at order p + 1 (UniC): halving the step divides the error by 4 at
          // p = 1 and by 8 at p = 2; p = 3 is more accurate still.
          const [e1, e2, e3] = errors as [number[], number[], number[]];
          const rates = [e1[0]! / e1[1]!, e2[0]! / e2[1]!];
          expect([key, rates[0]! > 3.5, rates[1]! > 7, e3[1]! < e2[1]!]).toEqual([key, true, true, true]);
        }
      }
    }
  });
});

describe('prediction types', () => {
  it('recover x0 from the exact ε or v of a noised sample (UniPC, LCM, DPM++ SDE, DPM++ 2M SDE)', () => {
    const sample = ref(S, 'sample');
    const noise = ref(S, 'noise');
    for (const pt of ['epsilon', 'v_prediction'] as const) {
      for (const kind of ['unipc', 'lcm', 'dpm++sde', 'dpm++2m-sde'] as const) {
        const s = createScheduler(kind, configOf(kind, { prediction_type: pt, clip_sample: false }), 4);
        // DPM++ SDE's index 1 is a midpoint; a step starts at 0.
        const index = kind === 'dpm++sde' ? 0 : 1;
        const t = s.timesteps[index]!;
        s.setBeginIndex(index);
        const before = tf.memory().numTensors;
        tf.tidy(() => {
          // VP: x_t = α·x0 + σ·ε. DPM++ SDE keeps x = x0 + σ·ε and feeds the model x/√(σ²+1),
          // which is x_t for α = 1/√(σ²+1).
          const x = s.addNoise(sample, noise, index);
          const sde = s instanceof DpmSolverSdeScheduler;
          const alpha = sde ? 1 / Math.sqrt(1 + s.sigmas[0]! ** 2) : Math.sqrt(s.schedule.alphasCumprod[t]!);
          const sigma = Math.sqrt(1 - alpha * alpha);
          const xt = tf.add(tf.mul(sample, alpha), tf.mul(noise, sigma));
          expect([kind, relError(s.scaleModelInput(x, t), xt) < 1e-5]).toEqual([kind, true]);
          const target = pt === 'epsilon' ? noise : tf.sub(tf.mul(noise, alpha), tf.mul(sample, sigma));
          const out = s.step(target, t, x, tf.zerosLike(x));
          expect([kind, pt, relError(out.predOriginalSample!, sample) < 1e-4]).toEqual([kind, pt, true]);
        });
        s.dispose();
        expect(tf.memory().numTensors).toBe(before);
      }
    }
  });
});

describe('DPM++ SDE', () => {
  const shape = [1, 128, 128, 4];

  /**
   * Runs the sampler from x_T = σ_max·z with the ideal model of `data` (standard-normal draws
   * from `seed`, or zeros): `model(x, σ)` returns x̂_0, turned into the configured output.
   */
  function sample(steps: number, model: (x: tf.Tensor, sigma: number) => tf.Tensor, seed: number | undefined, o: Partial<SchedulerValues> = {}): tf.Tensor {
    const s = new DpmSolverSdeScheduler(configOf('dpm++sde', o), steps);
    let x = tf.tidy(() => tf.mul(tf.randomNormal(shape, 0, 1, 'float32', 1), s.initNoiseSigma));
    const before = tf.memory().numTensors;
    s.timesteps.forEach((t, i) => {
      const next = tf.tidy(() => {
        const scale = s.scaleModelInput(tf.ones([1]), t).dataSync()[0]!;
        const sigma = Math.sqrt(1 / (scale * scale) - 1);
        const x0 = model(x, sigma);
        // ε = (x − x̂_0)/σ; v = α·ε − σ_t·x̂_0 with α = 1/√(σ²+1), σ_t = σ·α.
        const eps = tf.div(tf.sub(x, x0), sigma);
        const out = s.config.prediction_type === 'epsilon' ? eps : tf.sub(tf.mul(eps, scale), tf.mul(x0, sigma * scale));
        const noise = seed === undefined ? tf.zeros(shape) : tf.randomNormal(shape, 0, 1, 'float32', seed + i);
        const r = s.step(out, t, x, noise);
        r.predOriginalSample?.dispose();
        return r.prevSample;
      });
      x.dispose();
      x = next;
    });
    s.dispose();
    expect(tf.memory().numTensors).toBe(before);
    return x;
  }

  it('is deterministic without noise, and lands on x0 when the data is one point', () => {
    const target = tf.randomNormal(shape, 0, 0.5, 'float32', 7);
    const point = (): tf.Tensor => tf.clone(target);
    for (const prediction_type of ['epsilon', 'v_prediction'] as const) {
      const a = sample(6, point, undefined, { prediction_type });
      const b = sample(6, point, undefined, { prediction_type });
      expect(relError(a, b)).toBe(0);
      // With noise as well: every stage's x̂_0 is the point, and the final Euler step goes there.
      const c = sample(6, point, 100, { prediction_type });
      expect(relError(a, target)).toBeLessThan(1e-4);
      expect(relError(c, target)).toBeLessThan(1e-4);
      tf.dispose([a, b, c]);
    }
    target.dispose();
  });

  it('samples Gaussian data with the right variance (the noise of its two stages correlated as a Brownian motion\'s)', () => {
    // Data N(0, v): the ideal denoiser is x̂_0 = x·v/(v + σ²), and the SDE's samples are N(0, v).
    // The sampler's exact output variance (propagated in float64) is 0.2419 at 20 Karras steps
    // and 0.2482 at 50; with independent draws for the two stages it would be 0.1878 and 0.2191.
    const v = 0.25;
    const gaussian = (x: tf.Tensor, sigma: number): tf.Tensor => tf.mul(x, v / (v + sigma * sigma));
    for (const [steps, want] of [
      [20, 0.2419],
      [50, 0.2482],
    ] as const) {
      const x = sample(steps, gaussian, 1000, { use_karras_sigmas: true });
      const { mean, variance } = tf.moments(x);
      const [m, s2] = [mean.dataSync()[0]!, variance.dataSync()[0]!];
      // 65536 samples: the sample variance's standard error is 0.6%.
      expect([steps, Math.abs(m) < 0.01, Math.abs(s2 / want - 1) < 0.02]).toEqual([steps, true, true]);
      tf.dispose([x, mean, variance]);
    }
  });

  it('needs noise for each stage, starts only at a whole step, and frees its midpoint state', () => {
    const s = new DpmSolverSdeScheduler(config, 3);
    const x = ref(S, 'sample');
    expect(() => s.step(x, s.timesteps[0]!, x)).toThrow(/noise/);
    expect(() => s.setBeginIndex(1)).toThrow(/midpoint/);
    const before = tf.memory().numTensors;
    const zero = tf.zerosLike(x);
    const out = s.step(x, s.timesteps[0]!, x, zero);
    tf.dispose([out.prevSample, out.predOriginalSample!, zero]);
    expect(tf.memory().numTensors).toBeGreaterThan(before);
    s.dispose();
    expect(tf.memory().numTensors).toBe(before);
  });
});

describe('DPM++ 2M SDE', () => {
  it('is DPMSolverMultistepScheduler with algorithm_type sde-dpmsolver++, stepping with explicit noise', () => {
    const s = new DpmSolverMultistepScheduler(config, 10, 'dpm++2m-sde');
    expect(createScheduler('dpm++2m-sde', config, 10).kind).toBe('dpm++2m-sde');
    expect([s.kind, s.config.algorithm_type, s.needsNoise]).toEqual(['dpm++2m-sde', 'sde-dpmsolver++', true]);
    // The same timesteps and σ as DPM++ 2M.
    const ode = createScheduler('dpm++2m', config, 10);
    expect(s.timesteps).toEqual(ode.timesteps);
    const x = ref(S, 'sample');
    expect(() => s.step(x, s.timesteps[0]!, x)).toThrow(/noise/);
    // With zero noise the first step is deterministic: σ_t/σ_s·e^{−h}·x + α_t(1 − e^{−2h})·x̂_0.
    const [s0, s1] = [s.sigmas[0]!, s.sigmas[1]!];
    const [a0, a1] = [1 / Math.sqrt(s0 * s0 + 1), 1 / Math.sqrt(s1 * s1 + 1)];
    const eps = tf.unstack(ref(S, 'model_outputs'))[0]!;
    tf.tidy(() => {
      const x0 = tf.div(tf.sub(x, tf.mul(eps, s0 * a0)), a0);
      const h = Math.log(s0) - Math.log(s1);
      const want = tf.add(tf.mul(x, ((s1 * a1) / (s0 * a0)) * Math.exp(-h)), tf.mul(x0, a1 * (1 - Math.exp(-2 * h))));
      const out = s.step(eps, s.timesteps[0]!, x, tf.zerosLike(x));
      expect(relError(out.prevSample, want)).toBeLessThan(1e-5);
    });
    eps.dispose();
    s.dispose();
    // A config's own SDE algorithm under dpm++2m is refused, pointing at dpm++2m-sde.
    expect(() => createScheduler('dpm++2m', overrideSchedulerConfig(config, { algorithm_type: 'sde-dpmsolver++' }), 10)).toThrow(/dpm\+\+2m-sde/);
    expect(() => createScheduler('dpm++2m-sde', overrideSchedulerConfig(config, { solver_order: 3 }), 10)).toThrow(/solver_order/);
    expect(() => createScheduler('dpm++2m-sde', overrideSchedulerConfig(config, { algorithm_type: 'sde-dpmsolver' }), 10)).toThrow(/sigma_min/);
  });

  it('samples Gaussian data with the variance the scheme gives (exact float64 propagation)', () => {
    // Data N(0, v) in VP space: x̂_0 = x·αv/(α²v + σ_t²). The output variance of diffusers'
    // scheme, propagated exactly in float64: 0.2675 (midpoint) and 0.2872 (heun) at 20 Karras
    // steps, 0.2519 at 50 (→ v as the steps shrink).
    const v = 0.25;
    const shape = [1, 128, 128, 4];
    for (const [steps, solver_type, want] of [
      [20, 'midpoint', 0.2675],
      [20, 'heun', 0.2872],
      [50, 'midpoint', 0.2519],
    ] as const) {
      const s = new DpmSolverMultistepScheduler(overrideSchedulerConfig(config, { solver_type, use_karras_sigmas: true }), steps, 'dpm++2m-sde');
      const sigmas = s.sigmas;
      let x = tf.randomNormal(shape, 0, 1, 'float32', 5);
      s.timesteps.forEach((t, i) => {
        const next = tf.tidy(() => {
          const a = 1 / Math.sqrt(sigmas[i]! ** 2 + 1);
          const st = sigmas[i]! * a;
          const x0 = tf.mul(x, (a * v) / (a * a * v + st * st));
          const out = s.step(tf.div(tf.sub(x, tf.mul(x0, a)), st), t, x, tf.randomNormal(shape, 0, 1, 'float32', 50 + i));
          out.predOriginalSample?.dispose();
          return out.prevSample;
        });
        x.dispose();
        x = next;
      });
      s.dispose();
      const { variance } = tf.moments(x);
      const s2 = variance.dataSync()[0]!;
      expect([steps, solver_type, Math.abs(s2 / want - 1) < 0.02]).toEqual([steps, solver_type, true]);
      tf.dispose([x, variance]);
    }
  });
});
