/**
 * Progress on stderr (ora): a spinner on a TTY, nothing but the final line otherwise, so logs
 * and pipes stay clean. Machine-readable output never goes here.
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

function seconds(ms: number): string {
  const s = ms / 1000;
  if (s < 60) return `${s.toFixed(1)}s`;
  const m = Math.floor(s / 60);
  return `${m}m${Math.round(s - m * 60)
    .toString()
    .padStart(2, '0')}s`;
}

export function createProgress(quiet = false): Progress {
  const enabled = !quiet && process.stderr.isTTY === true;
  const spinner: Ora = ora({ stream: process.stderr, isEnabled: enabled, discardStdin: false });
  const start = Date.now();
  let started = false;
  return {
    update(p) {
      const eta = p.etaMs !== undefined ? ` · ETA ${seconds(p.etaMs)}` : '';
      spinner.text = `${p.label} ${p.done}/${p.total} · ${seconds(p.elapsedMs)} elapsed${eta}`;
      if (!started && enabled) {
        spinner.start();
        started = true;
      }
    },
    succeed(text) {
      const line = `${text} (${seconds(Date.now() - start)})`;
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
