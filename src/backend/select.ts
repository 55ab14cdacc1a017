/**
 * Compute-backend selection: tensorflow (GPU) → tensorflow (CPU) → wasm → cpu, or exactly the
 * backend the user asked for. The chosen backend and why are reported so the CLI can say it.
 */
import * as tf from '@tensorflow/tfjs';
import { PainterError } from '../errors.js';
import { registerPainterKernels } from './kernels.js';

export const BACKEND_CHOICES = ['auto', 'tensorflow', 'wasm', 'cpu'] as const;
export type BackendChoice = (typeof BACKEND_CHOICES)[number];
export type BackendName = Exclude<BackendChoice, 'auto'>;

export interface BackendAttempt {
  candidate: string;
  error: string;
}

export interface BackendReport {
  name: BackendName;
  /** npm package that provides it. */
  package: string;
  /** For tensorflow: whether TensorFlow placed work on a GPU. */
  gpu: boolean;
  /** Candidates tried before this one and why they failed (auto only). */
  failed: BackendAttempt[];
  /** Why this backend (requested, or the first of the auto order that loaded). */
  reason: string;
}

interface Candidate {
  backend: BackendName;
  package: string;
  load: () => Promise<void>;
}

// Dynamic imports through a variable so neither TypeScript nor a bundler insists that the
// optional native packages exist.
async function importOptional(pkg: string): Promise<void> {
  await import(pkg);
}

const CANDIDATES: Candidate[] = [
  { backend: 'tensorflow', package: '@tensorflow/tfjs-node-gpu', load: () => importOptional('@tensorflow/tfjs-node-gpu') },
  { backend: 'tensorflow', package: '@tensorflow/tfjs-node', load: () => importOptional('@tensorflow/tfjs-node') },
  { backend: 'wasm', package: '@tensorflow/tfjs-backend-wasm', load: () => importOptional('@tensorflow/tfjs-backend-wasm') },
  { backend: 'cpu', package: '@tensorflow/tfjs (cpu)', load: async () => {} },
];

function describeError(e: unknown): string {
  const err = e as NodeJS.ErrnoException;
  if (err?.code === 'ERR_MODULE_NOT_FOUND' || err?.code === 'MODULE_NOT_FOUND') return 'package not installed';
  const msg = err?.message ?? String(e);
  return msg.split('\n')[0]!.slice(0, 200);
}

async function activate(c: Candidate): Promise<void> {
  await c.load();
  if (!tf.findBackendFactory(c.backend)) throw new Error(`${c.package} loaded but registered no '${c.backend}' backend`);
  // setBackend resolves false (and logs) when the backend's initialisation fails.
  const ok = await tf.setBackend(c.backend);
  if (!ok) throw new Error(`backend '${c.backend}' failed to initialise`);
  await tf.ready();
  // The cpu backend greets Node users on first use with a banner recommending tfjs-node;
  // painter reports its backend choice itself.
  const cpu = tf.findBackend('cpu') as unknown as { firstUse?: boolean } | null;
  if (cpu && 'firstUse' in cpu) cpu.firstUse = false;
}

function usesGpu(): boolean {
  const b = tf.backend() as unknown as { isUsingGpuDevice?: boolean; isGPUPackage?: boolean };
  return Boolean(b.isUsingGpuDevice);
}

const INSTALL_HINT: Record<BackendName, string> = {
  tensorflow:
    'install @tensorflow/tfjs-node-gpu (CUDA GPU) or @tensorflow/tfjs-node (CPU); both download libtensorflow when installed, so the machine needs network access to its host',
  wasm: 'reinstall painter\'s dependencies (npm ci) so @tensorflow/tfjs-backend-wasm is present',
  cpu: 'reinstall painter\'s dependencies (npm ci)',
};

/**
 * Loads and activates a backend. `auto` takes the first that loads; an explicit request that
 * cannot load is an error naming the package and the cause.
 */
export async function selectBackend(choice: BackendChoice = 'auto'): Promise<BackendReport> {
  const failed: BackendAttempt[] = [];
  const candidates = choice === 'auto' ? CANDIDATES : CANDIDATES.filter((c) => c.backend === choice);
  if (candidates.length === 0) {
    throw new PainterError(`--backend ${choice}: unknown backend; choose one of ${BACKEND_CHOICES.join(', ')}`);
  }
  for (const c of candidates) {
    try {
      await activate(c);
    } catch (e) {
      failed.push({ candidate: c.package, error: describeError(e) });
      continue;
    }
    registerPainterKernels();
    const gpu = c.backend === 'tensorflow' && usesGpu();
    const reason =
      choice === 'auto'
        ? failed.length === 0
          ? 'first choice of the auto order'
          : `auto order; not available: ${failed.map((f) => `${f.candidate} (${f.error})`).join('; ')}`
        : 'requested';
    return { name: c.backend, package: c.package, gpu, failed, reason };
  }
  if (choice === 'auto') {
    throw new PainterError(`no compute backend could be loaded: ${failed.map((f) => `${f.candidate}: ${f.error}`).join('; ')}`);
  }
  const why = failed.map((f) => `${f.candidate}: ${f.error}`).join('; ');
  throw new PainterError(`--backend ${choice} cannot be used (${why}); ${INSTALL_HINT[choice]}, or use --backend auto`);
}

/** Reads the backend choice from a flag value or PAINTER_BACKEND, validating it. */
export function parseBackendChoice(value: string | undefined, source: string): BackendChoice {
  const v = (value ?? 'auto').toLowerCase();
  if ((BACKEND_CHOICES as readonly string[]).includes(v)) return v as BackendChoice;
  throw new PainterError(`${source}=${value}: unknown backend; choose one of ${BACKEND_CHOICES.join(', ')}`);
}
