/**
 * How a library call reports while it runs and learns that it should stop. The CLI turns these
 * into a spinner, warnings and Ctrl-C handling; a program passes what it needs (or nothing).
 */
import type { StepReport } from '../train/engine.js';

export interface Progress {
  /** What is running: "generate", "class images", "train". */
  phase: string;
  done: number;
  total: number;
  /** Short text for the current unit of work ("images 1–2/4 · step"). */
  label: string;
  elapsedMs: number;
  /** Estimated time to the end of the phase, once anything is done. */
  etaMs?: number;
}

export interface WrittenFile {
  kind: 'image' | 'sample' | 'checkpoint' | 'result';
  path: string;
  /** Generated images: the image's seed. */
  seed?: number;
  /** Training files: the step they belong to. */
  step?: number;
}

export interface Hooks {
  progress?(p: Progress): void;
  /** Every training step: loss, learning rate, gradient norm, time. */
  step?(r: StepReport): void;
  /** A file was written (complete: files are written atomically). */
  file?(f: WrittenFile): void;
  /** Something the user should know that does not stop the run. */
  warn?(message: string): void;
  /** What the run is doing ("backend wasm (…)", "learning <cat> from 5 image(s) …"). */
  info?(message: string): void;
  /** Checked between steps: true stops the run at the next safe point (training saves a checkpoint). */
  shouldStop?(): boolean;
}

/**
 * Progress of one phase with its elapsed time and ETA, measured from the phase's start and the
 * first unit it reports (a resumed run starts counting where it resumed).
 */
export function phaseClock(hooks: Hooks, phase: string): (done: number, total: number, label: string) => void {
  const start = Date.now();
  let base: number | undefined;
  return (done, total, label) => {
    base ??= Math.max(0, done - 1);
    const elapsedMs = Date.now() - start;
    const etaMs = done > base ? ((total - done) * elapsedMs) / (done - base) : undefined;
    hooks.progress?.({ phase, done, total, label, elapsedMs, etaMs });
  };
}

/** Lets pending signals, timers and I/O run between synchronous compute steps. */
export function breathe(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}
