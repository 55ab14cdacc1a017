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
import { adapterLine, linuxGpuDevices, loadWebgpu, webgpuAdapter } from './webgpu.js';
import { installWasmThreads, threadSetting } from './wasm-threads.js';

export const BACKEND_NAMES = ['tensorflow', 'webgpu', 'wasm', 'cpu'] as const;
export type BackendName = (typeof BACKEND_NAMES)[number];
export const BACKEND_CHOICES = ['auto', ...BACKEND_NAMES] as const;
export type BackendChoice = (typeof BACKEND_CHOICES)[number];

export interface BackendPackage {
  package: string;
  /** Imports the package, which registers the backend with tfjs. */
  load(): Promise<void>;
  /** Before loading, in the `auto` order: why it cannot be the one (no GPU on the machine), or undefined. */
  autoSkips?(): string | undefined;
  /** After loading: why `auto` must pass it by (a software GPU adapter), or undefined. */
  autoRefuses?(): string | undefined;
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
      'install @tensorflow/tfjs-node-gpu (CUDA GPU) or @tensorflow/tfjs-node (CPU); both download libtensorflow when installed, so the machine needs network access to its host; --backend webgpu runs on a GPU without either',
    when: 'native TensorFlow: the GPU package is an optional dependency (Linux with CUDA 11.2 and cuDNN 8.1; its install script downloads libtensorflow, so it needs network access to that host at install time); the CPU one you install yourself',
  },
  wasm: {
    name: 'wasm',
    packages: [
      {
        package: '@tensorflow/tfjs-backend-wasm',
        // Its threaded build on every core (--threads, PAINTER_THREADS), as wasm-threads.ts starts it.
        load: async () => {
          await importOptional('@tensorflow/tfjs-backend-wasm');
          installWasmThreads(threadSetting());
        },
      },
    ],
    fusedKernels: true,
    packsWeights: true,
    capacity: () => wasmHeapCapacity(),
    threads: async () => {
      const wasm = (await import('@tensorflow/tfjs-backend-wasm')) as unknown as { getThreadsCount?: () => number };
      const threaded = tf.env().getBool('WASM_HAS_MULTITHREAD_SUPPORT') ? 'threaded build' : 'single-threaded build';
      return `${wasm.getThreadsCount?.() ?? 1} (wasm, ${threaded}; SIMD ${tf.env().getBool('WASM_HAS_SIMD_SUPPORT') ? 'on' : 'off'})`;
    },
    roomier: { backend: 'tensorflow', needs: 'needs @tensorflow/tfjs-node' },
    installHint: "reinstall painter's dependencies (npm ci) so @tensorflow/tfjs-backend-wasm is present",
    when: 'always available; SIMD, on every core (--threads, PAINTER_THREADS); the default on machines without the native packages. Its heap is capped at 4 GiB, so full-size SD checkpoints need another backend',
  },
  webgpu: {
    name: 'webgpu',
    packages: [
      {
        package: 'webgpu + @tensorflow/tfjs-backend-webgpu',
        load: loadWebgpu,
        autoSkips: () => (linuxGpuDevices() === false ? 'no GPU device on this machine (no /dev/dri/renderD*, no /dev/nvidia*)' : undefined),
        autoRefuses: () => {
          const a = webgpuAdapter();
          return a?.software ? `a software adapter (${a.description}); only --backend webgpu chooses it` : undefined;
        },
      },
    ],
    fusedKernels: false,
    packsWeights: false,
    capacity: () => {
      const a = webgpuAdapter();
      if (a?.software) return { ...systemMemoryCapacity(), what: 'free system memory, where the software adapter keeps its buffers' };
      const nvidia = nvidiaGpuCapacity();
      return nvidia.bytes !== undefined ? nvidia : { what: 'GPU memory, which WebGPU does not report (PAINTER_MEMORY_LIMIT sets it)' };
    },
    threads: async () => {
      const a = webgpuAdapter();
      return a ? `GPU adapter ${adapterLine(a)}` : 'GPU adapter (not loaded)';
    },
    installHint:
      "install painter's optional packages webgpu and @tensorflow/tfjs-backend-webgpu (npm install webgpu @tensorflow/tfjs-backend-webgpu) and a GPU driver with Vulkan (Linux), Metal (macOS) or D3D12 (Windows); without a GPU, Mesa's lavapipe is a software adapter for tests (Debian 12: apt-get install -t bookworm-backports mesa-vulkan-drivers)",
    when: 'a GPU through Dawn (Vulkan on Linux, Metal on macOS, D3D12 on Windows), from npm alone: both packages are optional dependencies with prebuilt binaries, no CUDA needed; no 4 GiB heap. A software adapter (lavapipe) is only used when asked for',
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

/**
 * The `auto` order: a CUDA GPU, then any other GPU (WebGPU on a hardware adapter), then native
 * TensorFlow on the CPU, then wasm and the pure-JavaScript fallback.
 */
export const AUTO_ORDER: readonly { backend: BackendName; package: string; label: string }[] = [
  { backend: 'tensorflow', package: '@tensorflow/tfjs-node-gpu', label: 'tensorflow on a CUDA GPU' },
  { backend: 'webgpu', package: 'webgpu + @tensorflow/tfjs-backend-webgpu', label: 'webgpu on a GPU' },
  { backend: 'tensorflow', package: '@tensorflow/tfjs-node', label: 'tensorflow on the CPU' },
  { backend: 'wasm', package: '@tensorflow/tfjs-backend-wasm', label: 'wasm' },
  { backend: 'cpu', package: '@tensorflow/tfjs (cpu)', label: 'cpu' },
];

/** "tensorflow on a CUDA GPU → webgpu on a GPU → …", for help and the README. */
export function autoOrderText(): string {
  return AUTO_ORDER.map((c) => c.label).join(' → ');
}

export function backendSpec(name: BackendName): BackendSpec {
  return BACKENDS[name];
}

/** The table entry of tfjs's active backend, if painter knows it. */
export function activeBackendSpec(): BackendSpec | undefined {
  const name = tf.getBackend();
  return (BACKEND_NAMES as readonly string[]).includes(name) ? BACKENDS[name as BackendName] : undefined;
}
