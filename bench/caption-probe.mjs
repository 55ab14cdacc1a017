#!/usr/bin/env node
// Which caption words a painter-mini-style model uses: its diffusion loss on rendered world scenes
// with the true caption, with the object word swapped for another kind, with the object's colour
// swapped, and with an empty caption, side by side per timestep. A word the model has learnt to
// use costs loss when it is wrong; a word it ignores costs nothing.
// Usage: npm run build && node bench/caption-probe.mjs [MODEL=fixtures/painter-mini] [SCENES=16] [SEED=5]
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.join(path.dirname(fileURLToPath(import.meta.url)), '..');
const dist = (p) => path.join(root, 'dist', p);
const tf = await import('@tensorflow/tfjs');
const { selectBackend, loadModel, encodePrompts, vaeEncode, noiseSchedule, diffusionLoss, Rng } = await import(dist('src/index.js'));
const { renderScene } = await import(dist('recipes/painter-mini/render.js'));
const { imagesToArray } = await import(dist('recipes/painter-mini/pretrain-stages.js'));
const { caption, sampleScene, OBJECT_KINDS, COLOUR_NAMES } = await import(dist('recipes/painter-mini/world.js'));

const [modelDir = path.join(root, 'fixtures', 'painter-mini'), scenesArg = '16', seedArg = '5'] = process.argv.slice(2);
const n = Number(scenesArg);
const seed = Number(seedArg);
await selectBackend('wasm');
const model = loadModel(modelDir);
const size = model.vae.config.sample_size;
const rng = new Rng(seed);
const scenes = Array.from({ length: n }, () => sampleScene(rng));
const captions = scenes.map((s) => caption(s));
// Swap one word for the kind (or colour) three places further on in the world's list.
const swap = (list, word, text) => text.replace(new RegExp(`\\b${word}\\b`), list[(list.indexOf(word) + 3) % list.length]);
const variants = {
  right: captions,
  'object swapped': scenes.map((s, i) => swap(OBJECT_KINDS, s.subject.object, captions[i])),
  'colour swapped': scenes.map((s, i) => swap(COLOUR_NAMES, s.subject.colour, captions[i])),
  empty: captions.map(() => ''),
};
const images = await Promise.all(scenes.map((s) => renderScene(s, size)));
const latents = tf.tidy(() => {
  const x = tf.tensor4d(imagesToArray(images, size), [n, size, size, 3]);
  return tf.mul(vaeEncode(model.vae.params, model.vae.config, x).mean, model.vae.config.scaling_factor);
});
const schedule = noiseSchedule(model.scheduler);
const states = Object.fromEntries(Object.entries(variants).map(([k, c]) => [k, encodePrompts(model, c)]));
const T = model.scheduler.num_train_timesteps;
const probeSteps = [0.1, 0.3, 0.5, 0.7, 0.85, 0.95].map((f) => Math.round(f * T));
console.log(`${modelDir}: ${model.scheduler.prediction_type} loss on ${n} scenes (seed ${seed}), e.g. "${captions[0]}"`);
console.log(['t', ...Object.keys(variants)].map((h) => h.padStart(15)).join(''));
for (const t of probeSteps) {
  const noise = tf.randomNormal(latents.shape, 0, 1, 'float32', t);
  const row = Object.values(states).map((ehs) => {
    const loss = diffusionLoss(model.unet, schedule, { latents, noise, timesteps: Array(n).fill(t), encoderHiddenStates: ehs }, { predictionType: model.scheduler.prediction_type });
    const v = loss.dataSync()[0];
    loss.dispose();
    return v;
  });
  const cells = row.map((v, i) => (i === 0 ? v.toFixed(4) : `${v.toFixed(4)} ${v >= row[0] ? '+' : ''}${(((v - row[0]) / row[0]) * 100).toFixed(1)}%`));
  console.log([String(t), ...cells].map((c) => c.padStart(15)).join(''));
  noise.dispose();
}
