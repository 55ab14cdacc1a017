/**
 * Parity of painter's schedulers with diffusers 0.30.3 (fixtures/tiny-sd-a/reference/schedulers.*):
 * noise schedule, add_noise/get_velocity, timesteps and sigmas, and every step of each
 * scheduler's loop fed the reference's fixed fake model outputs.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  addNoise,
  createScheduler,
  getVelocity,
  noiseSchedule,
  overrideSchedulerConfig,
  parseSchedulerConfig,
  schedulerConfigFor,
  trainingTarget,
  DdimScheduler,
  DpmSolverMultistepScheduler,
  EulerAncestralScheduler,
  type Scheduler,
  type SchedulerConfig,
  type SchedulerKind,
  type SchedulerValues,
} from '../src/core/schedulers/index.js';
import { npArange, npInterp, npLinspace, roundHalfEven, torchLinspaceF32 } from '../src/core/schedulers/numerics.js';
import { PainterError } from '../src/errors.js';
import { REFERENCE, TINY_SD_A, loadReference, ref, relError, useBackend } from './helpers.js';

const TOL = 1e-4;
const CONFIG_FILE = path.join(TINY_SD_A, 'scheduler', 'scheduler_config.json');

/** Python's json.dumps writes -Infinity (lambda_min_clipped), which JSON.parse rejects. */
function readPythonJson(file: string): Record<string, unknown> {
  return JSON.parse(fs.readFileSync(file, 'utf8').replace(/-Infinity/g, '-1e999')) as Record<string, unknown>;
}

function arrayRelError(actual: ArrayLike<number>, expected: ArrayLike<number>): number {
  expect(actual.length).toBe(expected.length);
  let num = 0;
  let den = 0;
  for (let i = 0; i < expected.length; i++) {
    num = Math.max(num, Math.abs(actual[i]! - expected[i]!));
    den = Math.max(den, Math.abs(expected[i]!));
  }
  return num / Math.max(den, 1e-30);
}

let R: Map<string, tf.Tensor>;
let info: Record<string, unknown>;
let config: SchedulerConfig;
let sample: tf.Tensor;
let modelOutputs: tf.Tensor[];

const rows = (key: string): tf.Tensor[] => tf.unstack(ref(R, key));
const ints = (key: string): number[] => Array.from(ref(R, key).dataSync());

beforeAll(async () => {
  await useBackend();
  R = loadReference('schedulers.safetensors');
  info = readPythonJson(path.join(REFERENCE, 'schedulers.json'));
  config = parseSchedulerConfig(JSON.parse(fs.readFileSync(CONFIG_FILE, 'utf8')), CONFIG_FILE);
  sample = ref(R, 'sample');
  modelOutputs = rows('model_outputs');
});

afterAll(() => {
  for (const t of R.values()) t.dispose();
  for (const t of modelOutputs) t.dispose();
});

interface LoopResult {
  prev: number;
  x0: number;
  scaled: number;
}

/**
 * Runs a scheduler's loop from `x`, comparing each step with the reference rows; returns the
 * worst relative errors and asserts that no tensor outlives the loop.
 */
function runLoop(
  s: Scheduler,
  x: tf.Tensor,
  expected: { prev: tf.Tensor[]; x0?: tf.Tensor[]; scaled?: tf.Tensor[]; noise?: tf.Tensor[] },
): LoopResult {
  const worst = { prev: 0, x0: 0, scaled: 0 };
  const before = tf.memory().numTensors;
  const counts: number[] = [];
  let cur = tf.clone(x);
  s.timesteps.forEach((t, i) => {
    const input = s.scaleModelInput(cur, t);
    if (expected.scaled) worst.scaled = Math.max(worst.scaled, relError(input, expected.scaled[i]!));
    // As the pipeline does: the model sees the scaled input, the step gets the unscaled sample.
    const out = s.step(modelOutputs[i]!, t, cur, expected.noise?.[i]);
    worst.prev = Math.max(worst.prev, relError(out.prevSample, expected.prev[i]!));
    if (expected.x0) {
      expect(out.predOriginalSample).toBeDefined();
      worst.x0 = Math.max(worst.x0, relError(out.predOriginalSample!, expected.x0[i]!));
    }
    out.predOriginalSample?.dispose();
    input.dispose();
    cur.dispose();
    cur = out.prevSample;
    counts.push(tf.memory().numTensors);
  });
  expect(counts.length).toBe(expected.prev.length);
  // Multistep history fills within the first steps; after that the count is flat.
  for (let i = 5; i < counts.length; i++) expect(counts[i]).toBe(counts[i - 1]);
  cur.dispose();
  s.dispose();
  expect(tf.memory().numTensors).toBe(before);
  tf.dispose([...expected.prev, ...(expected.x0 ?? []), ...(expected.scaled ?? []), ...(expected.noise ?? [])]);
  return worst;
}

