/**
 * Progress on stderr (ora): a spinner on a terminal that reports its width; elsewhere (pipes, CI,
 * terminals that report 0 columns) a plain progress line every few seconds, so a long run is never
 * silent and nothing redraws. Machine-readable output never goes here.
 */
import ora, { type Ora } from 'ora';
import { formatDuration } from '../app/duration.js';
import type { Progress as ProgressReport } from '../app/hooks.js';

export { formatDuration };

export interface Progress {
  update(p: ProgressReport): void;
  succeed(text: string): void;
  fail(text: string): void;
  warn(text: string): void;
  stop(): void;
}

/** Seconds between plain progress lines when there is no spinner. */
const PLAIN_EVERY_MS = 10_000;

/** Whether stderr is a terminal a spinner can draw on (ora loops on a width of 0). */
function spinnerTerminal(): boolean {
  return process.stderr.isTTY === true && (process.stderr.columns ?? 0) > 0;
}

export function createProgress(quiet = false, plainEveryMs = PLAIN_EVERY_MS): Progress {
  const enabled = !quiet && spinnerTerminal();
  const spinner: Ora = ora({ stream: process.stderr, isEnabled: enabled, discardStdin: false });
  const start = Date.now();
  let started = false;
  let lastPlain = start;
  return {
    update(p) {
      const eta = p.etaMs !== undefined ? ` · ETA ${formatDuration(p.etaMs)}` : '';
      const text = `${p.label} ${p.done}/${p.total} · ${formatDuration(p.elapsedMs)} elapsed${eta}`;
      if (enabled) {
        spinner.text = text;
        if (!started) {
          spinner.start();
          started = true;
        }
      } else if (!quiet && Date.now() - lastPlain >= plainEveryMs) {
        lastPlain = Date.now();
        process.stderr.write(`painter: ${text}\n`);
      }
    },
    succeed(text) {
      const line = `${text} (${formatDuration(Date.now() - start)})`;
      if (enabled) spinner.succeed(line);
      else if (!quiet) process.stderr.write(`painter: ${line}\n`);
    },
    fail(text) {
      if (enabled) spinner.fail(text);
      else process.stderr.write(`painter: ${text}\n`);
    },
    warn(text) {
      // Warnings are printed even when the spinner is off (pipes, CI).
      if (spinner.isSpinning) spinner.clear();
      process.stderr.write(`painter: warning: ${text}\n`);
      if (spinner.isSpinning) spinner.render();
    },
    stop() {
      spinner.stop();
    },
  };
}
