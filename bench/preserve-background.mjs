#!/usr/bin/env node
// edit --preserve-background on painter-mini: the masked recolouring of bench:edits (the same 16
// scenes, captions, masks and seeds, strength 1, DPM++ 2M, 30 steps, guidance 7.5), decoded plainly
// and with the decoder fitted to the picture outside the mask (Blended Latent Diffusion's background
// reconstruction); mean error outside the mask (and more than one latent cell from it) against the
// VAE's own reconstruction error there, and the asked colour read inside the mask by the classifier.
// Usage: npm run build && node bench/preserve-background.mjs [SCENES=16] [STEPS=100]
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.join(path.dirname(fileURLToPath(import.meta.url)), '..');
const dist = (p) => path.join(root, 'dist', p);
const [scenes = 16, fitSteps = 100] = process.argv.slice(2).map(Number);
const tf = await import('@tensorflow/tfjs');
const { selectBackend, loadModel, bundledModelPath, modelImageSize, decodeLatents } = await import(dist('src/index.js'));
const { fitDecoderToBackground, BACKGROUND_FIT_DEFAULTS } = await import(dist('src/core/pipeline/background-fit.js'));
const { Rng } = await import(dist('src/core/random.js'));
const { maskedEditLatents, reconstruct, grownMask, awayFromMask, meanError, toUint8 } = await import(dist('recipes/painter-mini/bench-edits.js'));
const { classify } = await import(dist('recipes/painter-mini/bench-concepts.js'));
const { loadClassifier } = await import(dist('recipes/painter-mini/train-classifier.js'));
const { renderScene } = await import(dist('recipes/painter-mini/render.js'));
const { caption, COLOUR_NAMES, sampleScene } = await import(dist('recipes/painter-mini/world.js'));

await selectBackend('wasm');
const model = loadModel(bundledModelPath());
const clf = loadClassifier(path.join(root, 'fixtures', 'mini-classifier'));
const size = modelImageSize(model);
const rows = [];
const t0 = performance.now();
for (let k = 0; k < scenes; k++) {
  // As bench:edits draws them (recipes/painter-mini/bench-edits.ts, runEditBench).
  const rng = new Rng(9000 + k);
  const scene = sampleScene(rng);
  const rgb = Uint8Array.from(await renderScene(scene, size));
  const mask = await grownMask(scene, size, 1);
  const others = COLOUR_NAMES.filter((c) => c !== scene.subject.colour && c !== scene.background.colour);
  const asked = others[rng.int(others.length)];
  const prompt = caption({ ...scene, subject: { ...scene.subject, colour: asked } });
  const latents = maskedEditLatents(model, rgb, mask, prompt, 100 + k, { steps: 30, guidance: 7.5 });
  const plainImage = decodeLatents(model, latents);
  const plain = toUint8(plainImage);
  const input = tf.tensor4d(Float32Array.from(rgb, (v) => (2 * v) / 255 - 1), [1, size, size, 3]);
  const m = tf.tensor4d(mask, [1, size, size, 1]);
  const t = performance.now();
  const fitted = await fitDecoderToBackground(model, latents, input, m, { ...BACKGROUND_FIT_DEFAULTS, steps: fitSteps });
  const fitSeconds = (performance.now() - t) / 1000;
  const preservedImage = decodeLatents({ ...model, vae: { config: model.vae.config, params: fitted.params } }, latents);
  const preserved = toUint8(preservedImage);
  fitted.dispose();
  tf.dispose([latents, plainImage, preservedImage, input, m]);
  const recon = reconstruct(model, rgb, size, 100 + k);
  const outside = Float32Array.from(mask, (v) => 1 - v);
  const away = awayFromMask(mask, size, 4);
  const [rPlain, rKept] = classify(clf, [plain, preserved], size);
  rows.push({
    asked,
    plain: { outside: meanError(plain, rgb, outside), away: meanError(plain, rgb, away), read: rPlain.colour },
    preserved: { outside: meanError(preserved, rgb, outside), away: meanError(preserved, rgb, away), read: rKept.colour },
    vae: { outside: meanError(recon, rgb, outside), away: meanError(recon, rgb, away) },
    fitSeconds,
  });
  console.error(`scene ${k}: outside ${rows[k].plain.outside.toFixed(2)} → ${rows[k].preserved.outside.toFixed(2)} (VAE ${rows[k].vae.outside.toFixed(2)}), colour ${asked}: ${rPlain.colour} / ${rKept.colour}, fit ${fitSeconds.toFixed(1)} s`);
}
const mean = (f) => rows.reduce((a, r) => a + f(r), 0) / rows.length;
const share = (f) => `${Math.round((100 * rows.filter(f).length) / rows.length)}%`;
console.log(`| painter-mini, ${rows.length} scenes (bench:edits' masked recolouring), decoder fit ${fitSteps} steps | plain decode | --preserve-background | VAE reconstruction |`);
console.log('|---|---|---|---|');
console.log(`| mean error outside the mask (0–255) | ${mean((r) => r.plain.outside).toFixed(2)} | ${mean((r) => r.preserved.outside).toFixed(2)} | ${mean((r) => r.vae.outside).toFixed(2)} |`);
console.log(`| … more than one latent cell from the mask | ${mean((r) => r.plain.away).toFixed(2)} | ${mean((r) => r.preserved.away).toFixed(2)} | ${mean((r) => r.vae.away).toFixed(2)} |`);
console.log(`| the asked colour read inside the mask | ${share((r) => r.plain.read === r.asked)} | ${share((r) => r.preserved.read === r.asked)} | |`);
console.log(`| decoder fit per picture | | ${mean((r) => r.fitSeconds).toFixed(1)} s | |`);
console.log(`(total ${((performance.now() - t0) / 60000).toFixed(1)} min)`);
