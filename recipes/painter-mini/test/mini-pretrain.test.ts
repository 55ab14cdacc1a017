/**
 * painter-mini's pretraining recipe at micro scale (tiny widths, 32×32, a few steps): the stages
 * run, the losses are finite and the VAE's falls, the output is a diffusers folder that loads
 * and generates, and a run interrupted in either stage resumes to exactly the uninterrupted
 * run's losses.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { disposeModel } from '../../../src/core/model.js';
import { sampleImages, type GeneratedImage } from '../../../src/core/pipeline/generate.js';
import { InterruptedError, PainterError } from '../../../src/errors.js';
import { loadModel } from '../../../src/io/load-model.js';
import { noiseSchedule, parseSchedulerConfig, type SchedulerConfig } from '../../../src/core/schedulers/index.js';
import { MINI_SIZES, miniConfigs, miniParamCounts, miniSchedulerJson, MINI_MAX_BYTES, type MiniSizes } from '../mini-config.js';
import { clipTextParamShapes } from '../../../src/core/models/clip-text.js';
import { unetParamShapes } from '../../../src/core/models/unet.js';
import { vaeParamShapes } from '../../../src/core/models/vae.js';
import { initParams } from '../../../src/core/params.js';
import { loadWeights } from '../../../src/io/load-weights.js';
import { checkpointParams, latestCheckpoint } from '../../../src/train/engine.js';
import { pretrainMini, type PretrainResult, type PretrainSettings, type PretrainStage } from '../pretrain.js';
import { objectWeightMap } from '../pretrain-stages.js';
import { main as pretrainCli } from '../pretrain-cli.js';
import { objectMask } from '../render.js';
import { sceneForSubject } from '../world.js';
import { Rng } from '../../../src/core/random.js';
import { useBackend } from '../../../test/helpers.js';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'painter-pretrain-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));
beforeAll(() => useBackend());

const MICRO: MiniSizes = {
  imageSize: 32,
  vaeChannels: [8, 16, 16],
  vaeLayersPerBlock: 1,
  textHidden: 16,
  textLayers: 1,
  textHeads: 2,
  textIntermediate: 32,
  unetChannels: [16, 32],
  unetLayersPerBlock: 1,
  unetHeads: 2,
  vaeNormGroups: 2,
  unetNormGroups: 4,
};

const VAE_STEPS = 30;
const TEXT_STEPS = 6;
const LDM_STEPS = 4;

function settings(name: string, resume = false): Partial<PretrainSettings> {
  return {
    seed: 3,
    out: path.join(tmp, name, 'painter-mini'),
    runDir: path.join(tmp, name, 'run'),
    vaeSteps: VAE_STEPS,
    ldmSteps: LDM_STEPS,
    vaeBatch: 8,
    batch: 4,
    vaeLr: 1e-2,
    lr: 1e-3,
    textSteps: TEXT_STEPS,
    textBatch: 8,
    textLr: 3e-3,
    warmupSteps: 0,
    checkpointEvery: 10,
    bpeCaptions: 400,
    vocabSize: 600,
    scaleSamples: 8,
    sizes: MICRO,
    hiresSteps: 0,
    vaeHiresSteps: 0,
    decoderSteps: 0,
    jobs: 1,
    resume,
  };
}

type Losses = Record<PretrainStage, number[]>;

async function run(name: string, opts: { resume?: boolean; stopAt?: { stage: PretrainStage; step: number }; extra?: Partial<PretrainSettings> } = {}): Promise<{ result: PretrainResult; losses: Losses }> {
  const losses: Losses = { vae: [], 'vae-hires': [], text: [], ldm: [], hires: [], decoder: [] };
  let last: { stage: PretrainStage; step: number } | undefined;
  const result = await pretrainMini({ ...settings(name, opts.resume), ...opts.extra }, {
    onStep: (stage, r) => {
      losses[stage].push(r.loss);
      last = { stage, step: r.step };
    },
    shouldStop: () => opts.stopAt !== undefined && last?.stage === opts.stopAt.stage && last.step === opts.stopAt.step,
  }).catch((e: unknown) => {
    if (e instanceof InterruptedError) return Object.assign(e, { losses });
    throw e;
  });
  if (result instanceof InterruptedError) throw result;
  return { result, losses };
}

describe('painter-mini configs', () => {
  it('parse with the real parsers and fit the package limit', () => {
    const c = miniConfigs(MINI_SIZES, { vocabSize: 1000, bosTokenId: 998, eosTokenId: 999 });
    expect(c.unet.cross_attention_dim).toBe(c.textEncoder.hidden_size);
    expect(c.unet.sample_size).toBe(16);
    expect(c.vae.block_out_channels).toHaveLength(3);
    // The noise schedule must erase a 16×16 latent's mean colour by the last timestep (SNR of the
    // mean over h·w pixels = h·w·ᾱ/(1−ᾱ)); SD's scaled_linear schedule leaves it at 1.2.
    const meanSnr = (config: SchedulerConfig, t: number) => {
      const abar = noiseSchedule(config).alphasCumprod[t]!;
      return (16 * 16 * abar) / (1 - abar);
    };
    expect(meanSnr(c.scheduler, 999)).toBeLessThan(0.05);
    expect(meanSnr(c.scheduler, 900)).toBeLessThan(0.1);
    const sd = parseSchedulerConfig({ ...miniSchedulerJson(), beta_schedule: 'scaled_linear', beta_start: 0.00085, beta_end: 0.012 }, 'SD 1.x');
    expect(meanSnr(sd, 999)).toBeGreaterThan(1);
    const size = miniParamCounts(c);
    expect(size.float16Bytes).toBeLessThanOrEqual(MINI_MAX_BYTES);
    expect(size.total).toBeGreaterThan(5e6);
  });
});

describe('pretrainMini (micro scale)', () => {
  let reference: { result: PretrainResult; losses: Losses };

  beforeAll(async () => {
    reference = await run('a');
  }, 120_000);

  it('trains every stage with finite losses; the VAE loss falls', () => {
    const { vae, text, ldm } = reference.losses;
    expect(vae).toHaveLength(VAE_STEPS);
    expect(text).toHaveLength(TEXT_STEPS);
    expect(ldm).toHaveLength(LDM_STEPS);
    for (const l of [...vae, ...text, ...ldm]) expect(Number.isFinite(l)).toBe(true);
    const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
    expect(mean(vae.slice(-5))).toBeLessThan(0.8 * mean(vae.slice(0, 5)));
    const r = reference.result;
    expect(r.scalingFactor).toBeGreaterThan(0);
    expect(r.vae.finalLoss).toBeLessThan(r.vae.firstLoss);
  });

  it('saves a diffusers folder that loads and generates', async () => {
    const out = reference.result.out;
    const text = fs.readFileSync(path.join(out, 'README.md'), 'utf8');
    expect(text).toMatch(/seed 3/);
    expect(text).toMatch(/stage 1 \(vae\): 30 steps/);
    expect(text).toMatch(/stage 2 \(text encoder\): 6 steps × 8 captions.*accuracy on fresh captions object \d+%/);
    expect(text).toMatch(/stage 3 \(unet\): 4 steps/);
    const model = loadModel(out);
    try {
      expect(model.vae.config.scaling_factor).toBeCloseTo(reference.result.scalingFactor, 5);
      expect(model.textEncoder.config.vocab_size).toBe(reference.result.configs.textEncoder.vocab_size);
      const before = tf.memory().numTensors;
      const images: GeneratedImage[] = [];
      for await (const e of sampleImages(model, { prompt: 'a red cat on a blue background', negativePrompt: '', steps: 2, guidance: 3, scheduler: 'ddim', seed: 1, count: 1, batch: 1, width: 32, height: 32, clipSkip: 0 })) {
        if (e.kind === 'image') images.push(e.image);
      }
      expect(images).toHaveLength(1);
      expect(images[0]!.pixels).toHaveLength(32 * 32 * 3);
      expect(tf.memory().numTensors).toBe(before);
    } finally {
      disposeModel(model);
    }
  });

  it('freezes stage 2\'s text encoder: the diffusion checkpoints hold only the UNet, and the shipped text encoder is stage 2\'s', () => {
    const run = settings('a').runDir!;
    const ckpt = latestCheckpoint(path.join(run, 'ldm'))!;
    expect(checkpointParams(ckpt.dir, 'unet').size).toBeGreaterThan(0);
    expect(checkpointParams(ckpt.dir, 'text_encoder').size).toBe(0);
    const shapes = clipTextParamShapes(reference.result.configs.textEncoder);
    const stage2 = loadWeights([path.join(run, 'text', 'text_encoder', 'model.safetensors')], shapes, 'stage 2');
    const model = loadModel(reference.result.out);
    try {
      for (const [k, t] of stage2) {
        const [d, m] = tf.tidy(() => [tf.max(tf.abs(tf.sub(t, model.textEncoder.params.get(k)!))).dataSync()[0]!, tf.max(tf.abs(t)).dataSync()[0]!]);
        expect(d, k).toBeLessThanOrEqual(1e-3 * Math.max(1, m!)); // float16 rounding
      }
      const init = initParams(shapes, 3 * 8 + 3);
      const moved = tf.tidy(() => tf.max(tf.abs(tf.sub(init.get('text_model.final_layer_norm.weight')!, stage2.get('text_model.final_layer_norm.weight')!))).dataSync()[0]!);
      for (const t of init.values()) t.dispose();
      expect(moved).toBeGreaterThan(1e-4); // stage 2 trained it
    } finally {
      disposeModel(model);
      for (const t of stage2.values()) t.dispose();
    }
  });

  it('--snapshot writes the latest diffusion checkpoint as a loadable pipeline, without training', async () => {
    const snap = path.join(tmp, 'snapshot');
    const r = await pretrainMini({ ...settings('a'), snapshot: snap });
    expect(r.out).toBe(snap);
    const a = loadModel(reference.result.out);
    const b = loadModel(snap);
    try {
      // The last checkpoint is the final step: the snapshot is the shipped model in float32.
      for (const [k, t] of a.unet.params) {
        const [d, m] = tf.tidy(() => [tf.max(tf.abs(tf.sub(t, b.unet.params.get(k)!))).dataSync()[0]!, tf.max(tf.abs(t)).dataSync()[0]!]);
        expect(d, k).toBeLessThanOrEqual(1e-3 * Math.max(1, m!)); // float16 rounding
      }
      expect(b.tokenizer.encoder.size).toBe(a.tokenizer.encoder.size);
    } finally {
      disposeModel(a);
      disposeModel(b);
    }
    await expect(pretrainMini({ ...settings('never-trained'), snapshot: snap })).rejects.toThrow(/--snapshot: the VAE stages in .* have not finished/);
  });

  it('does not resume a diffusion stage begun on another noise schedule, target or loss', async () => {
    const ldm = path.join(settings('a').runDir!, 'ldm');
    const file = path.join(ldm, 'noise-schedule.json');
    const own = fs.readFileSync(file, 'utf8');
    const ours = 'the linear β schedule 0.0001–0.02 with v_prediction targets, uniform timesteps, object loss weight 0 and a text encoder pretrained for 6 steps, frozen';
    try {
      fs.writeFileSync(file, JSON.stringify({ ...JSON.parse(own), beta_schedule: 'scaled_linear', beta_start: 0.00085, beta_end: 0.012, prediction_type: 'epsilon' }));
      await expect(pretrainMini({ ...settings('a'), resume: true })).rejects.toThrow(
        `${ldm}: that diffusion stage was trained with the scaled_linear β schedule 0.00085–0.012 with epsilon targets, uniform timesteps, object loss weight 0 and a text encoder pretrained for 6 steps, frozen, this recipe uses ${ours}; remove ${ldm} to retrain it`,
      );
      fs.writeFileSync(file, JSON.stringify({ ...JSON.parse(own), timesteps: 'stratified', object_loss_weight: 3 }));
      await expect(pretrainMini({ ...settings('a'), resume: true })).rejects.toThrow(
        `that diffusion stage was trained with the linear β schedule 0.0001–0.02 with v_prediction targets, stratified timesteps, object loss weight 3 and a text encoder pretrained for 6 steps, frozen, this recipe uses ${ours}`,
      );
      // A run of the first recipe (no text_steps recorded): the text encoder was trained jointly.
      const { text_steps: _, ...joint } = JSON.parse(own) as Record<string, unknown>;
      fs.writeFileSync(file, JSON.stringify(joint));
      await expect(pretrainMini({ ...settings('a'), resume: true })).rejects.toThrow(/object loss weight 0 and the text encoder trained jointly, this recipe uses/);
    } finally {
      fs.writeFileSync(file, own);
    }
  });

  it('trains the diffusion stage with object-weighted loss and stratified timesteps when asked', async () => {
    // On run a's finished VAE (and vocabulary): only the diffusion stage runs.
    const w = settings('w', true);
    for (const part of ['vae', 'tokenizer', 'text']) fs.cpSync(path.join(settings('a').runDir!, part), path.join(w.runDir!, part), { recursive: true });
    const losses: number[] = [];
    const result = await pretrainMini({ ...w, objectLossWeight: 2, timesteps: 'stratified' }, { onStep: (stage, r) => void (stage === 'ldm' && losses.push(r.loss)) });
    expect(losses).toHaveLength(LDM_STEPS);
    for (const l of losses) expect(Number.isFinite(l)).toBe(true);
    expect(losses).not.toEqual(reference.losses.ldm);
    expect(result.scalingFactor).toBe(reference.result.scalingFactor);
    expect(JSON.parse(fs.readFileSync(path.join(w.runDir!, 'ldm', 'noise-schedule.json'), 'utf8'))).toMatchObject({ timesteps: 'stratified', object_loss_weight: 2 });
    expect(fs.readFileSync(path.join(result.out, 'README.md'), 'utf8')).toMatch(/weighted 3× on the latent pixels around the object, stratified timesteps/);
    expect(fs.readFileSync(path.join(reference.result.out, 'README.md'), 'utf8')).toMatch(/v-prediction MSE, uniform timesteps/);
  }, 120_000);

  it('stage 4 continues stage 3\'s UNet at twice the size, resumably, and ships a 64×64 model', async () => {
    // On run a's finished stages 0–3: only stage 4 runs. A vanishing learning rate keeps its
    // weights at its starting point, which must be stage 3's result.
    const hires = { hiresSteps: 3, lr: 1e-9 };
    for (const name of ['h1', 'h2']) for (const part of ['vae', 'tokenizer', 'text', 'ldm']) fs.cpSync(path.join(settings('a').runDir!, part), path.join(settings(name).runDir!, part), { recursive: true });
    const whole = await run('h1', { resume: true, extra: hires });
    expect(whole.losses.vae).toEqual([]);
    expect(whole.losses.ldm).toEqual([]);
    expect(whole.losses.hires).toHaveLength(3);
    for (const l of whole.losses.hires) expect(Number.isFinite(l)).toBe(true);
    expect(whole.result.hires?.steps).toBe(3);
    expect(fs.readFileSync(path.join(whole.result.out, 'README.md'), 'utf8')).toMatch(/stage 4 \(unet at 64×64\): stage 3's weights, 3 more steps/);
    const snap = path.join(tmp, 'snapshot-hires');
    await pretrainMini({ ...settings('h1'), ...hires, snapshot: snap });
    const stage3 = loadWeights([path.join(settings('a').runDir!, 'ldm', 'unet', 'diffusion_pytorch_model.safetensors')], unetParamShapes(reference.result.configs.unet), 'stage 3');
    const init = initParams(unetParamShapes(reference.result.configs.unet), 3 * 8 + 2);
    const model = loadModel(snap);
    try {
      expect(model.unet.config.sample_size).toBe(16);
      const maxDiff = (a: tf.Tensor, b: tf.Tensor) => tf.tidy(() => tf.max(tf.abs(tf.sub(a, b))).dataSync()[0]!);
      const key = 'conv_in.weight';
      expect(maxDiff(model.unet.params.get(key)!, stage3.get(key)!)).toBeLessThan(1e-6);
      expect(maxDiff(init.get(key)!, stage3.get(key)!)).toBeGreaterThan(1e-4); // stage 3 trained it
      const images: GeneratedImage[] = [];
      for await (const e of sampleImages(model, { prompt: 'a red cat', negativePrompt: '', steps: 1, guidance: 3, scheduler: 'ddim', seed: 1, count: 1, batch: 1, width: 64, height: 64, clipSkip: 0 })) {
        if (e.kind === 'image') images.push(e.image);
      }
      expect(images[0]!.pixels).toHaveLength(64 * 64 * 3);
    } finally {
      disposeModel(model);
      for (const t of [...stage3.values(), ...init.values()]) t.dispose();
    }
    // Interrupted after its first step and resumed: the same losses.
    await expect(run('h2', { resume: true, extra: hires, stopAt: { stage: 'hires', step: 1 } })).rejects.toBeInstanceOf(InterruptedError);
    const rest = await run('h2', { resume: true, extra: hires });
    expect(rest.losses.hires).toEqual(whole.losses.hires.slice(1));
    await expect(pretrainMini({ ...settings('h3'), sizes: { ...MICRO, imageSize: 64 }, hiresSteps: 2 })).rejects.toThrow('--hires-steps 2: stage 4 trains at twice --size');
    // Stage 3 retrained (its folder removed): the old stage 4 is not reused.
    fs.rmSync(path.join(settings('h2').runDir!, 'ldm'), { recursive: true });
    await expect(pretrainMini({ ...settings('h2', true), ...hires })).rejects.toThrow(/ldm-hires: stage 4 was begun from a finished stage 3 that .* no longer holds; remove/);
  }, 120_000);

  it('stage 1b continues the whole VAE at twice the size before any latent is taken, resumably', async () => {
    const extra = { vaeHiresSteps: 3, hiresSteps: 2 };
    for (const name of ['v1', 'v2']) for (const part of ['vae', 'tokenizer']) fs.cpSync(path.join(settings('a').runDir!, part), path.join(settings(name).runDir!, part), { recursive: true });
    const whole = await run('v1', { resume: true, extra });
    expect(whole.losses.vae).toEqual([]);
    expect(whole.losses['vae-hires']).toHaveLength(3);
    expect(whole.losses.hires).toHaveLength(2);
    // The latents, and so the scaling factor, are the tuned VAE's.
    expect(whole.result.scalingFactor).not.toBe(reference.result.scalingFactor);
    expect(JSON.parse(fs.readFileSync(path.join(settings('v1').runDir!, 'ldm', 'scaling-factor.json'), 'utf8'))).toEqual({ scalingFactor: whole.result.scalingFactor, vaeSteps: VAE_STEPS, vaeHiresSteps: 3 });
    expect(fs.readFileSync(path.join(whole.result.out, 'README.md'), 'utf8')).toMatch(/stage 1b \(vae at 64×64\): stage 1's weights, 3 more steps/);
    const shapes = vaeParamShapes(reference.result.configs.vae);
    const stage1 = loadWeights([path.join(settings('a').runDir!, 'vae', 'vae', 'diffusion_pytorch_model.safetensors')], shapes, 'stage 1');
    const shipped = loadModel(whole.result.out);
    try {
      const maxDiff = (a: tf.Tensor, b: tf.Tensor) => tf.tidy(() => tf.max(tf.abs(tf.sub(a, b))).dataSync()[0]!);
      for (const key of ['encoder.conv_in.weight', 'decoder.conv_out.weight']) expect(maxDiff(shipped.vae.params.get(key)!, stage1.get(key)!)).toBeGreaterThan(1e-3);
    } finally {
      disposeModel(shipped);
      for (const t of stage1.values()) t.dispose();
    }
    await expect(run('v2', { resume: true, extra, stopAt: { stage: 'vae-hires', step: 1 } })).rejects.toBeInstanceOf(InterruptedError);
    const rest = await run('v2', { resume: true, extra });
    expect(rest.losses['vae-hires']).toEqual(whole.losses['vae-hires'].slice(1));
    expect(rest.losses.ldm).toEqual(whole.losses.ldm);
    await expect(pretrainMini({ ...settings('v3'), vaeHiresSteps: 2 })).rejects.toThrow('--vae-hires-steps 2: stage 1b trains the VAE at stage 4\'s size; give --hires-steps too');
    // Without stage 1b now, the diffusion stage trained on its VAE is stale; likewise stage 1b once stage 1 is retrained.
    await expect(pretrainMini({ ...settings('v2', true), hiresSteps: 2 })).rejects.toThrow(/ldm\/ was trained on another VAE/);
    fs.rmSync(path.join(settings('v2').runDir!, 'vae'), { recursive: true });
    await expect(pretrainMini({ ...settings('v2', true), ...extra })).rejects.toThrow(/vae-hires\/ was trained on another VAE .* or remove .*vae-hires to retrain it/);
  }, 120_000);

  it('stage 3 learns from partial captions with captionOmit, and keeps to them when resumed', async () => {
    for (const part of ['vae', 'tokenizer', 'text']) fs.cpSync(path.join(settings('a').runDir!, part), path.join(settings('c1').runDir!, part), { recursive: true });
    const partial = await run('c1', { resume: true, extra: { captionOmit: 0.3 } });
    expect(partial.losses.text).toEqual([]);
    expect(partial.losses.ldm).toHaveLength(LDM_STEPS);
    // The same images, noise and timesteps, other captions: other losses.
    expect(partial.losses.ldm).not.toEqual(reference.losses.ldm);
    expect(JSON.parse(fs.readFileSync(path.join(settings('c1').runDir!, 'ldm', 'captions.json'), 'utf8'))).toEqual({ captionOmit: 0.3 });
    expect(fs.readFileSync(path.join(partial.result.out, 'README.md'), 'utf8')).toMatch(/the colour, the pattern and the background each left out of 30%/);
    await expect(pretrainMini(settings('c1', true))).rejects.toThrow(/ldm\/ was trained with --caption-omit 0\.3; keep it at that, or remove .*ldm to retrain it/);
    // Nor is a stage 3 trained on full captions reused for partial ones.
    await expect(pretrainMini({ ...settings('a', true), captionOmit: 0.2 })).rejects.toThrow(/ldm\/ was trained with --caption-omit 0;/);
  }, 120_000);

  it('stage 5 fine-tunes only the VAE decoder, resumably: the encoder (and so the latents) stays stage 1\'s', async () => {
    const decoder = { decoderSteps: 4 };
    for (const name of ['d1', 'd2']) for (const part of ['vae', 'tokenizer', 'text', 'ldm']) fs.cpSync(path.join(settings('a').runDir!, part), path.join(settings(name).runDir!, part), { recursive: true });
    const whole = await run('d1', { resume: true, extra: decoder });
    expect(whole.losses.vae).toEqual([]);
    expect(whole.losses.ldm).toEqual([]);
    expect(whole.losses.decoder).toHaveLength(4);
    for (const l of whole.losses.decoder) expect(Number.isFinite(l)).toBe(true);
    expect(fs.readFileSync(path.join(whole.result.out, 'README.md'), 'utf8')).toMatch(/stage 5 \(vae decoder at 32×32\): stage 1's decoder and post_quant_conv, 4 more steps/);
    const shapes = vaeParamShapes(reference.result.configs.vae);
    const file = (dir: string) => path.join(dir, 'vae', 'diffusion_pytorch_model.safetensors');
    const stage1 = loadWeights([file(path.join(settings('a').runDir!, 'vae'))], shapes, 'stage 1');
    const stage5 = loadWeights([file(path.join(settings('d1').runDir!, 'vae-decoder'))], shapes, 'stage 5');
    const shipped = loadModel(whole.result.out);
    try {
      const maxDiff = (a: tf.Tensor, b: tf.Tensor) => tf.tidy(() => tf.max(tf.abs(tf.sub(a, b))).dataSync()[0]!);
      for (const key of ['encoder.conv_in.weight', 'quant_conv.weight']) expect(maxDiff(stage5.get(key)!, stage1.get(key)!)).toBe(0);
      for (const key of ['decoder.conv_out.weight', 'post_quant_conv.weight']) expect(maxDiff(stage5.get(key)!, stage1.get(key)!)).toBeGreaterThan(1e-4);
      // The shipped (float16) VAE is stage 5's.
      expect(maxDiff(shipped.vae.params.get('decoder.conv_out.weight')!, stage5.get('decoder.conv_out.weight')!)).toBeLessThan(1e-3);
    } finally {
      disposeModel(shipped);
      for (const t of [...stage1.values(), ...stage5.values()]) t.dispose();
    }
    // --jobs 2: stage 5 in a second process beside the others, to the same weights and losses.
    for (const part of ['vae', 'tokenizer', 'text', 'ldm']) fs.cpSync(path.join(settings('a').runDir!, part), path.join(settings('d3').runDir!, part), { recursive: true });
    const lines: string[] = [];
    const sideLosses: number[] = [];
    await pretrainMini({ ...settings('d3', true), ...decoder, jobs: 2 }, { log: (l) => void lines.push(l), onStep: (stage, r) => void (stage === 'decoder' && sideLosses.push(r.loss)) });
    expect(lines.join('\n')).toMatch(/stage 5 \(vae decoder\) starts in a second process \(pid \d+\)[^]*stage 5 \(vae decoder, frozen encoder\): finished earlier \(4 steps\)/);
    expect(sideLosses).toEqual(whole.losses.decoder);
    const bytes = (name: string) => fs.readFileSync(file(path.join(settings(name).runDir!, 'vae-decoder')));
    expect(bytes('d3').equals(bytes('d1'))).toBe(true);
    await expect(run('d2', { resume: true, extra: decoder, stopAt: { stage: 'decoder', step: 2 } })).rejects.toBeInstanceOf(InterruptedError);
    const rest = await run('d2', { resume: true, extra: decoder });
    expect(rest.losses.decoder).toEqual(whole.losses.decoder.slice(2));
    // Stage 1 retrained (its folder removed): the old decoder is not reused.
    for (const part of ['vae', 'ldm']) fs.rmSync(path.join(settings('d2').runDir!, part), { recursive: true });
    await expect(pretrainMini({ ...settings('d2', true), ...decoder })).rejects.toThrow(/vae-decoder\/ was trained on another VAE \(--vae-steps, --vae-hires-steps\); keep those at what they were, or remove .*vae-decoder to retrain it/);
  }, 120_000);

  it('--jobs 2: a stop reaches stage 5\'s second process, which checkpoints; the run resumes from there', async () => {
    for (const part of ['vae', 'tokenizer', 'text', 'ldm']) fs.cpSync(path.join(settings('a').runDir!, part), path.join(settings('j1').runDir!, part), { recursive: true });
    const steps = 60;
    const seen: number[] = [];
    const first = pretrainMini({ ...settings('j1', true), decoderSteps: steps, jobs: 2 }, { onStep: (stage, r) => void (stage === 'decoder' && seen.push(r.step)), shouldStop: () => seen.length > 0 });
    await expect(first).rejects.toBeInstanceOf(InterruptedError);
    const stopped = latestCheckpoint(path.join(settings('j1').runDir!, 'vae-decoder'));
    expect(stopped?.step).toBe(seen.at(-1));
    expect(stopped!.step).toBeLessThan(steps);
    const rest: number[] = [];
    await pretrainMini({ ...settings('j1', true), decoderSteps: steps, jobs: 1 }, { onStep: (stage, r) => void (stage === 'decoder' && rest.push(r.step)) });
    expect(rest[0]).toBe(stopped!.step + 1);
    expect(rest.at(-1)).toBe(steps);
  }, 120_000);

  it('resumes an interrupted stage to exactly the uninterrupted losses', async () => {
    await expect(run('b', { stopAt: { stage: 'vae', step: 12 } })).rejects.toBeInstanceOf(InterruptedError);
    await expect(run('b')).rejects.toThrow(PainterError);
    const second = await run('b', { resume: true, stopAt: { stage: 'text', step: 3 } }).catch((e: unknown) => e);
    expect(second).toBeInstanceOf(InterruptedError);
    expect((second as { losses: Losses }).losses.vae).toEqual(reference.losses.vae.slice(12));
    expect((second as { losses: Losses }).losses.text).toEqual(reference.losses.text.slice(0, 3));
    const third = await run('b', { resume: true, stopAt: { stage: 'ldm', step: 2 } }).catch((e: unknown) => e);
    expect(third).toBeInstanceOf(InterruptedError);
    const seen = (third as { losses: Losses }).losses;
    expect(seen.vae).toEqual([]);
    expect(seen.text).toEqual(reference.losses.text.slice(3));
    expect(seen.ldm).toEqual(reference.losses.ldm.slice(0, 2));
    const last = await run('b', { resume: true });
    // The finished VAE and text stages are reused; the diffusion stage continues from step 2.
    expect(last.losses.vae).toEqual([]);
    expect(last.losses.text).toEqual([]);
    expect(last.losses.ldm).toEqual(reference.losses.ldm.slice(2));
    expect(last.result.vae.finalLoss).toBe(reference.result.vae.finalLoss);
    expect(last.result.ldm.finalLoss).toBe(reference.result.ldm.finalLoss);
    expect(last.result.scalingFactor).toBe(reference.result.scalingFactor);
  }, 120_000);
});

describe('object-weighted diffusion loss', () => {
  it('weighs the latent pixels the object touches, and their neighbours, 1 + w; the rest 1', async () => {
    const subject = { object: 'house', colour: 'red', pattern: 'plain', patternColour: null, features: [] } as const;
    const scene = sceneForSubject(subject, new Rng(1), { size: 'small', position: 'left' });
    const mask = await objectMask(scene, 64);
    const map = objectWeightMap(mask, 64, 4, 3);
    expect(map.length).toBe(16 * 16);
    expect(new Set(map)).toEqual(new Set([1, 4]));
    for (let y = 0; y < 16; y++) {
      for (let x = 0; x < 16; x++) {
        // Expected: some body pixel within the 3×3 latent neighbourhood (12×12 pixels).
        let near = false;
        for (let py = Math.max(0, (y - 1) * 4); py < Math.min(64, (y + 2) * 4); py++) for (let px = Math.max(0, (x - 1) * 4); px < Math.min(64, (x + 2) * 4); px++) near ||= mask[py * 64 + px]! > 0;
        expect(map[y * 16 + x], `latent (${x}, ${y})`).toBe(near ? 4 : 1);
      }
    }
    // A small object on the left leaves the right-hand columns at weight 1.
    expect(Array.from({ length: 16 }, (_, y) => map[y * 16 + 15])).toEqual(Array(16).fill(1));
    expect(map.filter((v) => v === 4).length).toBeGreaterThan(9);
  });

  it('pretrain:mini rejects a bad --object-loss-weight or --caption-omit with one line naming the flag', async () => {
    await expect(pretrainCli(['--object-loss-weight=-1'])).rejects.toThrow('--object-loss-weight -1: give a number, 0 or more');
    await expect(pretrainCli(['--object-loss-weight', 'lots'])).rejects.toThrow('--object-loss-weight lots: give a number, 0 or more');
    await expect(pretrainCli(['--timesteps', 'log-normal'])).rejects.toThrow('--timesteps log-normal: choose uniform or stratified');
    for (const bad of ['1', '-0.1', 'half', '']) await expect(pretrainCli([`--caption-omit=${bad}`])).rejects.toThrow(`--caption-omit ${bad}: give a fraction from 0 up to (not including) 1`);
    await expect(pretrainCli(['--size', '64', '--hires-steps', '10'])).rejects.toThrow('--hires-steps 10: stage 4 trains at twice --size, and painter-mini\'s largest size is 64; give --size 32');
  });
});
