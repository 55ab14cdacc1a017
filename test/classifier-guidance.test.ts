/**
 * Classifier guidance with painter-mini's attribute classifier (fixtures/mini-classifier): scale 0
 * changes nothing, the guided sample reads the asked class more surely than the unguided one from
 * the same noise, and `generate --classify` records it; bad targets name the choices.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { disposeModel, type StableDiffusion } from '../src/core/model.js';
import { attributeClassifierForward } from '../src/core/models/attribute-classifier.js';
import { classifierGuidance, parseClassifierTarget, type ImageClassifier } from '../src/core/pipeline/classifier-guidance.js';
import { decodeLatents, denoise, encodePrompts } from '../src/core/pipeline/text-to-image.js';
import { Rng } from '../src/core/random.js';
import { createScheduler } from '../src/core/schedulers/index.js';
import { loadImageClassifier } from '../src/io/load-classifier.js';
import { loadModel } from '../src/io/load-model.js';
import { FIXTURES, runCli, useBackend } from './helpers.js';

const MINI = path.join(FIXTURES, 'painter-mini');
let model: StableDiffusion;
let clf: ImageClassifier;
let tmp: string;

beforeAll(async () => {
  await useBackend();
  model = loadModel(MINI);
  clf = loadImageClassifier(path.join(FIXTURES, 'mini-classifier'));
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'painter-cg-'));
});
afterAll(() => {
  disposeModel(model);
  tf.dispose([...clf.params.values()]);
  fs.rmSync(tmp, { recursive: true, force: true });
});

/** log p(colour = orange) of the sample from seed `seed`, guided at `scale` (none when 0). */
function logProbOrange(seed: number, scale: number): number {
  const target = parseClassifierTarget(clf, 'colour=orange');
  const promptEmbeds = encodePrompts(model, ['a cat']);
  const negativeEmbeds = encodePrompts(model, ['']);
  const latents = tf.tidy(() => tf.tensor4d(new Rng(seed).normals(4 * 16 * 16), [1, 4, 16, 16]).transpose([0, 2, 3, 1]) as tf.Tensor4D);
  const guide = scale > 0 ? classifierGuidance(model, clf, [target], scale) : undefined;
  const loop = denoise(model, { scheduler: createScheduler('ddim', model.scheduler, 8), promptEmbeds, negativeEmbeds, guidance: 7.5, latents, guide });
  let r = loop.next();
  while (!r.done) r = loop.next();
  const lp = tf.tidy(() => {
    const image = tf.sub(tf.mul(decodeLatents(model, r.value), 2), 1) as tf.Tensor4D;
    return tf.logSoftmax(attributeClassifierForward(clf.params, clf.config, ['colour'], image)['colour']!, -1).dataSync()[target.index]!;
  });
  tf.dispose([promptEmbeds, negativeEmbeds, latents, r.value]);
  return lp;
}

describe('classifier guidance', () => {
  it('returns the model output unchanged at scale 0 (v-prediction: through ε̂ and x̂₀ and back)', () => {
    const hook = classifierGuidance(model, clf, [parseClassifierTarget(clf, 'colour=red')], 0);
    tf.tidy(() => {
      const x = tf.randomNormal([1, 16, 16, 4], 0, 1, 'float32', 1) as tf.Tensor4D;
      const out = tf.randomNormal([1, 16, 16, 4], 0, 1, 'float32', 2);
      const back = hook(501, x, out);
      expect(tf.max(tf.abs(tf.sub(back, out))).dataSync()[0]).toBeLessThan(1e-5);
    });
  });

  it('makes the asked class likelier than the unguided sample from the same noise', () => {
    for (const seed of [0, 1]) expect(logProbOrange(seed, 30), `seed ${seed}`).toBeGreaterThan(logProbOrange(seed, 0));
  });

  it('names the attributes and classes it knows', () => {
    expect(() => parseClassifierTarget(clf, 'colour=teal')).toThrow(/"colour" is one of red, orange/);
    expect(() => parseClassifierTarget(clf, 'mood=happy')).toThrow(/the classifier reads object, colour/);
    expect(() => parseClassifierTarget(clf, 'orange')).toThrow(/give ATTRIBUTE=CLASS/);
  });

  it('painter generate --classify records the guidance in the parameters text', async () => {
    const r = await runCli(['generate', 'a cat', '--model', MINI, '--steps', '3', '--classify', 'colour=orange', '--out', tmp, '--json']);
    expect(r.code, r.stderr).toBe(0);
    const info = await runCli(['info', (JSON.parse(r.stdout) as { files: { file: string }[] }).files[0]!.file]);
    expect(info.stdout).toContain('Classifier guidance: colour=orange scale 10');
    const bad = await runCli(['generate', 'a cat', '--model', MINI, '--steps', '3', '--classify', 'colour=orange', '--scheduler', 'euler-a', '--out', tmp]);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/--classify needs integer timesteps/);
  });
});
