/**
 * The scheduler factory (a typed switch over the kinds) and the schedulers' public API.
 * Lives apart from common.ts so that the algorithm files can import common.ts without a cycle.
 */
import { PainterError } from '../../errors.js';
import { overrideSchedulerConfig, type Scheduler, type SchedulerConfig, type SchedulerKind } from './common.js';
import { DdimScheduler } from './ddim.js';
import { DdpmScheduler } from './ddpm.js';
import { DpmSolverMultistepScheduler } from './dpm-solver-multistep.js';
import { EulerAncestralScheduler } from './euler-ancestral.js';
import { EulerDiscreteScheduler } from './euler.js';
import { HeunDiscreteScheduler } from './heun.js';
import { PndmScheduler } from './pndm.js';
import { DpmSolverSdeScheduler } from './dpm-solver-sde.js';
import { LcmScheduler } from './lcm.js';
import { UniPcMultistepScheduler } from './unipc.js';
import type { SigmaScheduleChoice } from './sigma-schedules.js';
import { A1111_SAMPLER_NAMES } from './sampler-names.js';

export * from './common.js';
export { A1111_SAMPLER_NAMES } from './sampler-names.js';
export { addNoise, getVelocity, trainingTarget, DdpmScheduler, type BatchTimesteps } from './ddpm.js';
export { DdimScheduler, type DdimOptions } from './ddim.js';
export { PndmScheduler } from './pndm.js';
export { EulerAncestralScheduler } from './euler-ancestral.js';
export { DpmSolverMultistepScheduler, type DpmSolverKind } from './dpm-solver-multistep.js';
export { EulerDiscreteScheduler } from './euler.js';
export { HeunDiscreteScheduler } from './heun.js';
export { UniPcMultistepScheduler } from './unipc.js';
export { multistepTimesteps } from './multistep-solver.js';
export { LcmScheduler, lcmTimesteps } from './lcm.js';
export { DpmSolverSdeScheduler } from './dpm-solver-sde.js';
export {
  exponentialSigmas,
  karrasSigmas,
  sigmaToT,
  SIGMA_SCHEDULE_CHOICES,
  type SigmaScheduleChoice,
  type SigmaSpacing,
} from './sigma-schedules.js';

export const SCHEDULER_KINDS: readonly SchedulerKind[] = ['ddim', 'pndm', 'euler-a', 'dpm++2m', 'ddpm', 'euler', 'heun', 'unipc', 'lcm', 'dpm++sde', 'dpm++2m-sde'];

export interface SchedulerOptions {
  /** DDIM's η (default 0, deterministic). */
  eta?: number;
  /**
   * The σ spacing of a σ-space sampler: 'automatic' (default) keeps the config's own
   * use_karras_sigmas / use_exponential_sigmas, 'karras' and 'exponential' override them.
   */
  sigmas?: SigmaScheduleChoice;
}

/**
 * Kinds whose σ spacing can be chosen: the diffusers classes that take use_karras_sigmas (and,
 * from 0.31, use_exponential_sigmas), and painter's Euler a.
 */
export const HAS_SIGMA_SCHEDULE: Readonly<Record<SchedulerKind, boolean>> = {
  ddpm: false,
  ddim: false,
  pndm: false,
  lcm: false,
  'euler-a': true,
  'dpm++2m': true,
  unipc: true,
  'dpm++sde': true,
  euler: true,
  heun: true,
  'dpm++2m-sde': true,
};

/** A1111's names of the samplers that take a Karras or exponential σ schedule. */
export function sigmaScheduleSamplers(): string[] {
  return SCHEDULER_KINDS.filter((k) => HAS_SIGMA_SCHEDULE[k]).map((k) => A1111_SAMPLER_NAMES[k]);
}

/**
 * `config` with the σ spacing `choice` asks for. diffusers' EulerAncestralDiscreteScheduler
 * takes neither flag (from_config drops them), so 'automatic' clears them for Euler a.
 */
function withSigmaSchedule(kind: SchedulerKind, config: SchedulerConfig, choice: SigmaScheduleChoice): SchedulerConfig {
  if (choice === 'automatic') {
    return kind === 'euler-a' ? overrideSchedulerConfig(config, { use_karras_sigmas: false, use_exponential_sigmas: false }) : config;
  }
  if (!HAS_SIGMA_SCHEDULE[kind]) {
    throw new PainterError(`the ${A1111_SAMPLER_NAMES[kind]} sampler (${kind}) has no ${choice} σ schedule; choose one of ${sigmaScheduleSamplers().join(', ')}, or the automatic schedule`);
  }
  return overrideSchedulerConfig(config, { use_karras_sigmas: choice === 'karras', use_exponential_sigmas: choice === 'exponential' });
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
  config = withSigmaSchedule(kind, config, opts.sigmas ?? 'automatic');
  switch (kind) {
    case 'ddim':
      return new DdimScheduler(config, numInferenceSteps, { eta: opts.eta ?? 0 });
    case 'pndm':
      return new PndmScheduler(config, numInferenceSteps);
    case 'euler-a':
      return new EulerAncestralScheduler(config, numInferenceSteps);
    case 'dpm++2m':
    case 'dpm++2m-sde':
      return new DpmSolverMultistepScheduler(config, numInferenceSteps, kind);
    case 'ddpm':
      return new DdpmScheduler(config, numInferenceSteps);
    case 'euler':
      return new EulerDiscreteScheduler(config, numInferenceSteps);
    case 'heun':
      return new HeunDiscreteScheduler(config, numInferenceSteps);
    case 'unipc':
      return new UniPcMultistepScheduler(config, numInferenceSteps);
    case 'lcm':
      return new LcmScheduler(config, numInferenceSteps);
    case 'dpm++sde':
      return new DpmSolverSdeScheduler(config, numInferenceSteps);
  }
}
