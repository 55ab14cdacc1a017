/**
 * The step counter of the schedulers that count their steps (diffusers' `_step_index` and
 * `set_begin_index`): the index is found from the first timestep the loop passes, or set by
 * setBeginIndex, and then counted one up per step, so a timestep that appears twice (Heun,
 * DPM++ SDE) is not looked up again.
 */
import { indexForTimestep, timestepAt, type SchedulerKind } from './common.js';

/**
 * What a first timestep that is not one of the scheduler's means: an error, or the last step, as
 * diffusers' multistep solvers' `_init_step_index` has it.
 */
export type UnknownTimestep = 'error' | 'last';

export class StepIndex {
  private current: number | undefined;

  constructor(
    private readonly kind: SchedulerKind,
    private readonly timesteps: readonly number[],
    private readonly unknown: UnknownTimestep = 'error',
  ) {}

  /** The index of timestep t: the counted one, or, before the first step, where t stands. */
  of(t: number): number {
    if (this.current === undefined) {
      const i = indexForTimestep(this.timesteps, t);
      if (i === undefined && this.unknown === 'error') throw new Error(`${this.kind}: timestep ${t} is not one of the scheduler's timesteps`);
      this.current = i ?? this.timesteps.length - 1;
    }
    return this.current;
  }

  /** of(t) for a step(), refusing one past the last timestep. */
  forStep(t: number): number {
    const i = this.of(t);
    if (i >= this.timesteps.length) throw new Error(`${this.kind}: step() past the last timestep`);
    return i;
  }

  /** Counts the step forStep() returned as taken. */
  advance(): void {
    this.current = this.current! + 1;
  }

  /** The next step is timesteps[index] (set_begin_index). */
  begin(index: number): void {
    timestepAt(this.timesteps, index);
    this.current = index;
  }
}
