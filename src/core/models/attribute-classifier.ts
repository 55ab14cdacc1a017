/**
 * An attribute classifier on images (painter-mini's, fixtures/mini-classifier): a small CNN that
 * reads several attributes at once, one linear head each, for scoring samples and for classifier
 * guidance. Plain functions over a `Params` map (NHWC, conv HWIO, linear [in, out]):
 *
 *   conv_in (3×3) → per level: GroupNorm+SiLU → conv1 (3×3, residual) → GroupNorm+SiLU → stride-2 conv
 *   → norm_out + SiLU → global mean ‖ max pool → one linear head per attribute.
 */
import * as tf from '@tensorflow/tfjs';
import { conv2d, groupNormSilu, linear } from '../ops.js';
import { param, type ParamShapes, type Params } from '../params.js';

export interface AttributeClassifierConfig {
  /** Side of the square RGB input, pixels (divisible by 2^levels). */
  imageSize: number;
  /** Channels of each level; the first is also conv_in's width. */
  widths: number[];
  normGroups: number;
  normEps: number;
}

/** Weight shapes for heads of the given class counts. */
export function attributeClassifierShapes(cfg: AttributeClassifierConfig, heads: Readonly<Record<string, number>>): ParamShapes {
  const s: ParamShapes = new Map();
  const w = cfg.widths;
  s.set('conv_in.weight', [3, 3, 3, w[0]!]);
  s.set('conv_in.bias', [w[0]!]);
  let c = w[0]!;
  w.forEach((out, i) => {
    const b = `blocks.${i}`;
    s.set(`${b}.norm1.weight`, [c]);
    s.set(`${b}.norm1.bias`, [c]);
    s.set(`${b}.conv1.weight`, [3, 3, c, c]);
    s.set(`${b}.conv1.bias`, [c]);
    s.set(`${b}.norm2.weight`, [c]);
    s.set(`${b}.norm2.bias`, [c]);
    s.set(`${b}.downsample.weight`, [3, 3, c, out]);
    s.set(`${b}.downsample.bias`, [out]);
    c = out;
  });
  s.set('norm_out.weight', [c]);
  s.set('norm_out.bias', [c]);
  for (const [name, classes] of Object.entries(heads)) {
    s.set(`heads.${name}.weight`, [2 * c, classes]);
    s.set(`heads.${name}.bias`, [classes]);
  }
  return s;
}

/** Logits [N, classes] of each named head for images [N, S, S, 3] in [−1, 1]. Differentiable. */
export function attributeClassifierForward(p: Params, cfg: AttributeClassifierConfig, heads: readonly string[], images: tf.Tensor4D): Record<string, tf.Tensor2D> {
  const [, h, w, ch] = images.shape;
  if (h !== cfg.imageSize || w !== cfg.imageSize || ch !== 3) {
    throw new Error(`classifierForward: expected [N, ${cfg.imageSize}, ${cfg.imageSize}, 3] images, got [${images.shape.join(', ')}]`);
  }
  const g = cfg.normGroups;
  const eps = cfg.normEps;
  let x = conv2d(images, param(p, 'conv_in.weight'), param(p, 'conv_in.bias'), 1, 1);
  cfg.widths.forEach((_, i) => {
    const b = `blocks.${i}`;
    // Residual 3×3 conv at this resolution, then a stride-2 conv (PyTorch padding 1) to halve it.
    const hdn = conv2d(groupNormSilu(x, g, param(p, `${b}.norm1.weight`), param(p, `${b}.norm1.bias`), eps), param(p, `${b}.conv1.weight`), param(p, `${b}.conv1.bias`), 1, 1);
    x = tf.add(x, hdn);
    x = conv2d(groupNormSilu(x, g, param(p, `${b}.norm2.weight`), param(p, `${b}.norm2.bias`), eps), param(p, `${b}.downsample.weight`), param(p, `${b}.downsample.bias`), 2, 1);
  });
  // Mean and max pooling side by side: the mean reads what fills the image (the background), the
  // max whether a feature occurs anywhere (an object's colour or stripes, however small it is).
  const feat = groupNormSilu(x, g, param(p, 'norm_out.weight'), param(p, 'norm_out.bias'), eps);
  const pooled = tf.concat([tf.mean(feat, [1, 2]), tf.max(feat, [1, 2])], 1);
  const out: Record<string, tf.Tensor2D> = {};
  for (const name of heads) out[name] = linear(pooled, param(p, `heads.${name}.weight`), param(p, `heads.${name}.bias`)) as tf.Tensor2D;
  return out;
}