describe('scheduler config', () => {
  it('applies each class default to the keys scheduler_config.json leaves out (from_config rule)', () => {
    const expectations: [SchedulerKind, string][] = [
      ['ddpm', 'DDPMScheduler_config'],
      ['ddim', 'DDIMScheduler_config'],
      ['pndm', 'PNDMScheduler_config'],
      ['euler-a', 'EulerAncestralDiscreteScheduler_config'],
      ['dpm++2m', 'DPMSolverMultistepScheduler_config'],
    ];
    for (const [kind, key] of expectations) {
      const eff = schedulerConfigFor(config, kind);
      const want = info[key] as Record<string, unknown>;
      for (const [k, v] of Object.entries(want)) {
        if (k.startsWith('_')) continue;
        expect([kind, k, (eff as unknown as Record<string, unknown>)[k]]).toEqual([kind, k, v]);
      }
    }
    expect(schedulerConfigFor(config, 'ddim').timestep_spacing).toBe('leading');
    expect(schedulerConfigFor(config, 'euler-a').timestep_spacing).toBe('linspace');
    expect(schedulerConfigFor(config, 'dpm++2m').timestep_spacing).toBe('linspace');
    expect(config.steps_offset).toBe(1);
  });

  it('honours a source config\'s own _use_default_values', () => {
    const src = info['source_config'] as Record<string, unknown>;
    const c = parseSchedulerConfig({ ...src, timestep_spacing: 'trailing' }, 'x.json', 'euler-a');
    expect(c.timestep_spacing).toBe('linspace');
    const explicit = parseSchedulerConfig({ ...src, timestep_spacing: 'trailing', _use_default_values: [] }, 'x.json', 'euler-a');
    expect(explicit.timestep_spacing).toBe('trailing');
    expect(schedulerConfigFor(explicit, 'ddim').timestep_spacing).toBe('trailing');
  });

  it('reports every bad field at once, naming the file', () => {
    const bad = { beta_schedule: 'cubic', steps_offset: -1, prediction_type: 'x0', clip_sample: 'no' };
    expect(() => parseSchedulerConfig(bad, '/m/scheduler_config.json')).toThrow(PainterError);
    try {
      parseSchedulerConfig(bad, '/m/scheduler_config.json');
    } catch (e) {
      const msg = (e as Error).message;
      for (const field of ['beta_schedule', 'steps_offset', 'prediction_type', 'clip_sample']) expect(msg).toContain(field);
      expect(msg).toContain('/m/scheduler_config.json');
    }
    expect(() => parseSchedulerConfig([1], 'a.json')).toThrow(/a\.json/);
    expect(() => parseSchedulerConfig({ trained_betas: [0.1, 0.2] }, 'a.json')).toThrow(/trained_betas/);
  });

  it('rejects what it does not implement with a PainterError, and bad step counts', () => {
    const disk = JSON.parse(fs.readFileSync(CONFIG_FILE, 'utf8')) as object;
    const c = (o: Record<string, unknown>): SchedulerConfig => parseSchedulerConfig({ ...disk, ...o }, 'c.json');
    expect(() => createScheduler('pndm', c({ skip_prk_steps: false }), 10)).toThrow(/skip_prk_steps/);
    expect(() => createScheduler('dpm++2m', c({ use_lu_lambdas: true }), 10)).toThrow(/use_lu_lambdas/);
    expect(() => createScheduler('dpm++2m', c({ algorithm_type: 'sde-dpmsolver++' }), 10)).toThrow(PainterError);
    expect(() => createScheduler('ddim', c({ thresholding: true }), 10)).toThrow(PainterError);
    expect(() => createScheduler('euler-a', c({ prediction_type: 'sample' }), 10)).toThrow(PainterError);
    expect(() => createScheduler('ddim', config, 0)).toThrow(PainterError);
    expect(() => createScheduler('ddim', config, 1001)).toThrow(PainterError);
    expect(() => overrideSchedulerConfig(config, { timestep_spacing: 'even' as 'leading' })).toThrow(/timestep_spacing/);
  });
});

