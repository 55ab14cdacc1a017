/**
 * A symbolic run of painter's model code: the same sequence of tensor allocations the real
 * forward makes, with shapes only, so the peak of live tensor bytes can be computed for any
 * config without a single weight. It follows tfjs's memory rules:
 * - every kernel output is a new buffer (reshape shares its input's buffer);
 * - tf.tidy frees what was allocated inside it except what it returns;
 * - under a gradient tape (tf.variableGrads) a buffer a kernel saves for its gradient (its
 *   inputs, for most kernels; its output for softmax and sigmoid) lives until the backward pass
 *   ends; the rest is freed by tidy as usual;
 * - the backward pass makes, for every kernel on the path from the trainable weights to the loss,
 *   a gradient of each of its on-path inputs, and tfjs keeps all of them (backpropagateGradients
 *   disposes only the running sums it replaces) until the gradients are returned.
 */

/** Bytes per element of the dtypes the models use. */
export const BYTES = { float32: 4, int32: 4, bool: 1 } as const;
export type Dtype = keyof typeof BYTES;

/** One backing buffer; views (reshapes) share it. */
interface Allocation {
  bytes: number;
  freed: boolean;
  /** Saved by a kernel for the backward pass (taped runs only). */
  saved: boolean;
}

/** What a kernel keeps for its gradient: its inputs (most kernels), its output, or nothing. */
export type Saves = 'inputs' | 'output' | 'none';

/** A symbolic tensor. */
export interface Sym {
  shape: number[];
  dtype: Dtype;
  /** A gradient flows through it (it depends on a trainable weight). */
  grad: boolean;
  /** Null for tensors that live outside the trace (weights: counted by the weight estimate). */
  buffer: Allocation | null;
}

