/**
 * A training run with its report page kept up to date: index.html in the run folder is written
 * when the run starts, after each checkpoint and validation grid (and at most every
 * REFRESH_MS of steps in between), and at the end — finished, interrupted or failed. While the
 * run is live the page reloads itself; the last page does not.
 */
import * as path from 'node:path';
import { writeBytesAtomic } from '../../io/atomic.js';
import { InterruptedError } from '../../errors.js';
import { train, type EngineConfig, type EngineHooks, type TrainingTask, type TrainResult } from '../../train/engine.js';
import { readRunReport, REPORT_FILE, type RunContext } from './read-run.js';
import { runReportHtml, type RunState } from './run-page.js';

/** How often a live page reloads itself, in seconds. */
export const RELOAD_SECONDS = 10;
/** Steps also refresh the page when it is older than this (a run with rare checkpoints still shows its loss). */
const REFRESH_MS = 30_000;

/** Writes the report page of `runDir` in `state` (atomically: a browser never reads half a page). */
export async function writeRunReport(runDir: string, state: RunState, context: RunContext = {}): Promise<string> {
  const file = path.join(runDir, REPORT_FILE);
  await writeBytesAtomic(file, runReportHtml(readRunReport(runDir, state, context)));
  return file;
}

/** The engine's `train()`, with the run folder's report page kept up to date (see the file comment). */
export async function trainWithReport(
  task: TrainingTask,
  cfg: EngineConfig,
  runDir: string,
  fullConfig: unknown,
  hooks: EngineHooks = {},
  resumeFrom?: string,
): Promise<TrainResult> {
  const started = Date.now();
  const context = (): RunContext => ({ config: fullConfig, totalSteps: cfg.steps, elapsedMs: Date.now() - started });
  const live: RunState = { kind: 'live', reloadSeconds: RELOAD_SECONDS };
  let written = 0;
  let pending: Promise<void> = Promise.resolve();
  // A page that cannot be written costs the user a view, never the run: a warning, and training goes on.
  const refresh = (state: RunState, extra: Partial<RunContext> = {}): Promise<void> => {
    written = Date.now();
    pending = pending
      .then(() => writeRunReport(runDir, state, { ...context(), ...extra }))
      .then(
        () => undefined,
        (e: unknown) => hooks.warn?.(`could not write the run report ${path.join(runDir, REPORT_FILE)}: ${(e as Error).message}`),
      );
    return pending;
  };
  const reporting: EngineHooks = {
    ...hooks,
    onStep(r) {
      hooks.onStep?.(r);
      if (Date.now() - written > REFRESH_MS) void refresh(live);
    },
    file(kind, file, step) {
      hooks.file?.(kind, file, step);
      void refresh(live);
    },
  };
  await refresh(live);
  try {
    const result = await train(task, cfg, runDir, fullConfig, reporting, resumeFrom);
    await refresh({ kind: 'finished' }, { outputs: [result.output, ...(result.emaOutput ? [result.emaOutput] : [])] });
    return result;
  } catch (e) {
    await refresh(e instanceof InterruptedError ? { kind: 'interrupted', message: e.message } : { kind: 'failed', message: (e as Error)?.message ?? String(e) });
    throw e;
  }
}
