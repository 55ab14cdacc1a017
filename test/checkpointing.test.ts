/**
 * Gradient checkpointing (unetForward's `checkpoint` option, --gradient-checkpointing): on the
 * tiny-sd-a training batch the loss and every gradient a method trains on — all UNet weights
 * (DreamBooth full), the LoRA adapters, the encoder hidden states (Textual Inversion) — equal
 * those without it; frozen weights get no filter gradient; no tensor leaks; and `invert` and
 * `dreambooth` runs give the same losses, with the setting kept by a resume.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { dreambooth } from '../src/app/dreambooth.js';
import { invert } from '../src/app/invert.js';
import { resolveRun } from '../src/app/training-run.js';
import type { BackendChoice } from '../src/backend/table.js';
import { disposeModel, type StableDiffusion } from '../src/core/model.js';
import type { CheckpointOptions } from '../src/core/models/checkpoint.js';
import type { Params } from '../src/core/params.js';
import { Rng } from '../src/core/random.js';
import { noiseSchedule } from '../src/core/schedulers/index.js';
import { diffusionLoss, type LossInput } from '../src/core/training/loss.js';
import { readSourceImage } from '../src/io/dataset.js';
import { loadModel } from '../src/io/load-model.js';
import { createDreamBooth, type DreamBoothSettings } from '../src/train/dreambooth.js';
import { FIXTURES, loadReference, nchwToNhwc, ref, TINY_SD_A, useBackend } from './helpers.js';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'painter-checkpointing-'));
const PHOTOS = path.join(FIXTURES, 'photos', 'cat');
const BACKEND = (process.env['PAINTER_TEST_BACKEND'] as BackendChoice | undefined) ?? 'wasm';
/** Gradient differences measured (relative L2), printed at the end. */
const measured: Record<string, { worst: number; worstKey: string; global: number; bitIdentical: number; of: number; zeroInExactArithmetic: number }> = {};

/** Bytes the tape held between forward and backward, printed at the end. */
const heldBytes: Record<string, number> = {};

let model: StableDiffusion;
let refs: Map<string, tf.Tensor>;
let input: LossInput;

beforeAll(async () => {
  await useBackend();
  model = loadModel(TINY_SD_A);
  refs = loadReference('training.safetensors');
  input = {
    latents: nchwToNhwc(ref(refs, 'latents')),
    noise: nchwToNhwc(ref(refs, 'noise')),
    timesteps: Array.from(ref(refs, 'timesteps').dataSync()),
    encoderHiddenStates: ref(refs, 'encoder_hidden_states') as tf.Tensor3D,
  };
});
afterAll(() => {
  tf.dispose([input.latents, input.noise, ...refs.values()]);
  disposeModel(model);
  fs.rmSync(tmp, { recursive: true, force: true });
  console.log('checkpointed vs plain gradients (relative L2):', JSON.stringify(measured));
  console.log('bytes held for the backward pass:', JSON.stringify(heldBytes));
});

const norm = (t: tf.Tensor): number => tf.tidy(() => tf.norm(t).dataSync()[0]!);
const normOfDiff = (a: tf.Tensor, b: tf.Tensor): number => tf.tidy(() => norm(tf.sub(a, b)));

/**
 * Compares checkpointed with plain gradients weight by weight, as the relative L2 error
 * ‖c − p‖ / ‖p‖, and over all weights together. Checkpointing sums a block's contributions to its
 * inputs before they join the rest, so float32 rounding differs (~1e-7 of a gradient, up to ~2e-6
 * of a few on wasm). A gradient that is zero in exact arithmetic (a per-channel constant ahead of
 * a GroupNorm with one channel per group: conv1.bias and time_emb_proj of down_blocks.0 in
 * tiny-sd-a) is rounding noise of ~1e-9 either way, so it is compared at the scale of the largest
 * gradient instead.
 */