describe('noise schedule', () => {
  it('betas and alphas_cumprod equal DDPMScheduler\'s float32 tensors', () => {
    const s = noiseSchedule(schedulerConfigFor(config, 'ddpm'));
    const betas = ref(R, 'ddpm.betas').dataSync();
    const acp = ref(R, 'ddpm.alphas_cumprod').dataSync();
    expect(arrayRelError(s.betas, betas)).toBeLessThan(1e-7);
    expect(arrayRelError(s.alphasCumprod, acp)).toBeLessThan(1e-7);
    // In fact bit-identical: torch's AVX2 linspace and double-accumulated cumprod are emulated.
    expect(Array.from(s.betas)).toEqual(Array.from(betas));
    expect(Array.from(s.alphasCumprod)).toEqual(Array.from(acp));
  });

  it('squaredcos_cap_v2 and zero-terminal-SNR rescaling match diffusers\' formulas (values from numpy)', () => {
    const idx = [0, 1, 500, 998, 999];
    const cos = noiseSchedule(parseSchedulerConfig({ beta_schedule: 'squaredcos_cap_v2' }, 'c.json')).betas;
    const wantCos = [4.128422369831242e-5, 4.614175122696906e-5, 0.003155691549181938, 0.7499994039535522, 0.9990000128746033];
    expect(idx.map((i) => cos[i])).toEqual(wantCos.map(Math.fround));
    const rescaled = noiseSchedule(overrideSchedulerConfig(config, { rescale_betas_zero_snr: true }));
    const wantRescaled = [0.0008500218391418457, 0.0009172558784484863, 0.0055304765701293945, 0.751136302947998, 1.0];
    expect(idx.map((i) => rescaled.betas[i])).toEqual(wantRescaled);
    expect(rescaled.alphasCumprod[999]).toBe(0);
    const pinned = noiseSchedule(overrideSchedulerConfig(config, { rescale_betas_zero_snr: true }), { finiteTerminalSigma: true });
    expect(pinned.alphasCumprod[999]).toBe(2 ** -24);
  });

  it('numpy/torch helpers follow numpy (halves to even, arange fill rule) and torch linspace', () => {
    expect([0.5, 1.5, 2.5, 832.5, 499.5, -2.5, 3.4].map(roundHalfEven)).toEqual([0, 2, 2, 832, 500, -2, 3]);
    expect(npLinspace(0, 999, 3)).toEqual([0, 499.5, 999]);
    expect(npArange(10, 0, -2.5)).toEqual([10, 7.5, 5, 2.5]);
    expect(npInterp(2.5, [0, 1, 2, 3], [0, 10, 20, 40])).toBe(30);
    expect(npInterp(7, [0, 1, 2, 3], [0, 10, 20, 40])).toBe(40);
    expect(Array.from(torchLinspaceF32(0, 1, 5))).toEqual([0, 0.25, 0.5, 0.75, 1]);
  });
});

