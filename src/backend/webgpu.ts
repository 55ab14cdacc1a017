/**
 * The WebGPU backend's device: Dawn for Node (the `webgpu` package, prebuilt binaries inside the
 * package) behind `@tensorflow/tfjs-backend-webgpu`. Dawn runs on Vulkan (Linux), Metal (macOS)
 * or D3D12 (Windows); without a GPU, a CPU Vulkan driver such as Mesa's lavapipe is a *software*
 * adapter, which only an explicit `--backend webgpu` chooses (for correctness tests, not speed).
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs';

/** What the driver says about the adapter painter computes on. */
export interface AdapterReport {
  /** As the driver describes it: "llvmpipe: Mesa 25.0.7 (LLVM 15.0.6)", "NVIDIA GeForce RTX 4090". */
  description: string;
  vendor: string;
  architecture: string;
  /** A CPU implementation (lavapipe, SwiftShader) or the platform's fallback adapter. */
  software: boolean;
  limits: { maxBufferSize: number; maxStorageBufferBindingSize: number };
}

/** The parts of WebGPU's API painter reads (the `@webgpu/types` names). */
interface GpuAdapterLike {
  info?: { vendor?: string; architecture?: string; device?: string; description?: string; isFallbackAdapter?: boolean };
  isFallbackAdapter?: boolean;
  limits: { maxBufferSize: number; maxStorageBufferBindingSize: number };
}
interface GpuLike {
  requestAdapter(options?: { powerPreference?: string }): Promise<GpuAdapterLike | null>;
}
interface DawnModule {
  create(flags: string[]): GpuLike;
  globals: object;
}

let adapter: AdapterReport | undefined;

// Through a variable, so neither TypeScript nor a bundler insists that the optional package exists.
async function importOptional<T>(pkg: string): Promise<T> {
  return (await import(pkg)) as T;
}

function describeAdapter(a: GpuAdapterLike): AdapterReport {
  const info = a.info ?? {};
  const description = info.description || [info.vendor, info.device].filter(Boolean).join(' ') || 'unnamed adapter';
  const architecture = info.architecture ?? '';
  const software = Boolean(info.isFallbackAdapter ?? a.isFallbackAdapter) || architecture === 'software' || /llvmpipe|lavapipe|swiftshader/i.test(description);
  return {
    description,
    vendor: info.vendor ?? '',
    architecture,
    software,
    limits: { maxBufferSize: a.limits.maxBufferSize, maxStorageBufferBindingSize: a.limits.maxStorageBufferBindingSize },
  };
}

/**
 * Loads Dawn, finds the high-performance adapter, and registers tfjs's webgpu backend (which
 * creates the device with the adapter's full buffer limits). Throws when there is no adapter.
 */
export async function loadWebgpu(): Promise<void> {
  // Vulkan loaders print errors without a runtime folder.
  process.env['XDG_RUNTIME_DIR'] ||= os.tmpdir();
  const dawn = await importOptional<DawnModule>('webgpu');
  Object.assign(globalThis, dawn.globals);
  const gpu = dawn.create([]);
  const found = await gpu.requestAdapter({ powerPreference: 'high-performance' });
  if (!found) throw new Error('no WebGPU adapter: no Vulkan, Metal or D3D12 driver was found');
  adapter = describeAdapter(found);
  (globalThis as { navigator?: object }).navigator = { ...((globalThis as { navigator?: object }).navigator ?? {}), gpu };
  await importOptional<unknown>('@tensorflow/tfjs-backend-webgpu');
}

/**
 * On Linux, whether any GPU device node exists (a DRM render node for Mesa/AMD/Intel drivers, or
 * NVIDIA's device files): without one no hardware adapter can appear, and `auto` need not load
 * Dawn (whose Vulkan loader then prints warnings on every command). Undefined elsewhere (Metal
 * and D3D12 have no such files): there, loading Dawn is how to find out.
 */
export function linuxGpuDevices(dev = '/dev'): boolean | undefined {
  if (process.platform !== 'linux') return undefined;
  const has = (dir: string, re: RegExp) => {
    try {
      return fs.readdirSync(dir).some((f) => re.test(f));
    } catch {
      return false;
    }
  };
  return has(path.join(dev, 'dri'), /^renderD\d+$/) || has(dev, /^nvidia\d+$/);
}

/** The adapter loadWebgpu found, if it ran. */
export function webgpuAdapter(): AdapterReport | undefined {
  return adapter;
}

/**
 * Drops painter's reference to Dawn, which otherwise keeps the process alive after the work is
 * done (its GPU thread runs as long as `navigator.gpu` is reachable).
 */
export function releaseWebgpu(): void {
  const nav = (globalThis as { navigator?: { gpu?: unknown } }).navigator;
  if (nav && 'gpu' in nav) delete nav.gpu;
}

interface DeviceLike {
  queue: { onSubmittedWorkDone(): Promise<void> };
  destroy(): void;
}

/**
 * Ends WebGPU work before the process exits: waits for the queue, removes tfjs's webgpu backend,
 * destroys its device and drops Dawn. A process that exits while Dawn still sets up a device's
 * threads can abort in Dawn's teardown (seen on lavapipe right after `painter info`).
 */
export async function shutdownWebgpu(): Promise<void> {
  const backend = tf.engine().registry['webgpu'] as { device?: DeviceLike } | undefined;
  if (backend?.device) {
    await backend.device.queue.onSubmittedWorkDone();
    tf.removeBackend('webgpu');
    backend.device.destroy();
  }
  releaseWebgpu();
}

/** One line for an adapter: "llvmpipe: Mesa 25.0.7 (software; buffers up to 4.00 GiB, bindings up to 128 MiB)". */
export function adapterLine(a: AdapterReport): string {
  const gib = (b: number) => (b >= 2 ** 30 ? `${(b / 2 ** 30).toFixed(2)} GiB` : `${Math.round(b / 2 ** 20)} MiB`);
  return `${a.description} (${a.software ? 'software' : 'hardware'}; buffers up to ${gib(a.limits.maxBufferSize)}, storage bindings up to ${gib(a.limits.maxStorageBufferBindingSize)})`;
}

let tensorLimitOverride: number | undefined;

/**
 * The most bytes one tensor may have for a kernel to bind it whole: on webgpu the adapter's
 * `maxStorageBufferBindingSize` (lavapipe: 128 MiB, real GPUs 2–4 GiB); unlimited elsewhere.
 * Larger weights are held as row chunks (core/row-chunks.ts). Tests set it to exercise chunking
 * on any backend; `undefined` restores the backend's own.
 */
export function tensorByteLimit(): number {
  if (tensorLimitOverride !== undefined) return tensorLimitOverride;
  if (tf.getBackend() === 'webgpu' && adapter) return adapter.limits.maxStorageBufferBindingSize;
  return Infinity;
}

export function setTensorByteLimit(bytes: number | undefined): void {
  tensorLimitOverride = bytes;
}
