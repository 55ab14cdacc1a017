/**
 * Classifier guidance (Dhariwal & Nichol 2021; the survey's ∇ log p(y|x_t)) with a classifier of
 * clean images: at each step the predicted clean latents x̂_0 are decoded, the classifier's
 * log-probability of the asked classes is differentiated w.r.t. the latents x_t (the model output
 * held fixed), and the noise estimate moves against it — ε̂' = ε̂ − √(1−ᾱ_t)·s·∇ log p(y | D(x̂_0)) —
 * whatever the model predicts (ε, v or x_0: the step gets its output back in those units).
 */
import * as tf from '@tensorflow/tfjs';
import { PainterError } from '../../errors.js';
import type { StableDiffusion } from '../model.js';
import { attributeClassifierForward, type AttributeClassifierConfig } from '../models/attribute-classifier.js';
import type { Params } from '../params.js';
import { vaeDecode } from '../models/vae.js';
import { alphaCumprodAt, noiseSchedule, predictEpsilon, predictOriginalSample } from '../schedulers/index.js';
import { f32, sqrt32 } from '../schedulers/numerics.js';

export interface ImageClassifier {
  params: Params;
  config: AttributeClassifierConfig;
  /** Class names of each head. */
  labels: Record<string, string[]>;
}

export interface ClassifierTarget {
  head: string;
  /** Index of the asked class in the head's labels. */
  index: number;
}

/** "colour=orange" → the head and class index, refused with the choices when unknown. */
export function parseClassifierTarget(clf: ImageClassifier, text: string): ClassifierTarget {
  const m = /^([\w-]+)=(.+)$/.exec(text.trim());
  if (!m) throw new PainterError(`--classify ${text}: give ATTRIBUTE=CLASS, e.g. colour=orange`);
  const [, head, cls] = m as unknown as [string, string, string];
  const labels = clf.labels[head];
  if (!labels) throw new PainterError(`--classify ${text}: the classifier reads ${Object.keys(clf.labels).join(', ')}, not "${head}"`);
  const index = labels.indexOf(cls);
  if (index < 0) throw new PainterError(`--classify ${text}: "${head}" is one of ${labels.join(', ')}`);
  return { head, index };
}

/** The hook the denoising loop calls on the (guided) model output at integer timestep t. */
export function classifierGuidance(model: StableDiffusion, clf: ImageClassifier, targets: readonly ClassifierTarget[], scale: number) {
  const schedule = noiseSchedule(model.scheduler);
  const type = model.scheduler.prediction_type;
  const sf = model.vae.config.scaling_factor;
  const size = clf.config.imageSize;
  return (t: number, latents: tf.Tensor4D, output: tf.Tensor): tf.Tensor => {
    if (!Number.isInteger(t)) throw new PainterError('classifier guidance needs integer timesteps; use --scheduler ddim, pndm or dpm++2m');
    const acp = alphaCumprodAt(schedule, t);
    const [a, b] = [sqrt32(acp), sqrt32(f32(1 - acp))];
    return tf.tidy(() => {
      const logp = (x: tf.Tensor): tf.Scalar => {
        const x0 = predictOriginalSample(type, output, x, a, b) as tf.Tensor4D;
        let image = vaeDecode(model.vae.params, model.vae.config, tf.div(x0, sf) as tf.Tensor4D);
        if (image.shape[1] !== size || image.shape[2] !== size) image = tf.image.resizeBilinear(image, [size, size]);
        const logits = attributeClassifierForward(clf.params, clf.config, [...new Set(targets.map((g) => g.head))], tf.clipByValue(image, -1, 1) as tf.Tensor4D);
        return tf.addN(targets.map((g) => tf.sum(tf.logSoftmax(logits[g.head]!, -1).slice([0, g.index], [-1, 1])))) as tf.Scalar;
      };
      const grad = tf.grad(logp)(latents);
      const eps = tf.sub(predictEpsilon(type, output, latents, a, b), tf.mul(grad, b * scale));
      // Back to the model's units, from the guided ε̂ and the x̂_0 it implies.
      const x0 = tf.div(tf.sub(latents, tf.mul(eps, b)), a);
      if (type === 'epsilon') return eps;
      if (type === 'sample') return x0;
      return tf.sub(tf.mul(eps, a), tf.mul(x0, b));
    });
  };
}
