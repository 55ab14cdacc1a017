/**
 * Stage 5 beside stages 2–4. The decoder fine-tune needs only the finished VAE, so with `jobs` > 1
 * pretrainMini starts it in a second Node process (pretrain-worker.ts) while it trains the text
 * encoder and the UNet itself. tfjs's wasm backend computes on one thread, so on a 2-core machine
 * the two barely slow each other and the decoder's 25 minutes vanish from the recipe's total.
 *
 * The worker runs the very stage pretrainMini would run (same settings, seeds and folder, so the
 * same weights), and reports on stdout one JSON object per line: `{ "log": line }` or
 * `{ "stage", "report" }`, which become this process's hook calls. When it has stopped — done,
 * interrupted or failed — pretrainMini runs stage 5 itself, which reuses the finished stage or
 * resumes it from the worker's last checkpoint: a failed worker costs time, never the run.
 */
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { createInterface } from 'node:readline';
import * as tf from '@tensorflow/tfjs';
import type { PretrainHooks, PretrainSettings, PretrainStage } from './pretrain.js';
import { packageRoot, type StepReport } from '../../src/index.js';

export interface SideProcess {
  /** Resolves when the worker has exited; asks it to stop (it checkpoints) once `shouldStop()` says so. */
  finished(shouldStop?: () => boolean): Promise<void>;
  /** Asks the worker to stop with a checkpoint and waits for it. */
  stop(): Promise<void>;
}

/** One line of the worker's stdout. */
export type SideMessage = { log: string } | { stage: PretrainStage; report: StepReport };

/** The compiled worker; absent before `npm run build`. */
export function workerPath(): string {
  return path.join(packageRoot(), 'dist', 'recipes', 'painter-mini', 'pretrain-worker.js');
}

/** Starts stage 5 in a worker process, or returns undefined (and says why) when it cannot. */
export function startDecoderProcess(s: PretrainSettings, hooks: PretrainHooks): SideProcess | undefined {
  const file = workerPath();
  if (!fs.existsSync(file)) {
    hooks.log?.(`stage 5 will run after stage 4: ${file} is not built (npm run build)`);
    return undefined;
  }
  const settings: PretrainSettings = { ...s, jobs: 1, resume: true };
  const child = spawn(process.execPath, [file, JSON.stringify(settings), tf.getBackend()], { stdio: ['ignore', 'pipe', 'pipe'] });
  hooks.log?.(`stage 5 (vae decoder) starts in a second process (pid ${child.pid}) beside stages 2–4`);
  createInterface({ input: child.stdout }).on('line', (line) => {
    let m: SideMessage;
    try {
      m = JSON.parse(line) as SideMessage;
    } catch {
      hooks.log?.(line);
      return;
    }
    if ('log' in m) hooks.log?.(m.log);
    else hooks.onStep?.(m.stage, m.report);
  });
  const errors: string[] = [];
  createInterface({ input: child.stderr }).on('line', (line) => void errors.push(line));
  let failedToStart = false;
  const exited = new Promise<void>((resolve) => {
    child.on('error', (e) => {
      failedToStart = true;
      hooks.log?.(`stage 5's second process did not start (${e.message}); stage 5 will run after stage 4`);
      resolve();
    });
    // 'close': after the last line of its stdout has been read.
    child.on('close', (code, signal) => {
      if (!failedToStart && code !== 0 && code !== INTERRUPTED_EXIT) {
        const why = errors.filter((l) => l.trim()).slice(-1)[0] ?? `exit ${code ?? signal}`;
        hooks.log?.(`stage 5's second process failed (${why}); stage 5 will go on after stage 4`);
      }
      resolve();
    });
  });
  const stop = () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGINT');
  };
  return {
    async finished(shouldStop) {
      const poll = setInterval(() => shouldStop?.() && stop(), 250);
      try {
        await exited;
      } finally {
        clearInterval(poll);
      }
    },
    async stop() {
      stop();
      await exited;
    },
  };
}

/** The worker's exit code after Ctrl-C (it saved a checkpoint). */
export const INTERRUPTED_EXIT = 130;
