/**
 * A run's train.log (one JSON record a line, written by the training engine) as records, and the
 * timings a report shows from them.
 */

/** One line of train.log: a step's loss, rate, gradient norm and time; `val_loss` where validated. */
export interface LogRecord {
  step: number;
  loss?: number;
  lr?: number;
  gradNorm?: number;
  /** Milliseconds the step took. */
  ms?: number;
  /** The loss on held-out images at fixed timesteps and noise, at validation steps. */
  val_loss?: number;
}

const num = (v: unknown): number | undefined => (typeof v === 'number' && Number.isFinite(v) ? v : undefined);

/**
 * The records of train.log's text. A line cut by a kill mid-write, or one that is not a record,
 * is skipped; a step logged twice (a resumed run's log is cut back to its checkpoint, so only a
 * damaged log has this) keeps its last record.
 */
export function parseTrainLog(text: string): LogRecord[] {
  const byStep = new Map<number, LogRecord>();
  for (const line of text.split('\n')) {
    if (line.trim() === '') continue;
    let raw: unknown;
    try {
      raw = JSON.parse(line);
    } catch {
      continue;
    }
    if (typeof raw !== 'object' || raw === null) continue;
    const r = raw as Record<string, unknown>;
    const step = num(r['step']);
    if (step === undefined || !Number.isInteger(step)) continue;
    const record: LogRecord = { step };
    for (const key of ['loss', 'lr', 'gradNorm', 'ms', 'val_loss'] as const) {
      const v = num(r[key]);
      if (v !== undefined) record[key] = v;
    }
    byStep.set(step, { ...byStep.get(step), ...record });
  }
  return [...byStep.values()].sort((a, b) => a.step - b.step);
}

export interface Timings {
  /** The last step logged (0 before the first). */
  step: number;
  /** Steps per second over the last steps (up to RECENT). */
  stepsPerSecond?: number;
  /** Time to the last step at that speed (only for a live run with a known total). */
  etaMs?: number;
  /** The steps' own time, summed: the training's compute time without sampling and checkpoints. */
  trainingMs: number;
}

/** Steps the speed is averaged over: recent enough to follow a change, enough to be steady. */
export const RECENT = 50;

export function runTimings(records: readonly LogRecord[], totalSteps: number | undefined, live: boolean): Timings {
  const timed = records.filter((r) => r.ms !== undefined);
  const trainingMs = timed.reduce((a, r) => a + r.ms!, 0);
  const step = records.at(-1)?.step ?? 0;
  const recent = timed.slice(-RECENT);
  const recentMs = recent.reduce((a, r) => a + r.ms!, 0);
  const msPerStep = recent.length > 0 && recentMs > 0 ? recentMs / recent.length : undefined;
  const out: Timings = { step, trainingMs };
  if (msPerStep !== undefined) out.stepsPerSecond = 1000 / msPerStep;
  if (live && msPerStep !== undefined && totalSteps !== undefined && totalSteps >= step) out.etaMs = (totalSteps - step) * msPerStep;
  return out;
}
