/**
 * The one table of compute backends: which packages provide each, how it loads, whether
 * painter's fused kernels and XNNPACK's weight copies apply, how much memory it can hold and how
 * many threads it computes on. Backend selection (select.ts), the memory estimate and check,
 * `painter info` and `painter bench` read it; adding a backend is one entry here plus its kernels.
 * The table's key order is the `auto` order.
 */
import * as os from 'node:os';
import * as tf from '@tensorflow/tfjs';
import { nvidiaGpuCapacity, systemMemoryCapacity, wasmHeapCapacity, type Capacity } from './capacity.js';

export const BACKEND_NAMES = ['tensorflow', 'wasm', 'cpu'] as const;
export type BackendName = (typeof BACKEND_NAMES)[number];
export const BACKEND_CHOICES = ['auto', ...BACKEND_NAMES] as const;
export type BackendChoice = (typeof BACKEND_CHOICES)[number];

export interface BackendPackage {
  package: string;
  /** Imports the package, which registers the backend with tfjs. */
  load(): Promise<void>;
}

export interface BackendSpec {
  name: BackendName;
  /** Packages that provide it, tried in this order. */
  packages: readonly BackendPackage[];
  /**
   * painter's kernels apply: fused GroupNorm/LayerNorm (with their activations) and AdamW instead
   * of tfjs's chains of ops (one output tensor instead of several: the memory estimate counts
   * it), and convolution gradients computed with forward convolutions (backend/kernels.ts).
   */
  fusedKernels: boolean;
  /** XNNPACK keeps private packed copies of the weights it multiplies with (wasm; memory estimate). */
  packsWeights: boolean;
  /** How much memory it can hold (`gpu`: whether it placed work on a GPU). */
  capacity(gpu: boolean): Capacity;
  /** The threads it computes on, for `painter info`. */
  threads(): Promise<string>;
  /** When a command does not fit: a backend with more memory to suggest, and what it needs. */
  roomier?: { backend: BackendName; needs: string };
  /** What to do when an explicit request for it fails. */
  installHint: string;
  /** When it is the one to use (README's backend table). */
  when: string;
}

// Dynamic imports through a variable so neither TypeScript nor a bundler insists that the
// optional native packages exist.
async function importOptional(pkg: string): Promise<void> {
  await import(pkg);
}

const optional = (pkg: string): BackendPackage => ({ package: pkg, load: () => importOptional(pkg) });

export const BACKENDS: { readonly [N in BackendName]: BackendSpec & { name: N } } = {
  tensorflow: {
    name: 'tensorflow',
    packages: [optional('@tensorflow/tfjs-node-gpu'), optional('@tensorflow/tfjs-node')],
    fusedKernels: false,
    packsWeights: false,
    capacity: (gpu) => (gpu ? nvidiaGpuCapacity() : systemMemoryCapacity()),
    threads: async () => `TensorFlow thread pool (${os.cpus().length} cores)`,
    installHint:
      'install @tensorflow/tfjs-node-gpu (CUDA GPU) or @tensorflow/tfjs-node (CPU); both download libtensorflow when installed, so the machine needs network access to its host',
    when: 'native TensorFlow: the GPU package is an optional dependency (Linux with CUDA 11.2 and cuDNN 8.1; its install script downloads libtensorflow, so it needs network access to that host at install time); the CPU one you install yourself',
  },
  wasm: {
    name: 'wasm',
    packages: [optional('@tensorflow/tfjs-backend-wasm')],
    fusedKernels: true,
    packsWeights: true,
    capacity: () => wasmHeapCapacity(),
    threads: async () => {
      const wasm = (await import('@tensorflow/tfjs-backend-wasm')) as unknown as { getThreadsCount?: () => number };
      return `${wasm.getThreadsCount?.() ?? 1} (wasm; SIMD ${tf.env().getBool('WASM_HAS_SIMD_SUPPORT') ? 'on' : 'off'})`;
    },
    roomier: { backend: 'tensorflow', needs: 'needs @tensorflow/tfjs-node' },
    installHint: "reinstall painter's dependencies (npm ci) so @tensorflow/tfjs-backend-wasm is present",
    when: 'always available; SIMD, single thread; the default on machines without the native packages. Its heap is capped at 4 GiB, so full-size SD checkpoints need another backend',
  },
  cpu: {
    name: 'cpu',
    packages: [{ package: '@tensorflow/tfjs (cpu)', load: async () => {} }],
    fusedKernels: true,
    packsWeights: false,
    capacity: () => systemMemoryCapacity(),
    threads: async () => '1 (pure JavaScript)',
    installHint: "reinstall painter's dependencies (npm ci)",
    when: 'pure JavaScript fallback; slow',
  },
};

export function backendSpec(name: BackendName): BackendSpec {
  return BACKENDS[name];
}

/** The table entry of tfjs's active backend, if painter knows it. */
export function activeBackendSpec(): BackendSpec | undefined {
  const name = tf.getBackend();
  return (BACKEND_NAMES as readonly string[]).includes(name) ? BACKENDS[name as BackendName] : undefined;
}