describe('DDPM: add_noise, get_velocity, training target', () => {
  it('matches add_noise for per-element timesteps, given as numbers or as an int tensor', () => {
    const s = noiseSchedule(schedulerConfigFor(config, 'ddpm'));
    const noise = ref(R, 'noise');
    for (const [tKey, outKey] of [
      ['ddpm.add_noise.timesteps', 'ddpm.add_noise.out'],
      ['ddpm.add_noise.timesteps_b', 'ddpm.add_noise.out_b'],
    ] as const) {
      const fromNumbers = addNoise(s, sample, noise, ints(tKey));
      const fromTensor = addNoise(s, sample, noise, ref(R, tKey));
      expect(relError(fromNumbers, ref(R, outKey))).toBeLessThan(1e-6);
      expect(relError(fromTensor, ref(R, outKey))).toBeLessThan(1e-6);
      tf.dispose([fromNumbers, fromTensor]);
    }
    expect(ints('ddpm.add_noise.timesteps')).toEqual([0, 999]);
  });

  it('matches get_velocity and picks the target by prediction_type', () => {
    const s = noiseSchedule(schedulerConfigFor(config, 'ddpm'));
    const noise = ref(R, 'noise');
    const t = ints('ddpm.get_velocity.timesteps');
    const before = tf.memory().numTensors;
    const v = getVelocity(s, sample, noise, t);
    expect(relError(v, ref(R, 'ddpm.get_velocity.out'))).toBeLessThan(1e-6);
    const vTarget = trainingTarget('v_prediction', s, sample, noise, t);
    const eTarget = trainingTarget('epsilon', s, sample, noise, t);
    const xTarget = trainingTarget('sample', s, sample, noise, t);
    expect(relError(vTarget, v)).toBe(0);
    expect(relError(eTarget, noise)).toBe(0);
    expect(relError(xTarget, sample)).toBe(0);
    tf.dispose([v, vTarget, eTarget, xTarget]);
    expect(tf.memory().numTensors).toBe(before);
  });

  it('steps by the posterior mean and variance of DDPM eq. 6-7 (float64 check)', () => {
    const c = overrideSchedulerConfig(config, { clip_sample: false });
    const s = createScheduler('ddpm', c, 10);
    expect(s.timesteps).toEqual([901, 801, 701, 601, 501, 401, 301, 201, 101, 1]);
    const acp = s.schedule.alphasCumprod;
    const noise = ref(R, 'noise');
    for (const [t, prevT] of [[501, 401], [1, -1]] as const) {
      const out = s.step(modelOutputs[0]!, t, sample, noise);
      const aT = acp[t]!;
      const aPrev = prevT >= 0 ? acp[prevT]! : 1;
      const beta = 1 - aT / aPrev;
      const x0 = (sample.sub(modelOutputs[0]!.mul(Math.sqrt(1 - aT))).div(Math.sqrt(aT)));
      const mean = x0.mul((Math.sqrt(aPrev) * beta) / (1 - aT)).add(sample.mul((Math.sqrt(1 - beta) * (1 - aPrev)) / (1 - aT)));
      const want = mean.add(noise.mul(Math.sqrt(((1 - aPrev) / (1 - aT)) * beta)));
      expect(relError(out.prevSample, want)).toBeLessThan(1e-5);
      expect(relError(out.predOriginalSample!, x0)).toBeLessThan(1e-5);
      tf.dispose([out.prevSample, out.predOriginalSample!, x0, mean, want]);
    }
    s.dispose();
  });
});

describe('prediction types', () => {
  it('recover x0 from the exact ε, v or x0 target of a noised sample (DDIM, DDPM, DPM++, Euler ancestral)', () => {
    const noise = ref(R, 'noise');
    for (const pt of ['epsilon', 'v_prediction', 'sample'] as const) {
      const c = overrideSchedulerConfig(config, { prediction_type: pt, clip_sample: false });
      const schedulers: Scheduler[] = [createScheduler('ddim', c, 10), createScheduler('ddpm', c, 10), createScheduler('dpm++2m', c, 10)];
      if (pt !== 'sample') schedulers.push(createScheduler('euler-a', c, 10));
      for (const s of schedulers) {
        const t = s.timesteps[1]!;
        tf.tidy(() => {
          const xt = addNoise(s.schedule, sample, noise, t);
          const target = trainingTarget(pt, s.schedule, sample, noise, t);
          // Euler works in σ-space, x = x_t/√ᾱ_t; its model input x/√(σ²+1) is x_t again.
          const x = s.kind === 'euler-a' ? tf.div(xt, Math.sqrt(s.schedule.alphasCumprod[t]!)) : xt;
          expect(relError(s.scaleModelInput(x, t), xt)).toBeLessThan(1e-5);
          const out = s.step(target, t, x, tf.zerosLike(x));
          expect([s.kind, pt, relError(out.predOriginalSample!, sample) < 1e-4]).toEqual([s.kind, pt, true]);
        });
        s.dispose();
      }
    }
  });
});

