/**
 * Kernels painter fixes on tfjs's webgpu backend, and the device's validation errors made
 * visible:
 * - AddN binds every input as a storage buffer, so more inputs than the adapter's
 *   maxStorageBuffersPerShaderStage (8 on lavapipe) make an invalid pipeline. Backprop sums the
 *   gradients of a weight used many times, and the gradient norm sums one term per parameter, with
 *   AddN: painter's AddN adds in chunks the adapter can bind.
 * - WebGPU reports invalid work as an event, not an exception: a step would go on with garbage.
 *   The device's errors are collected, and `throwIfDeviceError` turns them into one line.
 */
import * as tf from '@tensorflow/tfjs';
import { PainterError } from '../errors.js';

interface WebgpuBackendLike {
  device: {
    limits: { maxStorageBuffersPerShaderStage: number };
    addEventListener?(type: 'uncapturederror', listener: (e: { error?: { message?: string } }) => void): void;
  };
  disposeData(dataId: object): void;
}

let addNReplaced = false;

/** AddN over at most `max` inputs per kernel call, adding the partial sums the same way. */
function chunkedAddN(original: tf.KernelConfig): tf.KernelFunc {
  return (args) => {
    const backend = args.backend as unknown as WebgpuBackendLike;
    const max = Math.max(2, backend.device.limits.maxStorageBuffersPerShaderStage - 1);
    let level = args.inputs as unknown as tf.TensorInfo[];
    if (level.length <= max) return original.kernelFunc(args);
    const partials: tf.TensorInfo[] = [];
    while (level.length > max) {
      const next: tf.TensorInfo[] = [];
      for (let i = 0; i < level.length; i += max) {
        const chunk = level.slice(i, i + max);
        if (chunk.length === 1) {
          next.push(chunk[0]!);
          continue;
        }
        const part = original.kernelFunc({ ...args, inputs: chunk as unknown as tf.NamedTensorInfoMap }) as tf.TensorInfo;
        partials.push(part);
        next.push(part);
      }
      level = next;
    }
    const out = original.kernelFunc({ ...args, inputs: level as unknown as tf.NamedTensorInfoMap });
    for (const p of partials) backend.disposeData(p.dataId);
    return out;
  };
}

/** Registers painter's webgpu kernels once tfjs's webgpu backend is loaded; idempotent. */
export function registerWebgpuKernels(): void {
  if (addNReplaced) return;
  const original = tf.getKernel('AddN', 'webgpu');
  if (!original) return;
  addNReplaced = true;
  tf.unregisterKernel('AddN', 'webgpu');
  tf.registerKernel({ ...original, kernelFunc: chunkedAddN(original) });
}

const deviceErrors: string[] = [];
const watched = new WeakSet<object>();

/** Collects the validation and out-of-memory errors the active webgpu device reports. */
export function watchDeviceErrors(): void {
  if (tf.getBackend() !== 'webgpu') return;
  const device = (tf.backend() as unknown as WebgpuBackendLike).device;
  if (watched.has(device)) return;
  watched.add(device);
  device.addEventListener?.('uncapturederror', (e) => deviceErrors.push(e.error?.message ?? 'unknown error'));
}

/** Throws one line when the GPU device rejected work since the last call. */
export function throwIfDeviceError(): void {
  if (deviceErrors.length === 0) return;
  const first = deviceErrors[0]!.split('\n')[0]!.trim();
  const more = deviceErrors.length > 1 ? ` (and ${deviceErrors.length - 1} more)` : '';
  deviceErrors.length = 0;
  throw new PainterError(`the GPU device rejected painter's work: ${first}${more}; the results would be wrong, so painter stopped. Try --backend wasm, and please report it`);
}

/** Buffers at least this large are destroyed when freed instead of kept for reuse. */
export const POOLED_BUFFER_MAX = 4 * 2 ** 20;

interface BufferManagerLike {
  releaseBuffer(buffer: { size: number }, reuse?: boolean): void;
}
const limitedPools = new WeakSet<object>();

/**
 * tfjs's webgpu backend keeps every freed buffer for a later request of exactly the same size and
 * never gives one back: on SD-1.5 (a LoRA DreamBooth step) the device held 7.1 GB for 5.3 GB of
 * live tensors, and a model's memory could not be predicted from its tensors. Large buffers are
 * destroyed when freed (WebGPU waits for queued work to finish with them); small ones, most of
 * the allocations and none of the memory, are still pooled.
 */
export function limitBufferPool(): void {
  if (tf.getBackend() !== 'webgpu') return;
  const manager = (tf.backend() as unknown as { bufferManager?: BufferManagerLike }).bufferManager;
  if (!manager || limitedPools.has(manager)) return;
  limitedPools.add(manager);
  const release = manager.releaseBuffer.bind(manager);
  manager.releaseBuffer = (buffer, reuse = true) => release(buffer, reuse && buffer.size < POOLED_BUFFER_MAX);
}
