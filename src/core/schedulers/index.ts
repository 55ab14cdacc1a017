/**
 * The scheduler factory (a typed switch over the kinds) and the schedulers' public API.
 * Lives apart from common.ts so that the algorithm files can import common.ts without a cycle.
 */
import type { Scheduler, SchedulerConfig, SchedulerKind } from './common.js';
import { DdimScheduler } from './ddim.js';
import { DdpmScheduler } from './ddpm.js';
import { DpmSolverMultistepScheduler } from './dpm-solver-multistep.js';
import { EulerAncestralScheduler } from './euler-ancestral.js';
import { PndmScheduler } from './pndm.js';

export * from './common.js';
export { addNoise, getVelocity, trainingTarget, DdpmScheduler, type BatchTimesteps } from './ddpm.js';
export { DdimScheduler, type DdimOptions } from './ddim.js';
export { PndmScheduler } from './pndm.js';
export { EulerAncestralScheduler } from './euler-ancestral.js';
export { DpmSolverMultistepScheduler } from './dpm-solver-multistep.js';

/** The names AUTOMATIC1111 shows for these samplers (its infotext "Sampler:"). */
export const A1111_SAMPLER_NAMES: Record<SchedulerKind, string> = { ddim: 'DDIM', pndm: 'PLMS', 'euler-a': 'Euler a', 'dpm++2m': 'DPM++ 2M', ddpm: 'DDPM' };

export const SCHEDULER_KINDS: readonly SchedulerKind[] = ['ddim', 'pndm', 'euler-a', 'dpm++2m', 'ddpm'];

export interface SchedulerOptions {
  /** DDIM's η (default 0, deterministic). */
  eta?: number;
}

/**
 * A scheduler of `kind` over `numInferenceSteps` steps. `config` may have been parsed for any
 * kind: keys its file left out take `kind`'s class defaults, as `Cls.from_config` does.
 */
export function createScheduler(
  kind: SchedulerKind,
  config: SchedulerConfig,
  numInferenceSteps: number,
  opts: SchedulerOptions = {},
): Scheduler {
  switch (kind) {
    case 'ddim':
      return new DdimScheduler(config, numInferenceSteps, { eta: opts.eta ?? 0 });
    case 'pndm':
      return new PndmScheduler(config, numInferenceSteps);
    case 'euler-a':
      return new EulerAncestralScheduler(config, numInferenceSteps);
    case 'dpm++2m':
      return new DpmSolverMultistepScheduler(config, numInferenceSteps);
    case 'ddpm':
      return new DdpmScheduler(config, numInferenceSteps);
  }
}
