/**
 * The library's hooks as the command line shows them: a spinner with ETA, warnings and notes on
 * stderr (notes not with --json), and Ctrl-C as the stop request. `session` wraps one command.
 */
import type { Hooks } from '../app/hooks.js';
import { watchInterrupt } from './interrupt.js';
import { createProgress, type Progress } from './progress.js';

export interface CliSession {
  hooks: Hooks;
  progress: Progress;
}

/**
 * Runs `body` with hooks wired to the terminal; `stopping` is said when Ctrl-C arrives. The
 * spinner and the signal handlers are released however `body` ends.
 */
export async function withSession<T>(json: boolean, stopping: string | undefined, body: (s: CliSession) => Promise<T>): Promise<T> {
  const progress = createProgress(json);
  const interrupt = watchInterrupt(stopping ? () => progress.warn(stopping) : undefined);
  const hooks: Hooks = {
    progress: (p) => progress.update(p),
    warn: (m) => progress.warn(m),
    info: (m) => {
      if (!json) process.stderr.write(`painter: ${m}\n`);
    },
    shouldStop: () => interrupt.requested,
  };
  try {
    return await body({ hooks, progress });
  } finally {
    interrupt.dispose();
    progress.stop();
  }
}

/** Writes a result as JSON on stdout (--json). */
export function printJson(value: unknown): void {
  process.stdout.write(JSON.stringify(value, null, 2) + '\n');
}

/** What a training command says when Ctrl-C arrives. */
export const STOPPING_TRAINING = 'stopping after this step and saving a checkpoint (Ctrl-C again to quit at once)';