function compareGrads(name: string, checkpointed: Map<string, tf.Tensor>, plain: Map<string, tf.Tensor>): void {
  expect([...checkpointed.keys()].sort()).toEqual([...plain.keys()].sort());
  const norms = new Map([...plain].map(([k, p]) => [k, norm(p)]));
  const scale = Math.max(...norms.values());
  const m = { worst: 0, worstKey: '', global: 0, bitIdentical: 0, of: plain.size, zeroInExactArithmetic: 0 };
  let diffSq = 0;
  let normSq = 0;
  for (const [k, p] of plain) {
    const c = checkpointed.get(k)!;
    expect(c.shape, k).toEqual(p.shape);
    const d = normOfDiff(c, p);
    const n = norms.get(k)!;
    diffSq += d * d;
    normSq += n * n;
    if (d === 0) m.bitIdentical++;
    if (n < 1e-6 * scale) {
      m.zeroInExactArithmetic++;
      expect(d / scale, k).toBeLessThan(1e-6);
      continue;
    }
    if (d / n > m.worst) [m.worst, m.worstKey] = [d / n, k];
    expect(d / n, k).toBeLessThan(1e-5);
  }
  m.global = Math.sqrt(diffSq / normSq);
  measured[name] = m;
  expect(m.global).toBeLessThan(1e-6);
}

/** Loss value and gradients of `loss` w.r.t. `vars` (by key), computed with variableGrads. */
function lossAndGrads(vars: Map<string, tf.Variable>, loss: () => tf.Scalar): { loss: number; grads: Map<string, tf.Tensor> } {
  const { value, grads } = tf.variableGrads(loss, [...vars.values()]);
  const out = new Map([...vars].map(([k, v]) => [k, grads[v.name]!]));
  const v = value.dataSync()[0]!;
  value.dispose();
  return { loss: v, grads: out };
}

const ALL: CheckpointOptions = { weights: () => true };
const NONE: CheckpointOptions = { weights: () => false };

