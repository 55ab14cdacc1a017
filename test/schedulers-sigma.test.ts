/**
 * Karras and exponential σ schedules, and the Euler and Heun samplers, against diffusers 0.30.3
 * (fixtures/tiny-sd-a/reference/editing.*, cases sched.euler, sched.euler_karras and
 * sched.dpmpp_2m_karras): timesteps, σ and init_noise_sigma, then the whole text-to-image loop on
 * the tiny model, per step (1e-3 relative) and as a decoded image (2/255). Heun and the
 * exponential spacing have no reference tensors: their defining properties are tested instead.
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
  schedulerConfigFor,
  EulerAncestralScheduler,
  EulerDiscreteScheduler,
  HeunDiscreteScheduler,
  type Scheduler,
  type SchedulerConfig,
  type SchedulerKind,
  type SigmaScheduleChoice,
} from '../src/core/schedulers/index.js';
import { fma32, npLogF32 } from '../src/core/schedulers/numerics.js';
import { PainterError } from '../src/errors.js';
import { loadModel } from '../src/io/load-model.js';
import { parsePythonJson } from '../src/io/load-weights.js';
import { REFERENCE, TINY_SD_A, loadReference, nchwToNhwc, nhwcToNchw, ref, relError, useBackend } from './helpers.js';

interface SchedInfo {
  scheduler: { class: string; config: Record<string, unknown>; timesteps: number[]; sigmas: number[]; init_noise_sigma: number };
}
const EDITING = parsePythonJson(fs.readFileSync(path.join(REFERENCE, 'editing.json'), 'utf8')) as { cases: Record<string, SchedInfo> };

/** The reference cases: how painter builds each scheduler. */
const CASES: [name: string, kind: SchedulerKind, sigmas: SigmaScheduleChoice][] = [
  ['sched.euler', 'euler', 'automatic'],
  ['sched.euler_karras', 'euler', 'karras'],
  ['sched.dpmpp_2m_karras', 'dpm++2m', 'karras'],
];

let model: StableDiffusion;
let R: Map<string, tf.Tensor>;
let config: SchedulerConfig;

beforeAll(async () => {
  await useBackend();
  model = loadModel(TINY_SD_A);
  R = loadReference('editing.safetensors');
  config = model.scheduler;
});
afterAll(() => {
  disposeModel(model);
  tf.dispose([...R.values()]);
});

/** max_i |a_i − b_i| / |b_i| over the non-zero b_i, and a_i = b_i where b_i = 0. */
function elementRelError(actual: ArrayLike<number>, expected: ArrayLike<number>): number {
  expect(actual.length).toBe(expected.length);
  let worst = 0;
  for (let i = 0; i < expected.length; i++) {
    const b = expected[i]!;
    if (b === 0) expect(actual[i]).toBe(0);
    else worst = Math.max(worst, Math.abs(actual[i]! - b) / Math.abs(b));
  }
  return worst;
}

const values = (key: string): number[] => Array.from(ref(R, key).dataSync());
const sigmasOf = (s: Scheduler): Float32Array => (s as unknown as { sigmas: Float32Array }).sigmas;

describe('σ schedules against diffusers', () => {
  it.each(CASES)('%s: effective config, timesteps, σ and init_noise_sigma', (name, kind, choice) => {
    const info = EDITING.cases[name]!.scheduler;
    const s = createScheduler(kind, config, 10, { sigmas: choice });
    // Every __init__ field diffusers' class ended up with (class defaults for what the file left out).
    for (const [k, v] of Object.entries(info.config)) {
      if (k.startsWith('_') || !(k in s.config)) continue;
      expect([k, (s.config as unknown as Record<string, unknown>)[k]]).toEqual([k, v]);
    }
    const tErr = elementRelError(s.timesteps, values(`${name}.timesteps`));
    const sErr = elementRelError(sigmasOf(s), values(`${name}.sigmas`));
    expect(tErr, `${name} timesteps`).toBeLessThanOrEqual(1e-6);
    expect(sErr, `${name} sigmas`).toBeLessThanOrEqual(1e-6);
    expect(Math.abs(s.initNoiseSigma - values(`${name}.init_noise_sigma`)[0]!)).toBeLessThanOrEqual(1e-6 * s.initNoiseSigma);
    // DPM-Solver rounds the Karras timesteps to integers; Euler feeds the fractional float32 ones.
    if (kind === 'dpm++2m') expect(s.timesteps.every(Number.isInteger)).toBe(true);
    console.info(`${name}: timesteps rel ${tErr.toExponential(2)}, sigmas rel ${sErr.toExponential(2)}`);
    s.dispose();
  });
});

