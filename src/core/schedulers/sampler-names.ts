/**
 * Samplers by AUTOMATIC1111's names. A1111 (since 1.9) names the algorithm ("DPM++ 2M") and the
 * noise schedule ("Schedule type: Karras") apart; older versions wrote both in one name
 * ("DPM++ 2M Karras"), which is still read. painter's own short names stay as aliases.
 *
 * A1111's schedule types for the schedules a diffusers config gives (its sd_schedulers.py):
 * Karras and Exponential are the same formulas; for the 'automatic' schedule the config's
 * timestep_spacing decides the label — 'leading' (with steps_offset) is A1111's "DDIM"
 * schedule, 'trailing' its "Simple", and 'linspace' its "Uniform" for the Euler family (timesteps
 * from T−1 down to 0) or "SGM Uniform" for the multistep solvers (T−1 down, the last step left
 * out).
 */
import type { SchedulerKind, TimestepSpacing } from './common.js';
import { SIGMA_SCHEDULE_CHOICES, type SigmaScheduleChoice } from './sigma-schedules.js';

export type SigmaSchedule = SigmaScheduleChoice;

export const SIGMA_SCHEDULES = SIGMA_SCHEDULE_CHOICES;

/** The names AUTOMATIC1111 shows for these samplers (its infotext "Sampler:"). */
export const A1111_SAMPLER_NAMES: Readonly<Record<SchedulerKind, string>> = {
  'dpm++2m': 'DPM++ 2M',
  'dpm++sde': 'DPM++ SDE',
  'dpm++2m-sde': 'DPM++ 2M SDE',
  'euler-a': 'Euler a',
  euler: 'Euler',
  heun: 'Heun',
  lcm: 'LCM',
  ddim: 'DDIM',
  pndm: 'PLMS',
  unipc: 'UniPC',
  ddpm: 'DDPM',
};

interface SamplerName {
  kind: SchedulerKind;
  /** painter's short names (case-insensitive). */
  aliases: readonly string[];
  /** A1111 runs it as a k-diffusion sampler, which takes (and records) a schedule type. */
  scheduled: boolean;
}

/** The samplers `--scheduler` offers (DDPM, the training scheduler, is too slow to offer). */
const NAMES: readonly (SamplerName & { label: string })[] = (
  [
    { kind: 'dpm++2m', aliases: ['dpm++2m'], scheduled: true },
    { kind: 'dpm++sde', aliases: ['dpm++sde'], scheduled: true },
    { kind: 'dpm++2m-sde', aliases: ['dpm++2m-sde'], scheduled: true },
    { kind: 'euler-a', aliases: ['euler-a', 'euler_a'], scheduled: true },
    { kind: 'euler', aliases: ['euler'], scheduled: true },
    { kind: 'heun', aliases: ['heun'], scheduled: true },
    { kind: 'lcm', aliases: ['lcm'], scheduled: true },
    { kind: 'ddim', aliases: ['ddim'], scheduled: false },
    { kind: 'pndm', aliases: ['pndm', 'plms'], scheduled: false },
    { kind: 'unipc', aliases: ['unipc'], scheduled: false },
  ] as const satisfies readonly SamplerName[]
).map((n) => ({ ...n, label: A1111_SAMPLER_NAMES[n.kind] }));

/** A1111's names before 1.9 for these samplers with their schedule. */
const OLD_NAMES = ['DPM++ 2M Karras', 'DPM++ SDE Karras', 'DPM++ 2M SDE Karras', 'DPM++ 2M SDE Exponential'];

/** Every name `--scheduler` accepts: A1111's labels, its old names, then painter's aliases. */
export const SAMPLER_NAMES: readonly string[] = [...NAMES.map((n) => n.label), ...OLD_NAMES, ...NAMES.flatMap((n) => n.aliases)];

const SCHEDULE_LABELS: Readonly<Record<Exclude<SigmaSchedule, 'automatic'>, string>> = { karras: 'Karras', exponential: 'Exponential' };

/** A1111's label of a sampler kind ("DPM++ 2M"). */
export function samplerLabel(kind: SchedulerKind): string {
  return A1111_SAMPLER_NAMES[kind];
}

/**
 * A sampler name as A1111 or painter writes it: a label ("Euler a"), an alias ("euler-a"), or
 * an old A1111 label with its schedule ("DPM++ 2M Karras"). Undefined when unknown.
 */
export function parseSamplerName(name: string): { kind: SchedulerKind; schedule?: SigmaSchedule } | undefined {
  const text = name.trim();
  const exact = NAMES.find((n) => n.label === text) ?? NAMES.find((n) => n.label.toLowerCase() === text.toLowerCase() || n.aliases.includes(text.toLowerCase()));
  if (exact) return { kind: exact.kind };
  for (const [schedule, suffix] of Object.entries(SCHEDULE_LABELS) as [SigmaSchedule, string][]) {
    if (!text.toLowerCase().endsWith(` ${suffix.toLowerCase()}`)) continue;
    const base = parseSamplerName(text.slice(0, -suffix.length - 1));
    if (base && !base.schedule) return { kind: base.kind, schedule };
  }
  return undefined;
}

/** The multistep solvers space 'linspace' timesteps without the last one (diffusers' DPM/UniPC). */
const SKIPS_LAST: ReadonlySet<SchedulerKind> = new Set<SchedulerKind>(['dpm++2m', 'dpm++2m-sde', 'unipc']);

/**
 * The "Schedule type" A1111 writes for a sampler run with `schedule` on a config whose
 * timestep_spacing is `spacing`; undefined where A1111 records none (its DDIM, PLMS, UniPC).
 */
export function scheduleTypeLabel(kind: SchedulerKind, schedule: SigmaSchedule, spacing: TimestepSpacing): string | undefined {
  if (schedule !== 'automatic') return SCHEDULE_LABELS[schedule];
  if (!NAMES.find((n) => n.kind === kind)?.scheduled) return undefined;
  switch (spacing) {
    case 'leading':
      return 'DDIM';
    case 'trailing':
      return 'Simple';
    case 'linspace':
      return SKIPS_LAST.has(kind) ? 'SGM Uniform' : 'Uniform';
  }
}

/** A1111's "Schedule type" back to a painter schedule; the spacing labels are the config's own ('automatic'). */
export function parseScheduleType(label: string): SigmaSchedule | undefined {
  const l = label.trim().toLowerCase();
  if (l === 'karras') return 'karras';
  if (l === 'exponential') return 'exponential';
  if (['automatic', 'uniform', 'sgm uniform', 'ddim', 'simple'].includes(l)) return 'automatic';
  return undefined;
}
