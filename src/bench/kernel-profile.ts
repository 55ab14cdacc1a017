/**
 * Where a backend's time goes, kernel by kernel: every kernel registered for the active backend
 * is wrapped with a wall-clock timer for the duration of one call of `fn`, then restored. The
 * wasm and cpu kernels are synchronous, so the timer sees the whole kernel (on the tensorflow
 * backend it sees only the dispatch).
 */
import * as tf from '@tensorflow/tfjs';

export interface KernelTime {
  kernel: string;
  calls: number;
  ms: number;
}

export async function profileKernels(fn: () => unknown): Promise<KernelTime[]> {
  const backendName = tf.getBackend();
  const originals = tf.getKernelsForBackend(backendName);
  const times = new Map<string, KernelTime>();
  for (const k of originals) {
    const entry: KernelTime = { kernel: k.kernelName, calls: 0, ms: 0 };
    times.set(k.kernelName, entry);
    const inner = k.kernelFunc;
    tf.unregisterKernel(k.kernelName, backendName);
    // The original's setupFunc already ran when the backend initialised; its kernelFunc keeps
    // what it set up, so the wrapper needs none.
    tf.registerKernel({
      kernelName: k.kernelName,
      backendName,
      kernelFunc: (args) => {
        const t0 = performance.now();
        const out = inner(args);
        entry.ms += performance.now() - t0;
        entry.calls++;
        return out;
      },
    });
  }
  try {
    await fn();
  } finally {
    for (const k of originals) {
      tf.unregisterKernel(k.kernelName, backendName);
      tf.registerKernel(k);
    }
  }
  return [...times.values()].filter((t) => t.calls > 0).sort((a, b) => b.ms - a.ms);
}
