/**
 * Progress on stderr (ora): a spinner on a terminal that reports its width; elsewhere (pipes, CI,
 * terminals that report 0 columns) a plain progress line every few seconds, so a long run is never
 * silent and nothing redraws. Machine-readable output never goes here.
 */
import ora, { type Ora } from 'ora';
import type { Progress as ProgressReport } from '../app/hooks.js';

export interface Progress {
  update(p: ProgressReport): void;
  succeed(text: string): void;
  fail(text: string): void;
  warn(text: string): void;
  stop(): void;
}

/** Seconds between plain progress lines when there is no spinner. */
const PLAIN_EVERY_MS = 10_000;

/** "42.0s", "1m05s", "2h03m" (whole units rounded together, so never "1m60s"). */
export function formatDuration(ms: number): string {
  if (ms < 59_950) return `${(ms / 1000).toFixed(1)}s`;
  const total = Math.round(ms / 1000);
  if (total < 3600) return `${Math.floor(total / 60)}m${String(total % 60).padStart(2, '0')}s`;
  const minutes = Math.round(total / 60);
  return `${Math.floor(minutes / 60)}h${String(minutes % 60).padStart(2, '0')}m`;
}

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