export function numel(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

function bytesOf(s: Pick<Sym, 'shape' | 'dtype'>): number {
  return numel(s.shape) * BYTES[s.dtype];
}

export class MemoryTrace {
  private liveBytes = 0;
  private peakBytes = 0;
  private readonly scopes: Allocation[][] = [[]];
  /** Σ bytes of the gradients the backward pass makes (one per on-path input of each kernel). */
  private pathBytes = 0;
  private largestPathTensor = 0;
  /** The largest transient a checkpointed block's backward needs (its recomputed, taped run). */
  private recomputePeak = 0;
  /** Σ bytes of the gradients of trainable weights the traced code used. */
  private weightGradBytes = 0;

  /** Whether the code runs under a gradient tape (a training step); off inside a checkpointed forward. */
  taped: boolean;
  /** Whether painter's fused norm kernels run (wasm and cpu, not tensorflow): see ops.ts. */
  readonly fused: boolean;

  constructor(opts: { taped?: boolean; fused?: boolean } = {}) {
    this.taped = opts.taped ?? false;
    this.fused = opts.fused ?? true;
  }

  /** Highest live bytes seen (tensors of the trace only). */
  get peak(): number {
    return this.peakBytes;
  }

  get live(): number {
    return this.liveBytes;
  }

  private bump(bytes: number): void {
    this.liveBytes += bytes;
    this.peakBytes = Math.max(this.peakBytes, this.liveBytes);
  }

  /** Buffers this trace allocated. */
  private readonly own = new WeakSet<Allocation>();

  private alloc(shape: number[], dtype: Dtype, grad: boolean): Sym {
    const buffer: Allocation = { bytes: numel(shape) * BYTES[dtype], freed: false, saved: false };
    this.own.add(buffer);
    this.scopes[this.scopes.length - 1]!.push(buffer);
    this.bump(buffer.bytes);
    return { shape, dtype, grad, buffer };
  }

  /** A tensor created before the traced code runs (an input it is handed). */
  input(shape: number[], dtype: Dtype = 'float32', grad = false): Sym {
    return this.alloc(shape, dtype, grad);
  }

  /** A weight: resident already (its bytes are the weight estimate's), trainable or not. */
  weight(shape: number[], trainable = false): Sym {
    return { shape, dtype: 'float32', grad: trainable, buffer: null };
  }

  /** A kernel's output: a fresh buffer. `saves`: what the kernel keeps for its gradient. */
  op(shape: number[], inputs: readonly Sym[], dtype: Dtype = 'float32', saves: Saves = 'inputs'): Sym {
    const out = this.alloc(shape, dtype, inputs.some((s) => s.grad));
    if (!this.taped) return out;
    if (saves === 'inputs') for (const s of inputs) if (s.buffer) s.buffer.saved = true;
    if (saves === 'output') out.buffer!.saved = true;
    if (out.grad) {
      for (const s of inputs) {
        if (!s.grad || s.dtype !== 'float32') continue;
        const bytes = bytesOf(s);
        // A weight, or a tensor made outside this trace (a LoRA-merged weight, for a replay).
        if (!s.buffer || !this.own.has(s.buffer)) this.weightGradBytes += bytes;
        this.pathBytes += bytes;
        this.largestPathTensor = Math.max(this.largestPathTensor, bytes);
      }
    }
    return out;
  }

  /** tf.reshape: shares the buffer; under a tape its kernel keeps the input for the gradient. */
  reshape(x: Sym, shape: number[]): Sym {
    if (this.taped && x.buffer) x.buffer.saved = true;
    return { ...x, shape };
  }

  /** Scratch a kernel allocates and frees within one call (wasm's transposes before a reduction). */
  scratch(bytes: number): void {
    this.bump(bytes);
    this.liveBytes -= bytes;
  }

  /**
   * A block run with gradient checkpointing (core/models/checkpoint.ts: tf.customGrad): the
   * forward runs without the tape (its activations freed as it goes), the block's inputs are
   * saved, and the backward pass recomputes the block under its own tape and backpropagates
   * through it: that taped run, its gradients included, is a transient of the outer backward.
   * The outer backward makes only the gradients of the block's inputs and trainable weights.
   */
  checkpoint(inputs: readonly Sym[], fn: (t: MemoryTrace, inputs: readonly Sym[]) => Sym): Sym {
    if (!this.taped) return fn(this, inputs);
    this.taped = false;
    let out: Sym;
    try {
      out = this.tidy(() => fn(this, inputs));
    } finally {
      this.taped = true;
    }
    for (const s of inputs) if (s.buffer) s.buffer.saved = true;
    // The recomputation: a taped run of the block on copies of its inputs, then its backward.
    const replay = new MemoryTrace({ taped: true, fused: this.fused });
    const copies = inputs.map((s) => replay.input(s.shape, s.dtype, s.grad));
    replay.tidy(() => fn(replay, copies));
    const inputBytes = inputs.reduce((n, s) => n + bytesOf(s), 0);
    const escaping = inputs.filter((s) => s.grad && s.dtype === 'float32').reduce((n, s) => n + bytesOf(s), 0) + replay.weightGradBytes;
    this.recomputePeak = Math.max(this.recomputePeak, replay.backward(0) - inputBytes);
    if (out.grad) {
      this.pathBytes += escaping;
      for (const s of inputs) if (s.grad) this.largestPathTensor = Math.max(this.largestPathTensor, bytesOf(s));
    }
    return out;
  }

  /** tf.tidy: frees everything allocated inside except the buffers behind `fn`'s result. */
  tidy<T extends Sym | Sym[]>(fn: () => T): T {
    this.scopes.push([]);
    const result = fn();
    const scope = this.scopes.pop()!;
    const parent = this.scopes[this.scopes.length - 1]!;
    const keep = new Set((Array.isArray(result) ? result : [result]).map((s) => s.buffer));
    for (const b of scope) {
      if (keep.has(b) || b.saved) parent.push(b);
      else this.free(b);
    }
    return result;
  }

  /** tensor.dispose(). */
  dispose(...syms: Sym[]): void {
    for (const s of syms) if (s.buffer && !s.buffer.saved) this.free(s.buffer);
  }

  private free(b: Allocation): void {
    if (b.freed) return;
    b.freed = true;
    this.liveBytes -= b.bytes;
  }

  /**
   * The backward pass: every gradient it makes, all alive when it ends, plus what one gradient
   * function holds while it runs (`transient`, e.g. a flipped conv filter). Returns the peak
   * including it; the tape's buffers are then released.
   */
  backward(transient: number): number {
    this.bump(this.pathBytes);
    // A gradient function's own temporaries: a few tensors of its output's size; or a
    // checkpointed block's recomputation and backward, whichever is larger.
    this.scratch(Math.max(transient + 2 * this.largestPathTensor, this.recomputePeak));
    this.liveBytes -= this.pathBytes;
    for (const scope of this.scopes) for (const b of scope) this.free(b);
    return this.peakBytes;
  }
}
