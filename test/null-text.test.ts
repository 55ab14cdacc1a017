/**
 * Null-text inversion (pipeline/null-text.ts) on painter-mini: after plain DDIM inversion (guidance
 * 1), sampling at guidance 7.5 drifts away from the picture; with the optimised per-step
 * unconditional embeddings the guided DDIM loop follows the inverted trajectory and lands on the
 * picture's latents. Checked on the library and through `painter edit --source --null-text`.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { disposeModel, type StableDiffusion } from '../src/core/model.js';
import { ddimInvert } from '../src/core/pipeline/ddim-inversion.js';
import { pictureLatents } from '../src/core/pipeline/edit.js';
import { nullTextInversion } from '../src/core/pipeline/null-text.js';
import { denoiseAll, encodePrompts } from '../src/core/pipeline/text-to-image.js';
import type { ScheduledEmbeds } from '../src/core/prompt/conditioning.js';
import { createScheduler } from '../src/core/schedulers/index.js';
import { loadModel } from '../src/io/load-model.js';
import { readPngText } from '../src/io/png-text.js';
import { FIXTURES, loadReference, nchwToNhwc, ref, relError, runCli, useBackend } from './helpers.js';

const PROMPT = 'a photo of a cat';
/** painter-mini (trained, unlike tiny-sd-a's random weights, whose guided outputs explode at w = 7.5). */
const MINI = path.join(FIXTURES, 'painter-mini');
const STEPS = 20;
let model: StableDiffusion;
let refs: Map<string, tf.Tensor>;
let tmp: string;

beforeAll(async () => {
  await useBackend();
  model = loadModel(MINI);
  refs = loadReference('editing.safetensors');
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'painter-null-text-'));
});
afterAll(() => {
  disposeModel(model);
  tf.dispose([...refs.values()]);
  fs.rmSync(tmp, { recursive: true, force: true });
});

describe('null-text inversion', () => {
  it('makes guided DDIM sampling reconstruct the picture that plain inversion loses', async () => {
    const pixels = tf.tidy(() => nchwToNhwc(ref(refs, 'input.image')).dataSync() as Float32Array);
    const picture = pictureLatents(model, { pixels, width: 64, height: 64 }, 0);
    const promptEmbeds = encodePrompts(model, [PROMPT]);
    const empty = encodePrompts(model, ['']);
    const trajectory = [tf.clone(picture)];
    const loop = ddimInvert(model, { latents: picture, promptEmbeds, guidance: 1, steps: STEPS });
    let r = loop.next();
    while (!r.done) {
      trajectory.push(tf.clone(r.value.latents));
      r = loop.next();
    }
    r.value.dispose();
    const losses: number[] = [];
    const optimise = nullTextInversion(model, { trajectory, promptEmbeds, nullEmbeds: empty, guidance: 7.5 });
    let o = await optimise.next();
    while (!o.done) {
      expect(o.value.iterations).toBeGreaterThanOrEqual(1);
      expect(o.value.iterations).toBeLessThanOrEqual(10);
      losses.push(o.value.loss);
      o = await optimise.next();
    }
    const nulls = o.value;
    expect(nulls).toHaveLength(STEPS);
    expect(losses.every(Number.isFinite)).toBe(true);

    const sample = (negative: ScheduledEmbeds[]) =>
      denoiseAll(model, { scheduler: createScheduler('ddim', model.scheduler, STEPS), conditioning: { prompt: [{ endAtStep: Infinity, text: '', embeds: promptEmbeds }], negative }, guidance: 7.5, latents: trajectory[STEPS]!, latentsNoised: true });
    const plain = sample([{ endAtStep: Infinity, text: '', embeds: empty }]);
    const withNull = sample(nulls.map((embeds, i) => ({ endAtStep: i, text: '', embeds })));
    const plainError = relError(plain, picture);
    const nullError = relError(withNull, picture);
    console.log(`reconstruction error at guidance 7.5: plain ${plainError.toFixed(4)}, null-text ${nullError.toFixed(4)}; losses ${losses.map((l) => l.toExponential(1)).join(' ')}`);
    expect(nullError).toBeLessThan(plainError / 5);
    // The optimised embeddings moved away from the empty prompt's.
    expect(relError(nulls[0]!, empty)).toBeGreaterThan(1e-4);
    tf.dispose([picture, promptEmbeds, empty, plain, withNull, ...trajectory, ...nulls]);
    // 20 steps of up to 10 UNet passes with gradients: ~40 s alone, longer beside other test files.
  }, 300_000);

  it('painter edit --source --null-text: the reconstruction is closer to the photo than without', async () => {
    const photo = path.join(tmp, 'photo.png');
    const px = tf.tidy(() => tf.round(tf.mul(tf.add(tf.mul(nchwToNhwc(ref(refs, 'input.image')), 0.5), 0.5), 255)).toInt());
    await sharp(Buffer.from(Uint8Array.from(px.dataSync())), { raw: { width: 64, height: 64, channels: 3 } }).png().toFile(photo);
    px.dispose();
    const original = (await sharp(photo).raw().toBuffer()) as Buffer;
    const distance = async (file: string) => {
      const got = (await sharp(file).raw().toBuffer()) as Buffer;
      let sum = 0;
      for (let i = 0; i < got.length; i++) sum += Math.abs(got[i]! - original[i]!);
      return sum / got.length;
    };
    const run = async (flags: string[], out: string) => {
      const r = await runCli(['edit', photo, 'a photo of a dog', '--source', PROMPT, '--model', MINI, '--steps', '10', '--out', path.join(tmp, out), '--json', ...flags]);
      expect(r.code, r.stderr).toBe(0);
      return (JSON.parse(r.stdout) as { files: { file: string }[] }).files.map((f) => f.file);
    };
    const [plainRec] = await run([], 'plain');
    const [nullRec, nullEdit] = await run(['--null-text'], 'null');
    const [plainDistance, nullDistance] = [await distance(plainRec!), await distance(nullRec!)];
    console.log(`reconstruction, mean |Δ| per channel (0–255): plain ${plainDistance.toFixed(1)}, null-text ${nullDistance.toFixed(1)}`);
    expect(nullDistance).toBeLessThan(plainDistance);
    expect(readPngText(fs.readFileSync(nullEdit!))['parameters']).toMatch(/Prompt-to-Prompt: "source \\"a photo of a cat\\" cross 0\.4 self 0\.4 null-text"/);
    const refused = await runCli(['edit', photo, 'a dog', '--null-text', '--model', MINI, '--out', path.join(tmp, 'x')]);
    expect(refused.code).toBe(2);
    expect(refused.stderr).toMatch(/--null-text optimises the inversion of --source/);
  }, 300_000);
});
