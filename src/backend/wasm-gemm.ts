/**
 * Direct access to the wasm backend's XNNPACK GEMM (the fast path of its BatchMatMul kernel) on
 * any row-major region of any tensor: an operand given with an offset is registered as a view
 * (a tensor id pointing into another tensor's memory, no copy) for the duration of the call.
 */
import type * as tf from '@tensorflow/tfjs';

interface WasmTensorData {
  id: number;
  memoryOffset: number;
}

/** The parts of tfjs-backend-wasm's BackendWasm that painter's wasm kernels use. */
export interface WasmBackend {
  dataIdMap: { get(dataId: object): WasmTensorData | undefined };
  dataIdNextNumber: number;
  makeOutput(shape: number[], dtype: tf.DataType): tf.TensorInfo;
  disposeData(dataId: object, force?: boolean): boolean;
  wasm: {
    cwrap(name: string, ret: null, args: string[]): (...args: unknown[]) => void;
    tfjs: { registerTensor(id: number, size: number, offset: number): void; disposeData(id: number): void };
  };
}

type WasmMatMul = (aId: number, aShape: Uint8Array, aRank: number, bId: number, bShape: Uint8Array, bRank: number, ta: boolean, tb: boolean, outId: number) => void;

/** A matrix operand: a whole tensor (its own id), or the region starting `offset` elements in. */
export interface Operand {
  t: tf.TensorInfo;
  offset?: number;
}

const F32 = 4;
const bound = new WeakMap<WasmBackend, WasmMatMul>();

function shapeBytes(shape: number[]): Uint8Array {
  return new Uint8Array(new Int32Array(shape).buffer);
}

/**
 * out[m, n] = a[m, k] · b[k, n], all row-major float32. XNNPACK caches the packed b under its id
 * until that id is disposed: a whole tensor as b must always be read with the same [k, n] (true
 * of weights); views get fresh ids, released (with their cached operator) after the call.
 */
export function gemm(backend: WasmBackend, a: Operand, b: Operand, out: Operand, m: number, k: number, n: number): void {
  let fn = bound.get(backend);
  if (!fn) {
    fn = backend.wasm.cwrap('BatchMatMul', null, ['number', 'array', 'number', 'number', 'array', 'number', 'number', 'number', 'number']) as unknown as WasmMatMul;
    bound.set(backend, fn);
  }
  const views: number[] = [];
  const idOf = (o: Operand, size: number): number => {
    const info = backend.dataIdMap.get(o.t.dataId)!;
    if (o.offset === undefined) return info.id;
    const id = backend.dataIdNextNumber++;
    backend.wasm.tfjs.registerTensor(id, size, info.memoryOffset + o.offset * F32);
    views.push(id);
    return id;
  };
  try {
    fn(idOf(a, m * k), shapeBytes([1, m, k]), 3, idOf(b, k * n), shapeBytes([1, k, n]), 3, false, false, idOf(out, m * n));
  } finally {
    for (const id of views) backend.wasm.tfjs.disposeData(id);
  }
}