describe('DPM-Solver orders', () => {
  /**
   * For Gaussian data N(0, v) the ideal ε-model is known in closed form and the probability-flow
   * ODE solves exactly: x_t = x_T·√(α_t²v + σ_t²)/√(α_T²v + σ_T²). Each solver order must land
   * closer to it than the order below (a wrong higher-order coefficient breaks this).
   */
  function solve(overrides: Partial<SchedulerValues>, steps: number): number {
    const v = 0.25;
    const c = overrideSchedulerConfig(config, { final_sigmas_type: 'sigma_min', ...overrides });
    const s = createScheduler('dpm++2m', c, steps);
    const acp = s.schedule.alphasCumprod;
    const ab = (t: number): [number, number] => [Math.sqrt(acp[t]!), Math.sqrt(1 - acp[t]!)];
    let x = tf.clone(sample);
    // Integrate from t = 999 to t = 500 (a timestep for every even step count), where the steps
    // in λ are even enough to show each order's convergence rate.
    const half = s.timesteps.length / 2;
    for (const t of s.timesteps.slice(0, half)) {
      const [a, sg] = ab(t);
      const next = tf.tidy(() => {
        const x0 = tf.mul(x, (a * v) / (a * a * v + sg * sg));
        const eps = tf.div(tf.sub(x, tf.mul(x0, a)), sg);
        const out = s.step(eps, t, x);
        out.predOriginalSample?.dispose();
        return out.prevSample;
      });
      x.dispose();
      x = next;
    }
    const [aT, sT] = ab(s.timesteps[0]!);
    expect(s.timesteps[half]).toBe(500);
    const [a0, s0] = ab(500);
    const exact = tf.mul(sample, Math.sqrt(a0 * a0 * v + s0 * s0) / Math.sqrt(aT * aT * v + sT * sT));
    const err = relError(x, exact);
    tf.dispose([x, exact]);
    s.dispose();
    return err;
  }

  it('converge at each order\'s rate, for DPM-Solver++ and DPM-Solver, midpoint and heun', () => {
    for (const algorithm_type of ['dpmsolver++', 'dpmsolver'] as const) {
      for (const solver_type of ['midpoint', 'heun'] as const) {
        const [e1, e2, e3] = [1, 2, 3].map((solver_order) =>
          [20, 40].map((steps) => solve({ algorithm_type, solver_type, solver_order }, steps)),
        ) as [number[], number[], number[]];
        const rates = [e1[0]! / e1[1]!, e2[0]! / e2[1]!];
        // Halving the step: error /2 at first order, /4 at second; third order (started by a
        // first- and a second-order step) is more accurate still.
        const ok = rates[0]! > 1.8 && rates[1]! > 3.5 && e3[0]! < e2[0]! && e3[1]! < e2[1]!;
        expect([algorithm_type, solver_type, ok, rates, e3]).toEqual([algorithm_type, solver_type, true, rates, e3]);
      }
    }
  });
});