describe('text-to-image loop against diffusers', () => {
  it.each(CASES)('%s: latents after every step and the decoded image', (name, kind, choice) => {
    const scheduler = createScheduler(kind, config, 10, { sigmas: choice });
    const perStep = ref(R, `${name}.latents_per_step`);
    const latents = nchwToNhwc(ref(R, 'input.latents'));
    const before = tf.memory().numTensors;
    const loop = denoise(model, {
      scheduler,
      promptEmbeds: ref(R, 'text.edit.prompt_embeds') as tf.Tensor3D,
      negativeEmbeds: ref(R, 'text.edit.negative_prompt_embeds') as tf.Tensor3D,
      guidance: 7.5,
      latents,
    });
    let worst = 0;
    let steps = 0;
    let r = loop.next();
    while (!r.done) {
      const { latents: after } = r.value;
      const err = tf.tidy(() => relError(nhwcToNchw(after), perStep.slice([steps], [1]).reshape(perStep.shape.slice(1))));
      expect(err, `${name} step ${steps}`).toBeLessThan(1e-3);
      worst = Math.max(worst, err);
      steps++;
      r = loop.next();
    }
    expect(steps).toBe(10);
    const final = r.value;
    const image = decodeLatents(model, final);
    const finalErr = tf.tidy(() => relError(nhwcToNchw(final), ref(R, `${name}.final_latents`)));
    const imageErr = tf.tidy(() => tf.max(tf.abs(tf.sub(nhwcToNchw(image), ref(R, `${name}.image`)))).dataSync()[0]! * 255);
    expect(finalErr).toBeLessThan(1e-3);
    expect(imageErr).toBeLessThanOrEqual(2);
    tf.dispose([final, image]);
    scheduler.dispose();
    expect(tf.memory().numTensors).toBe(before);
    latents.dispose();
    console.info(`${name}: latents rel ≤ ${worst.toExponential(2)} per step, final ${finalErr.toExponential(2)}, image ${imageErr.toFixed(3)}/255`);
  });
});

describe('choosing the σ schedule', () => {
  it('overrides the config flags, and refuses samplers without σ spacing by name', () => {
    const karras = createScheduler('euler', config, 10, { sigmas: 'karras' });
    expect(karras.config.use_karras_sigmas).toBe(true);
    expect(karras.config.use_exponential_sigmas).toBe(false);
    const withFlag = overrideSchedulerConfig(config, { use_karras_sigmas: true });
    expect(createScheduler('euler', withFlag, 10).timesteps).toEqual(karras.timesteps);
    // 'exponential' overrides a config's Karras flag.
    expect(createScheduler('euler', withFlag, 10, { sigmas: 'exponential' }).config.use_karras_sigmas).toBe(false);
    for (const kind of ['ddim', 'pndm', 'ddpm'] as const) {
      expect(() => createScheduler(kind, config, 10, { sigmas: 'karras' })).toThrow(PainterError);
      expect(() => createScheduler(kind, config, 10, { sigmas: 'exponential' })).toThrow(new RegExp(`${kind}.*exponential`));
      expect(() => createScheduler(kind, config, 10, { sigmas: 'automatic' })).not.toThrow();
    }
    expect(() => createScheduler('ddim', config, 10, { sigmas: 'karras' })).toThrow(/DDIM/);
    const both = overrideSchedulerConfig(config, { use_karras_sigmas: true, use_exponential_sigmas: true });
    expect(() => new EulerDiscreteScheduler(both, 10)).toThrow(PainterError);
  });

  it('Euler a: Karras σ as Euler spaces them; automatic ignores the flags as from_config drops them', () => {
    const euler = createScheduler('euler', config, 10, { sigmas: 'karras' });
    const ancestral = createScheduler('euler-a', config, 10, { sigmas: 'karras' });
    expect(ancestral.timesteps).toEqual(euler.timesteps);
    expect(Array.from(sigmasOf(ancestral))).toEqual(Array.from(sigmasOf(euler)));
    expect(ancestral.initNoiseSigma).toBe(euler.initNoiseSigma);
    const flagged = overrideSchedulerConfig(config, { use_karras_sigmas: true });
    expect(createScheduler('euler-a', flagged, 10).timesteps).toEqual(createScheduler('euler-a', config, 10).timesteps);
    expect(new EulerAncestralScheduler(flagged, 10).timesteps).toEqual(euler.timesteps);
  });
});

