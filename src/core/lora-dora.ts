/**
 * DoRA (Liu et al. 2024, "Weight-Decomposed Low-Rank Adaptation"): the adapted weight keeps the
 * direction of W + ΔW and takes a learned magnitude m per channel,
 *   W_dora = m · (W + ΔW) / ‖W + ΔW‖                                    (eq. 5)
 * with ΔW the adapter's own update (α/r included). The norm is taken per output channel (over
 * each row of the PyTorch [out, in(, kh, kw)] weight) as PEFT does and LyCORIS with its default
 * `wd_on_out=True` (dora_scale [out, 1(, 1, 1)]), or per input channel when the file's dora_scale
 * is shaped [1, in(, 1, 1)] (LyCORIS `wd_on_out=False`, the form AUTOMATIC1111 assumes). As
 * LyCORIS, ε = float32 machine epsilon is added to the norm.
 *
 * A runtime scale s blends the whole DoRA weight in, as AUTOMATIC1111, ComfyUI and LyCORIS'
 * functional `apply_dora_scale` do: W' = W + s · (W_dora − W), so s = 0 leaves W exactly.
 */
import * as tf from '@tensorflow/tfjs';

export interface DoraMagnitude {
  /** m, one value per channel of `axis`. */
  magnitude: tf.Tensor;
  axis: 'out' | 'in';
}

/** float32 machine epsilon (torch.finfo(torch.float32).eps), added to the norm as LyCORIS does. */
export const DORA_EPS = 2 ** -23;

/**
 * The channel count a weight in tfjs layout ([in, out] or [kh, kw, in, out]) has on `axis`, to
 * check a magnitude against it.
 */
export function doraChannels(weightShape: readonly number[], axis: DoraMagnitude['axis']): number {
  return axis === 'out' ? weightShape[weightShape.length - 1]! : weightShape[weightShape.length - 2]!;
}

/**
 * W + s · (m · (W + ΔW) / (‖W + ΔW‖ + ε) − W), all in tfjs layout; the norm runs over every axis
 * but the channel axis.
 */
export function doraMerge(w: tf.Tensor, delta: tf.Tensor, dora: DoraMagnitude, scale: number): tf.Tensor {
  return tf.tidy(() => {
    const rank = w.rank;
    const channel = dora.axis === 'out' ? rank - 1 : rank - 2;
    const axes = [...Array(rank).keys()].filter((d) => d !== channel);
    const merged = tf.add(w, delta);
    const norm = tf.add(tf.sqrt(tf.sum(tf.square(merged), axes, true)), DORA_EPS);
    const shape = w.shape.map((d, i) => (i === channel ? d : 1));
    const directed = tf.mul(merged, tf.div(dora.magnitude.reshape(shape), norm));
    return tf.add(w, tf.mul(tf.sub(directed, w), scale));
  });
}
