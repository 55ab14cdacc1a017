/**
 * Kernels written as plain loops over Float32Arrays, registered on the wasm backend (views into
 * its heap) and the cpu backend (its value arrays). A fused kernel replaces a chain of small ops
 * whose per-op overhead and repeated passes over memory dominate on these backends (GroupNorm:
 * ~10 ops forward, ~25 backward, several of them broadcasts that wasm runs ~10× slower than
 * same-shape ops). JavaScript loops run at ~1–3 ns per element here, no faster than wasm's own
 * elementwise kernels, so fusion pays only where it removes ops and passes, not for single ops.
 * Never registered for tensorflow.
 */
import * as tf from '@tensorflow/tfjs';

export type Attrs = Record<string, unknown>;

/** Vector helpers a kernel may call on its buffers (the backend's own code where faster). */
export interface KernelHelpers {
  /** dst[i] = σ(src[i]); src and dst are this kernel call's buffers (dst may be src). */
  sigmoid(src: Float32Array, dst: Float32Array): void;
}

export interface JsKernel {
  name: string;
  /** Input names in the order `compute` receives them. */
  inputs: readonly string[];
  /** Shapes of the outputs (all float32). */
  outputShapes(inputShapes: number[][], attrs: Attrs): number[][];
  /** Fills every element of every output (outputs start uninitialised). */
  compute(inputs: Float32Array[], outputs: Float32Array[], inputShapes: number[][], attrs: Attrs, helpers: KernelHelpers): void;
}

interface WasmBackendLike {
  makeOutput(shape: number[], dtype: tf.DataType): tf.TensorInfo;
  typedArrayFromHeap(t: tf.TensorInfo): Float32Array;
  dataIdNextNumber: number;
  wasm: {
    cwrap(name: string, ret: null, args: string[]): (...args: unknown[]) => void;
    tfjs: { registerTensor(id: number, size: number, offset: number): void; disposeData(id: number): void };
  };
}

interface CpuBackendLike {
  readSync(dataId: object): unknown;
  makeTensorInfo(shape: number[], dtype: tf.DataType, values: Float32Array): tf.TensorInfo;
}

// The cpu backend's σ: exp(x) = 2^k·e^r with k = round(x·log₂e), |r| ≤ ln2/2, e^r by its degree-8
// Taylor polynomial (relative error < 1e-9): ~2× faster than Math.exp in V8, far below float32
// rounding. (On wasm the backend's own Sigmoid runs, faster still.)
const LN2_HI = 0.6931471803691238;
const LN2_LO = 1.9082149292705877e-10;
const POW2_BIAS = 1075;
const POW2 = Float64Array.from({ length: 2 * POW2_BIAS + 1 }, (_, i) => 2 ** (i - POW2_BIAS));

function fastExp(x: number): number {
  const k = Math.floor(x * Math.LOG2E + 0.5);
  const r = x - k * LN2_HI - k * LN2_LO;
  const p = 1 + r * (1 + r * (1 / 2 + r * (1 / 6 + r * (1 / 24 + r * (1 / 120 + r * (1 / 720 + r * (1 / 5040 + r / 40320)))))));
  let i = (k + POW2_BIAS) | 0;
  i = i < 0 ? 0 : i > 2 * POW2_BIAS ? 2 * POW2_BIAS : i;
  return p * POW2[i]!;
}

/** σ(v) = 1/(1 + e^−v). */
function sigmoid(v: number): number {
  return 1 / (1 + fastExp(-v));
}

function checkFloat(k: JsKernel, infos: tf.TensorInfo[]): void {
  infos.forEach((t, i) => {
    if (t.dtype !== 'float32') throw new Error(`${k.name}: input ${k.inputs[i]} is ${t.dtype}, expected float32`);
  });
}