describe('numerics', () => {
  it('np.log of float32 follows numpy\'s SIMD kernel bit for bit (σ → t reads its table)', () => {
    const bits = (xs: number[]): number[] => Array.from(new Uint32Array(Float32Array.from(xs).buffer));
    const fromBits = (bs: number[]): number[] => Array.from(new Float32Array(Uint32Array.from(bs).buffer));
    // Training σ where numpy's log is 1 ulp off the correctly rounded one, and a few others.
    const x = fromBits([0x3daad9cd, 0x3ddb890c, 0x3e2b5472, 0x3e3d7c8a, 0x3f000000, 0x40400000, 0x0da24260, 0x7149f2ca]);
    const numpy = [0xc01ef70c, 0xc00eeb35, 0xbfe4d94a, 0xbfd7f4aa, 0xbf317218, 0x3f8c9f54, 0xc28a27b5, 0x428a27b5];
    expect(bits(x.map(npLogF32))).toEqual(numpy);
    expect(bits(x.map((v) => Math.log(v))).slice(0, 4)).not.toEqual(numpy.slice(0, 4));
    // A float32 FMA rounds once: a·b + c = 1 + 2⁻²⁴ + 2⁻⁶⁰ lies just above the float32 halfway point
    // 1 + 2⁻²⁴, which the double sum rounds to (and a float32 rounding of it then ties to even, to 1).
    const [a, b, c] = [2 ** -12 + 2 ** -30, -(2 ** -12 - 2 ** -30), 1 + 2 ** -23];
    expect(Math.fround(a * b + c)).toBe(1);
    expect(fma32(a, b, c)).toBe(1 + 2 ** -23);
    expect(fma32(a, -b, 1)).toBe(1);
  });
});

describe('exponential σ', () => {
  it.each(['euler', 'euler-a', 'heun', 'dpm++2m'] as const)('%s: log-linear from σ_max to σ_min, then 0', (kind) => {
    const s = createScheduler(kind, config, 10, { sigmas: 'exponential' });
    const all = Array.from(sigmasOf(s));
    // Heun repeats every inner σ; the distinct levels are the schedule.
    const sigmas = kind === 'heun' ? all.filter((v, i) => i === 0 || v !== all[i - 1]) : all;
    const euler = values('sched.euler.sigmas');
    expect(sigmas.length).toBe(11);
    expect(sigmas[10]).toBe(0);
    expect(sigmas[0]).toBeCloseTo(euler[0]!, 5);
    expect(sigmas[9]).toBeCloseTo(euler[9]!, 7);
    const logStep = Math.log(sigmas[0]! / sigmas[9]!) / 9;
    for (let i = 0; i < 9; i++) {
      expect(sigmas[i + 1]!).toBeLessThan(sigmas[i]!);
      expect(Math.abs(Math.log(sigmas[i]! / sigmas[i + 1]!) - logStep)).toBeLessThan(1e-5);
    }
    // σ → t maps the ends onto the training range's ends, monotonically.
    const ts = kind === 'heun' ? s.timesteps.filter((v, i) => i === 0 || v !== s.timesteps[i - 1]) : s.timesteps;
    expect(ts.length).toBe(10);
    expect(ts[0]).toBe(999);
    expect(ts[9]).toBe(0);
    for (let i = 0; i < 9; i++) expect(ts[i + 1]!).toBeLessThan(ts[i]!);
    if (kind === 'dpm++2m') expect(ts.every(Number.isInteger)).toBe(true);
    s.dispose();
  });
});