describe('timesteps and sigmas', () => {
  it('match the reference for every scheduler at 10 (and DDIM at 50) steps', () => {
    const ddim = createScheduler('ddim', config, 10);
    expect(ddim.timesteps).toEqual([901, 801, 701, 601, 501, 401, 301, 201, 101, 1]);
    expect(ddim.timesteps).toEqual(ints('ddim.timesteps_10'));
    expect(createScheduler('ddim', config, 50).timesteps).toEqual(ints('ddim.timesteps_50'));
    expect(createScheduler('pndm', config, 10).timesteps).toEqual(ints('pndm.timesteps_10'));
    expect(createScheduler('pndm', config, 10).timesteps).toEqual([901, 801, 801, 701, 601, 501, 401, 301, 201, 101, 1]);

    const ea = new EulerAncestralScheduler(config, 10);
    expect(ea.timesteps).toEqual(Array.from(ref(R, 'euler_a.timesteps_10').dataSync()));
    expect(ea.timesteps).toEqual(info['euler_a.timesteps_10']);
    expect(Array.from(ea.sigmas)).toEqual(Array.from(ref(R, 'euler_a.sigmas_10').dataSync()));
    expect(ea.initNoiseSigma).toBe(ref(R, 'euler_a.init_noise_sigma').dataSync()[0]);

    const dpm = new DpmSolverMultistepScheduler(config, 10);
    expect(dpm.timesteps).toEqual(ints('dpm.timesteps_10'));
    expect(dpm.timesteps).toEqual([999, 899, 799, 699, 599, 500, 400, 300, 200, 100]);
    expect(Array.from(dpm.sigmas)).toEqual(Array.from(ref(R, 'dpm.sigmas_10').dataSync()));
    expect(dpm.initNoiseSigma).toBe(1);
  });

  // Expected values from diffusers' set_timesteps lines run in numpy (steps_offset = 1).
  const NUMPY: Record<string, number[]> = {
    'ddim.linspace.7': [999, 832, 666, 500, 333, 166, 0],
    'pndm.linspace.7': [999, 832, 832, 666, 500, 333, 166, 0],
    'euler-a.linspace.7': [999.0, 832.5, 666.0, 499.5, 333.0, 166.5, 0.0],
    'dpm++2m.linspace.7': [999, 856, 714, 571, 428, 285, 143],
    'ddim.leading.7': [853, 711, 569, 427, 285, 143, 1],
    'pndm.leading.7': [853, 711, 711, 569, 427, 285, 143, 1],
    'euler-a.leading.7': [853.0, 711.0, 569.0, 427.0, 285.0, 143.0, 1.0],
    'dpm++2m.leading.7': [876, 751, 626, 501, 376, 251, 126],
    'ddim.trailing.7': [999, 856, 713, 570, 428, 285, 142],
    'pndm.trailing.7': [999, 856, 856, 713, 570, 428, 285, 142],
    'euler-a.trailing.7': [999.0, 856.0, 713.0, 570.0, 428.0, 285.0, 142.0],
    'dpm++2m.trailing.7': [999, 856, 713, 570, 428, 285, 142],
    'euler-a.linspace.20': [
      999.0, 946.4210815429688, 893.8421020507812, 841.26318359375, 788.6842041015625, 736.1052856445312, 683.5263061523438,
      630.9473876953125, 578.368408203125, 525.7894897460938, 473.2105407714844, 420.631591796875, 368.0526428222656,
      315.47369384765625, 262.8947448730469, 210.3157958984375, 157.73684692382812, 105.15789794921875, 52.578948974609375, 0.0,
    ],
    'ddim.linspace.25': [
      999, 957, 916, 874, 832, 791, 749, 708, 666, 624, 583, 541, 500, 458, 416, 375, 333, 291, 250, 208, 166, 125, 83, 42, 0,
    ],
    'dpm++2m.linspace.25': [
      999, 959, 919, 879, 839, 799, 759, 719, 679, 639, 599, 559, 519, 480, 440, 400, 360, 320, 280, 240, 200, 160, 120, 80, 40,
    ],
    'ddim.trailing.30': [
      999, 966, 932, 899, 866, 832, 799, 766, 732, 699, 666, 632, 599, 566, 532, 499, 466, 432, 399, 366, 332, 299, 266, 232, 199,
      166, 132, 99, 66, 32,
    ],
    'pndm.trailing.30': [
      999, 966, 966, 932, 899, 866, 832, 799, 766, 732, 699, 666, 632, 599, 566, 532, 499, 466, 432, 399, 366, 332, 299, 266, 232,
      199, 166, 132, 99, 66, 32,
    ],
  };

  it('follow numpy for every spacing, including halves and fractional Euler timesteps', () => {
    for (const [key, want] of Object.entries(NUMPY)) {
      const [kind, spacing, n] = key.split('.') as [SchedulerKind, SchedulerConfig['timestep_spacing'], string];
      const c = overrideSchedulerConfig(config, { timestep_spacing: spacing });
      expect([key, createScheduler(kind, c, Number(n)).timesteps]).toEqual([key, want]);
    }
  });

  it('interpolate sigmas at fractional timesteps (np.interp)', () => {
    const ea = new EulerAncestralScheduler(config, 7);
    const want = [
      14.614645004272461, 5.948917865753174, 2.9183082580566406, 1.6155833005905151, 0.9323583245277405, 0.4935535192489624,
      0.029167532920837402, 0.0,
    ];
    expect(Array.from(ea.sigmas)).toEqual(want);
    const dpm = new DpmSolverMultistepScheduler(config, 7);
    expect(Array.from(dpm.sigmas)).toEqual([
      14.614645004272461, 6.668572425842285, 3.5282044410705566, 2.061671495437622, 1.2762356996536255, 0.7900615334510803,
      0.4403095841407776, 0.0,
    ]);
    const leading = new EulerAncestralScheduler(overrideSchedulerConfig(config, { timestep_spacing: 'leading' }), 10);
    const sMax = leading.sigmas[0]!;
    expect(leading.initNoiseSigma).toBe(Math.fround(Math.sqrt(Math.fround(sMax * sMax) + 1)));
  });
});