describe('unetForward with gradient checkpointing', () => {
  it('full UNet training: the loss and every weight gradient equal the plain ones', () => {
    const vars = new Map([...model.unet.params].map(([k, t]) => [k, tf.variable(t, true, `ck_full/${k}`)]));
    const params: Params = new Map(vars);
    const schedule = noiseSchedule(model.scheduler);
    const run = (checkpoint?: CheckpointOptions) => lossAndGrads(vars, () => diffusionLoss({ params, config: model.unet.config }, schedule, input, { predictionType: 'epsilon', checkpoint }));
    const plain = run();
    const ck = run(ALL);
    expect(ck.loss).toBe(plain.loss);
    compareGrads('full', ck.grads, plain.grads);
    tf.dispose([...plain.grads.values(), ...ck.grads.values(), ...vars.values()]);
  });

  it('Textual Inversion: the loss and the gradient w.r.t. the encoder hidden states equal the plain ones', () => {
    const schedule = noiseSchedule(model.scheduler);
    const ehsGrad = (checkpoint?: CheckpointOptions) =>
      tf.tidy(() => {
        const f = (ehs: tf.Tensor) => diffusionLoss(model.unet, schedule, { ...input, encoderHiddenStates: ehs as tf.Tensor3D }, { predictionType: 'epsilon', checkpoint });
        const { value, grad } = tf.valueAndGrad(f)(input.encoderHiddenStates);
        return { loss: value.dataSync()[0]!, grad };
      });
    const plain = ehsGrad();
    const ck = ehsGrad(NONE);
    expect(ck.loss).toBe(plain.loss);
    compareGrads('encoder_hidden_states', new Map([['ehs', ck.grad]]), new Map([['ehs', plain.grad]]));
    tf.dispose([plain.grad, ck.grad]);
  });

  it('frozen weights are not differentiated: with weights () => false the backward pass runs no filter gradient', async () => {
    const schedule = noiseSchedule(model.scheduler);
    const kernels = async (checkpoint: CheckpointOptions) => {
      const info = await tf.profile(() => {
        tf.tidy(() => {
          const f = (ehs: tf.Tensor) => diffusionLoss(model.unet, schedule, { ...input, encoderHiddenStates: ehs as tf.Tensor3D }, { predictionType: 'epsilon', checkpoint });
          tf.grad(f)(input.encoderHiddenStates);
        });
      });
      return info.kernels.map((k) => k.name);
    };
    // tfjs's filter gradient, and painter's on wasm (kernels.ts); other backends use forward convs.
    const filterGrads = (names: string[]) => names.filter((n) => n === 'Conv2DBackpropFilter' || n === 'PainterConv2DFilterGrad');
    const all = await kernels(ALL);
    const none = await kernels(NONE);
    if (tf.getBackend() === 'wasm') expect(filterGrads(all).length).toBeGreaterThan(0);
    expect(filterGrads(none)).toEqual([]);
    expect(none.length).toBeLessThan(all.length);
  });

  it('keeps less for the backward pass: the bytes held between forward and backward shrink', () => {
    const vars = new Map([...model.unet.params].map(([k, t]) => [k, tf.variable(t, true, `ck_held/${k}`)]));
    const params: Params = new Map(vars);
    const schedule = noiseSchedule(model.scheduler);
    const held = (checkpoint?: CheckpointOptions) => {
      const before = tf.memory().numBytes;
      let bytes = 0;
      const { value, grads } = tf.variableGrads(() => {
        const loss = diffusionLoss({ params, config: model.unet.config }, schedule, input, { predictionType: 'epsilon', checkpoint });
        // What the tape keeps for backprop (the forward's other intermediates are gone by now).
        bytes = tf.memory().numBytes - before;
        return loss;
      }, [...vars.values()]);
      tf.dispose([value, ...Object.values(grads)]);
      return bytes;
    };
    const plain = held();
    const ck = held(ALL);
    Object.assign(heldBytes, { plain, checkpointed: ck });
    expect(ck).toBeLessThan(plain / 2);
    tf.dispose([...vars.values()]);
  });

  it('leaks no tensor across training steps (after one burn-in step)', () => {
    const vars = new Map([...model.unet.params].map(([k, t]) => [k, tf.variable(t, true, `ck_leak/${k}`)]));
    const params: Params = new Map(vars);
    const schedule = noiseSchedule(model.scheduler);
    const step = () => {
      const { value, grads } = tf.variableGrads(
        () => diffusionLoss({ params, config: model.unet.config }, schedule, input, { predictionType: 'epsilon', checkpoint: ALL }),
        [...vars.values()],
      );
      tf.dispose([value, ...Object.values(grads)]);
      // Textual Inversion's case: frozen weights, the gradient w.r.t. the context only.
      const f = (ehs: tf.Tensor) => diffusionLoss(model.unet, schedule, { ...input, encoderHiddenStates: ehs as tf.Tensor3D }, { predictionType: 'epsilon', checkpoint: NONE });
      tf.grad(f)(input.encoderHiddenStates).dispose();
      // Inference through the same path keeps nothing either.
      diffusionLoss({ params, config: model.unet.config }, schedule, input, { predictionType: 'epsilon', checkpoint: ALL }).dispose();
    };
    step();
    const before = tf.memory().numTensors;
    step();
    step();
    expect(tf.memory().numTensors).toBe(before);
    tf.dispose([...vars.values()]);
  });
});