describe('Heun', () => {
  it('interleaves the timesteps and σ as diffusers (2n − 1 evaluations), on Euler\'s schedule', () => {
    for (const [choice, name] of [['automatic', 'sched.euler'], ['karras', 'sched.euler_karras']] as const) {
      const s = createScheduler('heun', config, 10, { sigmas: choice });
      const t = values(`${name}.timesteps`);
      const sg = values(`${name}.sigmas`);
      expect(s.timesteps).toEqual([t[0], ...t.slice(1).flatMap((v) => [v, v])].map(Math.fround));
      expect(elementRelError(sigmasOf(s), [sg[0]!, ...sg.slice(1, -1).flatMap((v) => [v, v]), 0])).toBeLessThanOrEqual(1e-6);
      expect(s.timesteps.length).toBe(19);
      expect(s.initNoiseSigma).toBeCloseTo(values(`${name}.init_noise_sigma`)[0]!, 5);
      s.dispose();
    }
    // HeunDiscreteScheduler's own defaults (beta range, linspace) for keys the file leaves out.
    const heun = schedulerConfigFor({ ...config, _use_default_values: ['beta_start', 'beta_end', 'timestep_spacing', 'clip_sample'] }, 'heun');
    expect([heun.beta_start, heun.beta_end, heun.timestep_spacing, heun.clip_sample]).toEqual([0.00085, 0.012, 'linspace', false]);
  });

  it('with a constant-ε model lands exactly on x_0 + σ·ε after every step', () => {
    const x0 = tf.randomNormal([1, 8, 8, 4], 0, 1, 'float32', 1);
    const eps = tf.randomNormal([1, 8, 8, 4], 0, 1, 'float32', 2);
    const s = new HeunDiscreteScheduler(config, 6);
    const sigmas = sigmasOf(s);
    const before = tf.memory().numTensors;
    let x = tf.tidy(() => tf.add(x0, tf.mul(eps, s.initNoiseSigma)));
    s.timesteps.forEach((t, i) => {
      const input = s.scaleModelInput(x, t);
      const out = s.step(eps, t, x);
      // After a corrector (odd i) or the final Euler step the sample is at σ = sigmas[i + 1].
      if (i % 2 === 1 || i === s.timesteps.length - 1) {
        const exact = tf.tidy(() => tf.add(x0, tf.mul(eps, sigmas[i + 1]!)));
        expect(relError(out.prevSample, exact)).toBeLessThan(1e-5);
        exact.dispose();
      }
      tf.dispose([input, x, out.predOriginalSample!]);
      x = out.prevSample;
    });
    expect(relError(x, x0)).toBeLessThan(1e-5);
    x.dispose();
    s.dispose();
    expect(tf.memory().numTensors).toBe(before);
    tf.dispose([x0, eps]);
  });

  /**
   * For Gaussian data x_0 ~ N(0, v) the ideal denoiser is x̂_0 = x·v/(v + σ²), and the
   * probability-flow ODE dx/dσ = (x − x̂_0)/σ solves exactly: x(σ) = x(σ_T)·√(v + σ²)/√(v + σ_T²).
   * Doubling the steps (nested linspace grids) must halve Euler's error at σ_0 (first order) and
   * quarter Heun's (second order); a wrong corrector σ or slope average stays first order.
   */
  it('is second order: its error quarters when the steps double, where Euler\'s halves', () => {
    const v = 0.25;
    const solve = (s: Scheduler, evaluations: number): number => {
      const sigmas = sigmasOf(s);
      let x = tf.randomNormal([1, 8, 8, 4], 0, s.initNoiseSigma, 'float32', 3);
      const exact = tf.mul(x, Math.sqrt(v + sigmas[evaluations]! ** 2) / Math.sqrt(v + s.initNoiseSigma ** 2));
      for (let i = 0; i < evaluations; i++) {
        const t = s.timesteps[i]!;
        const sigma = sigmas[i]!;
        const next = tf.tidy(() => {
          const eps = tf.mul(x, sigma / (v + sigma * sigma)); // (x − x̂_0)/σ
          const out = s.step(eps, t, x);
          out.predOriginalSample?.dispose();
          return out.prevSample;
        });
        x.dispose();
        x = next;
      }
      const err = relError(x, exact);
      tf.dispose([x, exact]);
      s.dispose();
      return err;
    };
    // n steps: n − 1 intervals down to σ_0 (the last step, to σ = 0, has no exact reference).
    const euler = [21, 41].map((n) => solve(new EulerDiscreteScheduler(config, n), n - 1));
    const heun = [21, 41].map((n) => solve(new HeunDiscreteScheduler(config, n), 2 * (n - 1)));
    console.info(`Gaussian ODE to σ_0, 20 → 40 steps: Euler ${euler.map((e) => e.toExponential(2))}, Heun ${heun.map((e) => e.toExponential(2))}`);
    expect(euler[0]! / euler[1]!).toBeGreaterThan(1.6);
    expect(euler[0]! / euler[1]!).toBeLessThan(2.4);
    expect(heun[0]! / heun[1]!).toBeGreaterThan(3.3);
    expect(heun[1]!).toBeLessThan(euler[1]! / 10);
  });

  it('adds noise at the level of a timestep and starts at a begin index', () => {
    const s = createScheduler('heun', config, 10);
    const x0 = tf.ones([1, 2, 2, 4]);
    const noise = tf.fill([1, 2, 2, 4], 2);
    const noised = s.addNoise(x0, noise, 4);
    expect(noised.dataSync()[0]).toBeCloseTo(1 + 2 * sigmasOf(s)[4]!, 5);
    s.setBeginIndex(4);
    const scaled = s.scaleModelInput(x0, s.timesteps[4]!);
    expect(scaled.dataSync()[0]).toBeCloseTo(1 / Math.sqrt(sigmasOf(s)[4]! ** 2 + 1), 6);
    expect(() => s.addNoise(x0, noise, 19)).toThrow(RangeError);
    tf.dispose([x0, noise, noised, scaled]);
    s.dispose();
  });
});