describe('step loops against the reference', () => {
  it('DDIM (eta 0): prev_sample and pred_original_sample at every step', () => {
    const worst = runLoop(createScheduler('ddim', config, 10), sample, {
      prev: rows('ddim.steps10.prev_sample'),
      x0: rows('ddim.steps10.pred_original_sample'),
    });
    expect(worst.prev).toBeLessThan(TOL);
    expect(worst.x0).toBeLessThan(TOL);
  });

  it('DDIM with eta 0.5 and explicit variance noise', () => {
    const s = new DdimScheduler(config, 10, { eta: 0.5 });
    expect(s.needsNoise).toBe(true);
    const t = ints('ddim.eta05.timestep')[0]!;
    expect(t).toBe(s.timesteps[3]);
    const out = s.step(modelOutputs[0]!, t, sample, ref(R, 'ddim.eta05.variance_noise'));
    expect(relError(out.prevSample, ref(R, 'ddim.eta05.prev_sample'))).toBeLessThan(TOL);
    tf.dispose([out.prevSample, out.predOriginalSample!]);
    expect(() => s.step(modelOutputs[0]!, t, sample)).toThrow(/noise/);
  });

  it('PNDM (PLMS, skip_prk_steps): prev_sample at every one of the 11 steps', () => {
    const worst = runLoop(createScheduler('pndm', config, 10), sample, { prev: rows('pndm.steps10.prev_sample') });
    expect(worst.prev).toBeLessThan(TOL);
  });

  it('Euler ancestral: scaled input, prev_sample and pred_original_sample with the recorded noise', () => {
    const s = createScheduler('euler-a', config, 10);
    const start = tf.mul(sample, s.initNoiseSigma);
    expect(relError(start, ref(R, 'euler_a.steps.start_sample'))).toBeLessThan(1e-6);
    const worst = runLoop(s, start, {
      prev: rows('euler_a.steps.prev_sample'),
      x0: rows('euler_a.steps.pred_original_sample'),
      scaled: rows('euler_a.steps.scaled_model_input'),
      noise: rows('euler_a.steps.noise'),
    });
    start.dispose();
    expect(worst.scaled).toBeLessThan(TOL);
    expect(worst.prev).toBeLessThan(TOL);
    expect(worst.x0).toBeLessThan(TOL);
  });

  it('DPM-Solver++ 2M: prev_sample at every step (multistep state carried)', () => {
    const s = createScheduler('dpm++2m', config, 10);
    const worst = runLoop(s, sample, { prev: rows('dpm.steps.prev_sample') });
    expect(worst.prev).toBeLessThan(TOL);
  });

  it('keeps multistep history alive when each step runs inside the caller\'s tf.tidy', () => {
    for (const [kind, key] of [
      ['pndm', 'pndm.steps10.prev_sample'],
      ['dpm++2m', 'dpm.steps.prev_sample'],
    ] as const) {
      const s = createScheduler(kind, config, 10);
      const before = tf.memory().numTensors;
      let x = tf.clone(sample);
      s.timesteps.forEach((t, i) => {
        const next = tf.tidy(() => s.step(modelOutputs[i]!, t, s.scaleModelInput(x, t)).prevSample);
        x.dispose();
        x = next;
      });
      const want = tf.tidy(() => ref(R, key).slice(s.timesteps.length - 1, 1).squeeze([0]));
      expect(relError(x, want)).toBeLessThan(TOL);
      tf.dispose([x, want]);
      s.dispose();
      expect(tf.memory().numTensors).toBe(before);
    }
  });

  it('refuses to step after dispose', () => {
    const s = createScheduler('pndm', config, 10);
    s.dispose();
    expect(() => s.step(modelOutputs[0]!, 901, sample)).toThrow(/dispose/);
  });
});