describe('DreamBooth LoRA with gradient checkpointing', () => {
  const SETTINGS: DreamBoothSettings = {
    identifier: 'cus',
    className: 'cat',
    instancePrompt: 'a photo of cus cat',
    classPrompt: 'a photo of a cat',
    priorPreservation: false,
    priorWeight: 1,
    mode: 'lora',
    rank: 4,
    alpha: 4,
    trainTextEncoder: false,
    resolution: 32,
    centerCrop: true,
    flip: false,
    batch: 2,
    minSnrGamma: 0,
    noiseOffset: 0,
    seed: 5,
    validationPrompt: 'a photo of cus cat',
    format: 'diffusers',
    baseModelHash: 'test',
  };

  it('every adapter gradient and the loss equal the plain ones', async () => {
    const files = fs.readdirSync(PHOTOS).sort().slice(0, 2);
    const images = await Promise.all(files.map((f) => readSourceImage(path.join(PHOTOS, f), 32)));
    const grads = (gradientCheckpointing: boolean) => {
      const setup = createDreamBooth(model, images, [], { ...SETTINGS, gradientCheckpointing });
      // up starts at 0 (so would every down gradient): set it to the same nonzero values in both runs.
      const rng = new Rng(9);
      for (const a of setup.lora!.adapters) {
        const up = tf.tidy(() => tf.mul(tf.tensor(rng.normals(a.up.size), a.up.shape), 0.1));
        a.up.assign(up);
        up.dispose();
      }
      const batch = setup.draw(new Rng(1));
      const r = lossAndGrads(setup.task.vars, () => setup.loss(batch, 'total'));
      setup.dispose();
      return r;
    };
    const plain = grads(false);
    const ck = grads(true);
    expect(ck.loss).toBe(plain.loss);
    compareGrads('lora', ck.grads, plain.grads);
    tf.dispose([...plain.grads.values(), ...ck.grads.values()]);
  });
});

/** Per-step losses a run logged in its train.log. */
function loggedLosses(runDir: string): number[] {
  return fs
    .readFileSync(path.join(runDir, 'train.log'), 'utf8')
    .trim()
    .split('\n')
    .map((l) => (JSON.parse(l) as { loss: number }).loss);
}

/**
 * The first step's loss is the same forward pass, bit for bit; later ones follow updates from
 * gradients that may differ in their last bits (they were equal on wasm).
 */
function expectSameLosses(checkpointed: number[], plain: number[]): void {
  expect(checkpointed.length).toBe(plain.length);
  expect(checkpointed[0]).toBe(plain[0]);
  checkpointed.forEach((l, i) => expect(Math.abs(l - plain[i]!) / plain[i]!).toBeLessThan(1e-6));
}

describe('invert and dreambooth with --gradient-checkpointing', () => {
  const common = { model: TINY_SD_A, steps: 2, resolution: 32, validationEvery: 0, backend: BACKEND, seed: 4 };

  it('invert: the same losses as without; the run keeps the setting on resume', async () => {
    const run = (gradientCheckpointing: boolean) =>
      invert({ ...common, dir: PHOTOS, token: '<ck-cat>', initToken: 'cat', gradientCheckpointing, out: path.join(tmp, `invert-${gradientCheckpointing}`), embeddingsDir: path.join(tmp, `emb-${gradientCheckpointing}`) });
    const plain = await run(false);
    const ck = await run(true);
    expectSameLosses(loggedLosses(ck.runDir), loggedLosses(plain.runDir));
    expect(JSON.parse(fs.readFileSync(path.join(ck.runDir, 'config.json'), 'utf8'))).toMatchObject({ gradientCheckpointing: true });
    expect(resolveRun('invert', { resume: 'latest', out: ck.runDir }, () => 'x').options.gradientCheckpointing).toBe(true);
    expect(() => resolveRun('invert', { resume: 'latest', out: ck.runDir, gradientCheckpointing: false }, () => 'x')).toThrow(/--gradient-checkpointing false \(the run has true\)/);
  });

  for (const mode of ['lora', 'full'] as const) {
    it(`dreambooth --mode ${mode}: the same losses as without`, async () => {
      const run = (gradientCheckpointing: boolean) =>
        dreambooth({ ...common, dir: PHOTOS, class: 'cat', mode, priorPreservation: false, gradientCheckpointing, out: path.join(tmp, `db-${mode}-${gradientCheckpointing}`) });
      const plain = await run(false);
      const ck = await run(true);
      expectSameLosses(loggedLosses(ck.runDir), loggedLosses(plain.runDir));
    });
  }
});