describe('prediction types (Euler, Heun)', () => {
  it('recover x_0 from the exact ε, v or x_0 target of x = x_0 + σ·ε', () => {
    const x0 = tf.randomNormal([1, 4, 4, 4], 0, 1, 'float32', 4);
    const eps = tf.randomNormal([1, 4, 4, 4], 0, 1, 'float32', 5);
    for (const pt of ['epsilon', 'v_prediction', 'sample'] as const) {
      for (const kind of ['euler', 'heun'] as const) {
        const s = createScheduler(kind, overrideSchedulerConfig(config, { prediction_type: pt }), 10);
        const sigma = sigmasOf(s)[1]!;
        const alpha = 1 / Math.sqrt(sigma * sigma + 1);
        tf.tidy(() => {
          const x = tf.add(x0, tf.mul(eps, sigma));
          // v = α·ε − σ·α·x_0 (Salimans & Ho 2022, with α_t = 1/√(σ²+1), σ_t = σ·α_t)
          const target = pt === 'epsilon' ? eps : pt === 'sample' ? x0 : tf.sub(tf.mul(eps, alpha), tf.mul(x0, sigma * alpha));
          s.setBeginIndex(1);
          const out = s.step(target, s.timesteps[1]!, x);
          expect(relError(out.predOriginalSample!, x0), `${kind} ${pt}`).toBeLessThan(1e-5);
        });
        s.dispose();
      }
    }
    tf.dispose([x0, eps]);
  });

  it('v-prediction: a few steps give finite latents that differ from ε-prediction', () => {
    const output = tf.randomNormal([1, 4, 4, 4], 0, 1, 'float32', 6);
    const start = tf.randomNormal([1, 4, 4, 4], 0, 1, 'float32', 7);
    const run = (kind: SchedulerKind, pt: 'epsilon' | 'v_prediction'): Float32Array => {
      const s = createScheduler(kind, overrideSchedulerConfig(config, { prediction_type: pt }), 5, { sigmas: 'karras' });
      let x = tf.mul(start, s.initNoiseSigma);
      for (const t of s.timesteps.slice(0, 3)) {
        const out = s.step(output, t, x, s.needsNoise ? tf.zerosLike(x) : undefined);
        tf.dispose([x, out.predOriginalSample ?? []].flat());
        x = out.prevSample;
      }
      const data = x.dataSync() as Float32Array;
      x.dispose();
      s.dispose();
      return data;
    };
    for (const kind of ['euler', 'heun', 'euler-a', 'dpm++2m'] as const) {
      const e = run(kind, 'epsilon');
      const v = run(kind, 'v_prediction');
      expect(v.every(Number.isFinite), kind).toBe(true);
      expect(Math.max(...v.map((a, i) => Math.abs(a - e[i]!))), kind).toBeGreaterThan(1e-2);
    }
    tf.dispose([output, start]);
  });
});

describe('Euler config variants', () => {
  it('final σ_min, log-linear σ and continuous timesteps as diffusers builds them', () => {
    const table = values('sched.euler.sigmas');
    const sigmaMin = new EulerDiscreteScheduler(overrideSchedulerConfig(config, { final_sigmas_type: 'sigma_min' }), 10);
    expect(sigmaMin.sigmas[10]).toBe(Math.fround(table[9]!)); // σ_0 of the table = the last spaced σ
    const logLinear = new EulerDiscreteScheduler(overrideSchedulerConfig(config, { interpolation_type: 'log_linear' }), 10);
    // n + 1 σ log-spaced over the training range, then 0; the timesteps stay the spaced ones.
    expect(logLinear.sigmas.length).toBe(12);
    expect(logLinear.timesteps).toEqual(values('sched.euler.timesteps'));
    expect(logLinear.sigmas[0]).toBeCloseTo(table[0]!, 4);
    const continuous = new EulerDiscreteScheduler(overrideSchedulerConfig(config, { timestep_type: 'continuous', prediction_type: 'v_prediction' }), 10);
    expect(continuous.timesteps.map((t, i) => t - 0.25 * Math.log(continuous.sigmas[i]!)).every((d) => Math.abs(d) < 1e-6)).toBe(true);
    const bounded = new EulerDiscreteScheduler(overrideSchedulerConfig(config, { use_karras_sigmas: true, sigma_min: 0.1, sigma_max: 10 }), 10);
    expect(bounded.sigmas[0]).toBeCloseTo(10, 5);
    expect(bounded.sigmas[9]).toBeCloseTo(0.1, 6);
  });
});
