/**
 * Gradient checkpointing (Chen et al. 2016, "Training deep nets with sublinear memory cost"), as
 * diffusers' `enable_gradient_checkpointing`: a block runs forward without recording its
 * intermediate activations; the backward pass runs it again, on a tape, and backpropagates
 * through that recomputation. Only the block's inputs are kept between the passes, for about one
 * extra forward pass of compute.
 *
 * Gradients reach only the inputs of a tf.customGrad, so the block's weights that need one are
 * passed as inputs beside its activations; the others are read as constants.
 */
import * as tf from '@tensorflow/tfjs';
import type { Params } from '../params.js';

export interface CheckpointOptions {
  /**
   * Whether the weight under this checkpoint key needs a gradient. Only those become inputs of
   * the recomputed block: frozen weights (the whole UNet for Textual Inversion, the base weights
   * under LoRA) cost no filter gradients.
   */
  weights: (key: string) => boolean;
}

/** A block over its tensor inputs, reading its weights from `params` by checkpoint key. */
export type Block<T extends tf.Tensor> = (params: Params, inputs: tf.Tensor[]) => T;

/**
 * Gradients of `f` at `xs` for the upstream gradient `dy`, zeros for an input `f` does not use.
 * Called inside the engine's backward pass: the engine's gradients() at depth 0 installs a tape of
 * its own and clears it when done, so the outer pass's tape (whose saved tensors it disposes at
 * its end) is put back afterwards.
 */
export function recomputedGrads(f: () => tf.Tensor, xs: tf.Tensor[], dy: tf.Tensor): tf.Tensor[] {
  const engine = tf.engine();
  const outerTape = engine.state.activeTape;
  try {
    return tf.tidy(() => {
      const { value, grads } = engine.gradients(f, xs, dy, true);
      value.dispose();
      return grads.map((g, i) => g ?? tf.zerosLike(xs[i]!));
    });
  } finally {
    engine.state.activeTape = outerTape;
  }
}

/**
 * `block(params, inputs)` with recompute-in-backward. The block's weights are the keys of `params`
 * that start with `prefix` (e.g. "down_blocks.0.resnets.1."); gradients flow to `inputs` and to
 * the weights `opts.weights` selects, as they would without checkpointing.
 */
export function checkpointed<T extends tf.Tensor>(block: Block<T>, params: Params, prefix: string, inputs: tf.Tensor[], opts: CheckpointOptions): T {
  const keys = [...params.keys()].filter((k) => k.startsWith(prefix));
  const trainable = keys.filter((k) => opts.weights(k));
  const frozen = keys.filter((k) => !opts.weights(k));
  const n = inputs.length;
  const differentiable = n + trainable.length;
  // The recomputation reads every weight from what was saved: a frozen weight built inside the
  // caller's tidy (not a model weight) is gone by the time the backward pass runs.
  const rerun = (saved: tf.Tensor[]): T => {
    const p: Params = new Map(params);
    [...trainable, ...frozen].forEach((k, i) => p.set(k, saved[n + i]!));
    return block(p, saved.slice(0, n));
  };
  const run = tf.customGrad((...args: (tf.Tensor | tf.GradSaveFunc)[]) => {
    const save = args.pop() as tf.GradSaveFunc;
    const xs = args as tf.Tensor[];
    // Kept as clones that share the data: saving costs no copy.
    save([...xs, ...frozen.map((k) => params.get(k)!)]);
    return {
      value: block(params, xs.slice(0, n)),
      gradFunc: (dy: T, saved: tf.Tensor[]) => recomputedGrads(() => rerun(saved), saved.slice(0, differentiable), dy),
    };
  });
  return run(...inputs, ...trainable.map((k) => params.get(k)!)) as T;
}