function size(shape: number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

const jsHelpers: KernelHelpers = {
  sigmoid(src, dst) {
    for (let i = 0; i < src.length; i++) dst[i] = sigmoid(src[i]!);
  },
};

/** Helpers running the wasm backend's own kernels on heap views (a view's byteOffset is its address). */
function wasmHelpers(b: WasmBackendLike): KernelHelpers {
  const sigmoidFn = b.wasm.cwrap('Sigmoid', null, ['number', 'number']) as (x: number, out: number) => void;
  const withViews = (src: Float32Array, dst: Float32Array, run: (x: number, out: number) => void): void => {
    const ids = [src, dst].map((v) => {
      const id = b.dataIdNextNumber++;
      b.wasm.tfjs.registerTensor(id, v.length, v.byteOffset);
      return id;
    });
    try {
      run(ids[0]!, ids[1]!);
    } finally {
      for (const id of ids) b.wasm.tfjs.disposeData(id);
    }
  };
  return { sigmoid: (src, dst) => withViews(src, dst, sigmoidFn) };
}

const helpersByBackend = new WeakMap<WasmBackendLike, KernelHelpers>();

function wasmKernel(k: JsKernel): tf.KernelFunc {
  return ({ inputs, backend, attrs }) => {
    const b = backend as unknown as WasmBackendLike;
    const infos = k.inputs.map((n) => inputs[n]!);
    checkFloat(k, infos);
    const shapes = infos.map((t) => t.shape);
    const a = (attrs ?? {}) as Attrs;
    // Allocate every output before taking any view: growing the heap detaches older views.
    const outs = k.outputShapes(shapes, a).map((s) => b.makeOutput(s, 'float32'));
    let helpers = helpersByBackend.get(b);
    if (!helpers) {
      helpers = wasmHelpers(b);
      helpersByBackend.set(b, helpers);
    }
    k.compute(
      infos.map((t) => b.typedArrayFromHeap(t)),
      outs.map((o) => b.typedArrayFromHeap(o)),
      shapes,
      a,
      helpers,
    );
    return outs.length === 1 ? outs[0]! : outs;
  };
}

function cpuKernel(k: JsKernel): tf.KernelFunc {
  return ({ inputs, backend, attrs }) => {
    const b = backend as unknown as CpuBackendLike;
    const infos = k.inputs.map((n) => inputs[n]!);
    checkFloat(k, infos);
    const shapes = infos.map((t) => t.shape);
    const a = (attrs ?? {}) as Attrs;
    const outShapes = k.outputShapes(shapes, a);
    const arrays = outShapes.map((s) => new Float32Array(size(s)));
    k.compute(
      infos.map((t) => b.readSync(t.dataId) as Float32Array),
      arrays,
      shapes,
      a,
      jsHelpers,
    );
    const outs = outShapes.map((s, i) => b.makeTensorInfo(s, 'float32', arrays[i]!));
    return outs.length === 1 ? outs[0]! : outs;
  };
}

const registry = new Map<string, tf.KernelConfig[]>();
let enabled = true;

/** Registers `k` on wasm and cpu (idempotent; not while painter's kernels are switched off). */
export function registerJsKernel(k: JsKernel): void {
  if (!registry.has(k.name)) {
    registry.set(k.name, [
      { kernelName: k.name, backendName: 'wasm', kernelFunc: wasmKernel(k) },
      { kernelName: k.name, backendName: 'cpu', kernelFunc: cpuKernel(k) },
    ]);
  }
  if (!enabled) return;
  for (const config of registry.get(k.name)!) {
    if (!tf.getKernel(config.kernelName, config.backendName)) tf.registerKernel(config);
  }
}

/**
 * Switches every kernel registered here on or off. Off, the ops that use them fall back to
 * plain tf ops (hasKernel is false): for comparisons and for ruling a kernel out.
 */
export function setJsKernelsEnabled(on: boolean): void {
  enabled = on;
  for (const configs of registry.values()) {
    for (const config of configs) {
      const present = tf.getKernel(config.kernelName, config.backendName) !== undefined;
      if (on && !present) tf.registerKernel(config);
      if (!on && present) tf.unregisterKernel(config.kernelName, config.backendName);
    }
  }
}

/** Whether the active backend has painter's kernel `name` (false on tensorflow). */
export function hasKernel(name: string): boolean {
  return tf.getKernel(name, tf.getBackend()) !== undefined;
}

/** Runs a registered kernel through the engine (recorded on the gradient tape). */
export function runKernel(name: string, inputs: Record<string, tf.Tensor>, attrs: Attrs = {}): tf.Tensor[] {
  const out = tf.engine().runKernel(name, inputs as unknown as tf.NamedTensorMap, attrs as tf.NamedAttrMap) as tf.Tensor | tf.Tensor[];
  return Array.isArray(out) ? out : [out];
}
