/**
 * painter-mini's attribute classifier: a small CNN that reads object, colour, pattern, background
 * kind and background colour from an image of the world, used by `bench:concepts` to score
 * generated images. Plain functions over a `Params` map (NHWC, conv HWIO, linear [in, out]):
 *
 *   conv_in (3×3) → per level: GroupNorm+SiLU → conv1 (3×3) → GroupNorm+SiLU → downsample (3×3, stride 2)
 *   → norm_out + SiLU → global mean ‖ max pool → one linear head per attribute.
 *
 * The downsample conv of a level goes straight to that level's width, so the spatial side halves
 * once per level (32 → 4 with three levels).
 */
import * as tf from '@tensorflow/tfjs';
import { LABEL_CLASSES, LABEL_NAMES, type LabelName } from './world.js';
import { PainterError, attributeClassifierForward, type AttributeClassifierConfig, attributeClassifierShapes, type ParamShapes, type Params } from '../../src/index.js';

export type ClassifierConfig = AttributeClassifierConfig;

export const CLASSIFIER_DEFAULTS: ClassifierConfig = { imageSize: 32, widths: [16, 32, 64], normGroups: 8, normEps: 1e-5 };

export type ClassifierLogits = Record<LabelName, tf.Tensor2D>;
export type ClassifierLabels = Record<LabelName, Int32Array | number[]>;

export function numClasses(name: LabelName): number {
  return LABEL_CLASSES[name].length;
}

function positiveInt(v: unknown): v is number {
  return typeof v === 'number' && Number.isInteger(v) && v > 0;
}

/** Validates a classifier config.json; missing optional fields take the defaults. */
export function parseClassifierConfig(json: unknown, source: string): ClassifierConfig {
  if (typeof json !== 'object' || json === null) throw new PainterError(`${source}: expected a JSON object with the classifier config`);
  const o = json as Record<string, unknown>;
  const imageSize = o['image_size'] ?? CLASSIFIER_DEFAULTS.imageSize;
  const widths = o['widths'] ?? CLASSIFIER_DEFAULTS.widths;
  const normGroups = o['norm_groups'] ?? CLASSIFIER_DEFAULTS.normGroups;
  const normEps = o['norm_eps'] ?? CLASSIFIER_DEFAULTS.normEps;
  if (!positiveInt(imageSize)) throw new PainterError(`${source}: "image_size" must be a positive integer`);
  if (!Array.isArray(widths) || widths.length === 0 || !widths.every(positiveInt)) throw new PainterError(`${source}: "widths" must be a non-empty list of positive integers`);
  if (!positiveInt(normGroups)) throw new PainterError(`${source}: "norm_groups" must be a positive integer`);
  if (typeof normEps !== 'number' || !(normEps > 0)) throw new PainterError(`${source}: "norm_eps" must be a positive number`);
  // The class lists are stored with the weights: heads trained on other lists would mislabel silently.
  if (o['labels'] !== undefined && JSON.stringify(o['labels']) !== JSON.stringify(LABEL_CLASSES)) {
    throw new PainterError(`${source}: "labels" differ from this version's world (${LABEL_NAMES.join(', ')}); retrain the classifier`);
  }
  const cfg: ClassifierConfig = { imageSize, widths: widths as number[], normGroups, normEps };
  checkConfig(cfg, source);
  return cfg;
}

function checkConfig(cfg: ClassifierConfig, source: string): void {
  if (cfg.widths.some((w) => w % cfg.normGroups !== 0)) throw new PainterError(`${source}: every width must be divisible by "norm_groups" (${cfg.normGroups})`);
  if (cfg.imageSize % 2 ** cfg.widths.length !== 0) throw new PainterError(`${source}: "image_size" ${cfg.imageSize} must be divisible by 2^${cfg.widths.length}`);
}

/** The config as written to config.json (snake_case, as the other components). */
export function classifierConfigJson(cfg: ClassifierConfig): Record<string, unknown> {
  return { _class_name: 'PainterMiniClassifier', image_size: cfg.imageSize, widths: cfg.widths, norm_groups: cfg.normGroups, norm_eps: cfg.normEps, labels: LABEL_CLASSES };
}

export function classifierParamShapes(cfg: ClassifierConfig): ParamShapes {
  checkConfig(cfg, 'classifier config');
  return attributeClassifierShapes(cfg, Object.fromEntries(LABEL_NAMES.map((name) => [name, numClasses(name)])));
}

/** Logits [N, classes] per attribute for images [N, S, S, 3] in [-1, 1]. */
export function classifierForward(p: Params, cfg: ClassifierConfig, images: tf.Tensor4D): ClassifierLogits {
  return attributeClassifierForward(p, cfg, LABEL_NAMES, images) as ClassifierLogits;
}

/**
 * Sum over attributes of the mean softmax cross-entropy, −log softmax(z)_y. `heads` limits the
 * sum (e.g. to skip backgroundColour); by default every attribute counts.
 */
export function classifierLoss(logits: ClassifierLogits, labels: ClassifierLabels, heads: readonly LabelName[] = LABEL_NAMES): tf.Scalar {
  const terms = heads.map((name) => {
    const z = logits[name];
    const y = tf.oneHot(tf.tensor1d(Array.from(labels[name]), 'int32'), numClasses(name));
    return tf.mean(tf.neg(tf.sum(tf.mul(y, tf.logSoftmax(z, -1)), -1)));
  });
  return tf.addN(terms) as tf.Scalar;
}

/** Predicted class index per image and attribute. */
export function predict(p: Params, cfg: ClassifierConfig, images: tf.Tensor4D): Record<LabelName, Int32Array> {
  const idx = tf.tidy(() => {
    const logits = classifierForward(p, cfg, images);
    return LABEL_NAMES.map((name) => tf.argMax(logits[name], -1));
  });
  const out = {} as Record<LabelName, Int32Array>;
  LABEL_NAMES.forEach((name, i) => {
    out[name] = Int32Array.from(idx[i]!.dataSync());
    idx[i]!.dispose();
  });
  return out;
}

/** Pixels (uint8 RGB, HWC, one buffer per image) as a [-1, 1] batch. */
export function imagesToTensor(images: readonly Uint8Array[], size: number): tf.Tensor4D {
  const data = new Float32Array(images.length * size * size * 3);
  images.forEach((img, i) => {
    if (img.length !== size * size * 3) throw new Error(`imagesToTensor: image ${i} has ${img.length} bytes, expected ${size * size * 3}`);
    const off = i * size * size * 3;
    for (let j = 0; j < img.length; j++) data[off + j] = img[j]! / 127.5 - 1;
  });
  return tf.tensor4d(data, [images.length, size, size, 3]);
}
