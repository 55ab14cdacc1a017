/**
 * Compute-backend selection over the backend table (table.ts), in its order for `auto`, or
 * exactly the backend the user asked for. The chosen backend and why are reported so the CLI can
 * say it; the library keeps the active one, so commands run in one process reuse it.
 */
import * as tf from '@tensorflow/tfjs';
import { PainterError } from '../errors.js';
import { registerPainterKernels } from './kernels.js';
import { limitBufferPool, watchDeviceErrors } from './webgpu-kernels.js';
import { AUTO_ORDER, BACKEND_CHOICES, BACKENDS, type BackendChoice, type BackendName, type BackendPackage } from './table.js';
import { adapterLine, releaseWebgpu, webgpuAdapter } from './webgpu.js';

export { BACKEND_CHOICES, type BackendChoice, type BackendName } from './table.js';

export interface BackendAttempt {
  candidate: string;
  error: string;
}

export interface BackendReport {
  name: BackendName;
  /** npm package that provides it. */
  package: string;
  /** Whether the backend placed work on a GPU. */
  gpu: boolean;
  /** Candidates tried before this one and why they failed (auto only). */
  failed: BackendAttempt[];
  /** Why this backend (requested, or the first of the auto order that loaded). */
  reason: string;
}

/**
 * Why a backend package did not load, in one line. The native TensorFlow packages fail with the
 * dynamic loader's words when a CUDA/cuDNN library is missing or of another version: named, with
 * what tfjs-node-gpu needs and the GPU path that needs none of it.
 */
export function describeError(e: unknown): string {
  const err = e as NodeJS.ErrnoException;
  if (err?.code === 'ERR_MODULE_NOT_FOUND' || err?.code === 'MODULE_NOT_FOUND') return 'package not installed';
  const msg = err?.message ?? String(e);
  const lib = /(lib(?:cuda|cudart|cublas|cublasLt|cudnn|cufft|curand|cusolver|cusparse|nvinfer|tensorflow)[\w.-]*\.so[\d.]*)/.exec(msg)?.[1];
  if (lib && /cannot open shared object|not found|No such file/i.test(msg)) {
    return `the library ${lib} is missing or of another version (@tensorflow/tfjs-node-gpu 4.22 needs CUDA 11.2 and cuDNN 8.1; --backend webgpu uses the GPU without CUDA)`;
  }
  return msg.split('\n')[0]!.slice(0, 200);
}

async function activate(name: BackendName, p: BackendPackage, auto: boolean): Promise<void> {
  const skip = auto ? p.autoSkips?.() : undefined;
  if (skip) throw new Error(skip);
  await p.load();
  if (!tf.findBackendFactory(name)) throw new Error(`${p.package} loaded but registered no '${name}' backend`);
  const refusal = auto ? p.autoRefuses?.() : undefined;
  if (refusal) {
    if (name === 'webgpu') releaseWebgpu();
    throw new Error(refusal);
  }
  // setBackend resolves false (and logs) when the backend's initialisation fails.
  const ok = await tf.setBackend(name);
  if (!ok) throw new Error(`backend '${name}' failed to initialise`);
  await tf.ready();
  // The cpu backend greets Node users on first use with a banner recommending tfjs-node;
  // painter reports its backend choice itself.
  const cpu = tf.findBackend('cpu') as unknown as { firstUse?: boolean } | null;
  if (cpu && 'firstUse' in cpu) cpu.firstUse = false;
}

function usesGpu(name: BackendName): boolean {
  if (name === 'webgpu') return webgpuAdapter()?.software === false;
  const b = tf.backend() as unknown as { isUsingGpuDevice?: boolean };
  return Boolean(b.isUsingGpuDevice);
}

let active: BackendReport | undefined;

/**
 * Loads and activates a backend. `auto` takes the first that loads; an explicit request that
 * cannot load is an error naming the package and the cause.
 */
export async function selectBackend(choice: BackendChoice = 'auto'): Promise<BackendReport> {
  if (!(BACKEND_CHOICES as readonly string[]).includes(choice)) {
    throw new PainterError(`--backend ${choice}: unknown backend; choose one of ${BACKEND_CHOICES.join(', ')}`, 2);
  }
  const failed: BackendAttempt[] = [];
  const auto = choice === 'auto';
  const candidates = auto
    ? AUTO_ORDER.map((c) => ({ name: c.backend, p: BACKENDS[c.backend].packages.find((p) => p.package === c.package)! }))
    : BACKENDS[choice].packages.map((p) => ({ name: choice, p }));
  for (const { name, p } of candidates) {
    {
      try {
        await activate(name, p, auto);
      } catch (e) {
        failed.push({ candidate: p.package, error: describeError(e) });
        continue;
      }
      registerPainterKernels();
      watchDeviceErrors();
      limitBufferPool();
      const reason =
        choice === 'auto'
          ? failed.length === 0
            ? 'first choice of the auto order'
            : `auto order; not available: ${failed.map((f) => `${f.candidate} (${f.error})`).join('; ')}`
          : 'requested';
      active = { name, package: p.package, gpu: usesGpu(name), failed, reason };
      return active;
    }
  }
  const why = failed.map((f) => `${f.candidate}: ${f.error}`).join('; ');
  if (choice === 'auto') throw new PainterError(`no compute backend could be loaded: ${why}`);
  throw new PainterError(`--backend ${choice} cannot be used (${why}); ${BACKENDS[choice].installHint}, or use --backend auto`);
}

/**
 * The backend a library call computes on: the one already selected when `choice` is absent or
 * `auto` (so consecutive calls reuse it), else the one asked for.
 */
export async function useBackend(choice?: BackendChoice): Promise<BackendReport> {
  if (active && (choice === undefined || choice === 'auto' || choice === active.name) && tf.getBackend() === active.name) return active;
  return selectBackend(choice ?? 'auto');
}

/** Reads the backend choice from a flag value or PAINTER_BACKEND, validating it (a usage error). */
export function parseBackendChoice(value: string | undefined, source: string): BackendChoice {
  const v = (value ?? 'auto').toLowerCase();
  if ((BACKEND_CHOICES as readonly string[]).includes(v)) return v as BackendChoice;
  throw new PainterError(`${source}=${value}: unknown backend; choose one of ${BACKEND_CHOICES.join(', ')}`, 2);
}

/** One line: name, package, GPU, and why it was chosen. */
export function describeBackend(r: BackendReport): string {
  const adapter = webgpuAdapter();
  const gpu =
    r.name === 'tensorflow' ? (r.gpu ? ', GPU' : ', no GPU visible: running on CPU') : r.name === 'webgpu' && adapter ? `, adapter ${adapterLine(adapter)}` : '';
  return `${r.name} (${r.package}${gpu}; ${r.reason})`;
}
