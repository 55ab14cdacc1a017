/**
 * Parity on the webgpu backend: the components, the 10-step pipeline, the training gradients, the
 * LoRA interop image and the Textual Inversion interop embeddings against the diffusers reference
 * with the wasm tests' tolerances; and `painter generate`, `invert` and `dreambooth` with
 * `--backend webgpu` against the same commands on wasm. Without a WebGPU adapter the file is
 * skipped with one line saying why.
 *
 * On webgpu, Node cannot read tensors synchronously (dataSync reaches for OffscreenCanvas):
 * every read here is `await data()`, and token ids reach the text encoder as host rows.
 */
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { selectBackend } from '../src/backend/select.js';
import { adapterLine, shutdownWebgpu, webgpuAdapter } from '../src/backend/webgpu.js';
import { applyEmbeddings } from '../src/core/embeddings.js';
import { applyLora, disposeLora } from '../src/core/lora.js';
import { disposeModel, type StableDiffusion } from '../src/core/model.js';
import { clipTextForward } from '../src/core/models/clip-text.js';
import { unetForward } from '../src/core/models/unet.js';
import { vaeDecode, vaeEncode } from '../src/core/models/vae.js';
import { decodeLatents, decodeLatentsRaw, denoise, denoiseAll, encodePrompts, promptIdRows } from '../src/core/pipeline/text-to-image.js';
import { createScheduler, noiseSchedule, type SchedulerKind } from '../src/core/schedulers/index.js';
import { addTokens } from '../src/core/tokenizer/clip-tokenizer.js';
import { diffusionLoss } from '../src/core/training/loss.js';
import { readEmbeddingFile } from '../src/io/embeddings.js';
import { loadModel } from '../src/io/load-model.js';
import { parsePythonJson } from '../src/io/load-weights.js';
import { editLoop, encodeEditPrompts, type EditRequest } from '../src/core/pipeline/edit.js';
import { disposeConditioning } from '../src/core/prompt/conditioning.js';
import { PromptToPromptControl } from '../src/core/pipeline/prompt-to-prompt.js';
import { readLoraFile } from '../src/io/lora-files.js';
import { loadSafetensors, writeSafetensors, type HostTensor } from '../src/io/safetensors.js';
import { FIXTURES, hostToTensor, nchwToNhwc, nhwcToNchw, REFERENCE, relErrorAsync, ROOT, TINY_SD_A, type CliRun } from './helpers.js';
import { INTEROP } from './interop-helpers.js';

/** Why webgpu cannot run here (one line), or undefined when it selected an adapter. */
async function webgpuProblem(): Promise<string | undefined> {
  try {
    await selectBackend('webgpu');
    return undefined;
  } catch (e) {
    const line = (e as Error).message.split('\n')[0]!;
    return line.match(/cannot be used \((.*?)\); /)?.[1] ?? line;
  }
}

const problem = await webgpuProblem();
const TITLE =
  problem === undefined
    ? `webgpu parity (${adapterLine(webgpuAdapter()!)})`
    : `webgpu parity skipped: ${problem}; a machine without a GPU can install Mesa's lavapipe as a software adapter (../shared/tools/webgpu-cpu.sh)`;
// The default reporter does not list skipped suites' titles: say why once.
if (problem !== undefined) console.warn(TITLE);

/** Worst relative error per component, printed at the end (the parity table). */
const worst: Record<string, number> = {};
function track(name: string, err: number): number {
  worst[name] = Math.max(worst[name] ?? 0, err);
  return err;
}

/** A reference file's tensors on the host (no device read-back needed). */
function hostReference(file: string): Map<string, HostTensor> {
  return loadSafetensors(path.isAbsolute(file) ? file : path.join(REFERENCE, file)).tensors;
}

function host(m: Map<string, HostTensor>, key: string): HostTensor {
  const t = m.get(key);
  if (!t) throw new Error(`reference tensor "${key}" missing`);
  return t;
}

const numbers = (t: HostTensor): number[] => Array.from(t.data as ArrayLike<number | bigint>, Number);

/** Integer rows [B, L] as host arrays (token ids for clipTextForward). */
function intRows(t: HostTensor): number[][] {
  const flat = numbers(t);
  const [rows, cols] = t.shape as [number, number];
  return Array.from({ length: rows }, (_, i) => flat.slice(i * cols, (i + 1) * cols));
}

/** A reference tensor on the device, NCHW converted to NHWC when asked. */
function device(m: Map<string, HostTensor>, key: string, nhwc = false): tf.Tensor {
  const t = hostToTensor(host(m, key));
  if (!nhwc) return t;
  const out = nchwToNhwc(t);
  t.dispose();
  return out;
}

/** Relative error of an NHWC result against an NCHW reference (or any layout when nchw = false). */
async function errorAgainst(actual: tf.Tensor, m: Map<string, HostTensor>, key: string, nchw = true): Promise<number> {
  const expected = device(m, key);
  const a = nchw ? nhwcToNchw(actual) : actual;
  try {
    return await relErrorAsync(a, expected);
  } finally {
    tf.dispose([expected, ...(a === actual ? [] : [a])]);
  }
}

const PHOTOS = path.join(FIXTURES, 'photos', 'cat');
const BACKENDS = ['webgpu', 'wasm'] as const;
type Backend = (typeof BACKENDS)[number];
type Runs = Record<Backend, CliRun>;

/** bin/painter with PAINTER_BACKEND unset (the flag decides), in its own process. */
function painter(args: string[], backend: Backend, cacheDir: string): Promise<CliRun> {
  const env: NodeJS.ProcessEnv = { ...process.env, PAINTER_CACHE_DIR: cacheDir };
  delete env['PAINTER_BACKEND'];
  const child = spawn(process.execPath, [path.join(ROOT, 'bin', 'painter'), ...args, '--backend', backend], { env, timeout: 300_000 });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d) => (stdout += String(d)));
  child.stderr.on('data', (d) => (stderr += String(d)));
  return new Promise((resolve) => {
    child.on('error', (e) => resolve({ code: -1, stdout, stderr: `${stderr}${e.message}` }));
    child.on('close', (code) => resolve({ code: code ?? -1, stdout, stderr }));
  });
}

/** stderr without the "Warning: …" lines Dawn prints on lavapipe. */
const ownStderr = (s: string): string =>
  s
    .split('\n')
    .filter((l) => !l.startsWith('Warning: '))
    .join('\n');

/** Each backend's run succeeded and printed no stack trace. */
function expectSuccess(runs: Runs): void {
  for (const b of BACKENDS) {
    expect(runs[b].code, `${b}: ${runs[b].stderr}`).toBe(0);
    expect(ownStderr(runs[b].stderr), b).not.toMatch(/\n\s+at /);
  }
}

interface CommandRuns {
  generate: Promise<Runs>;
  invert: Promise<Runs>;
  dreambooth: Promise<Runs>;
}

/**
 * Starts the command runs, one process at a time, webgpu then wasm for each command. They run
 * while the in-process tests compute: one lavapipe process leaves part of two cores idle (about
 * 1.6 busy), so overlapping saves time (one run each: 107 s one after the other, 92 s overlapped).
 */
function startCommands(tmp: string, latents: string): CommandRuns {
  const both = async (args: (b: Backend) => string[]): Promise<Runs> => {
    const cache = path.join(tmp, 'cache');
    const webgpu = await painter(args('webgpu'), 'webgpu', cache);
    return { webgpu, wasm: await painter(args('wasm'), 'wasm', cache) };
  };
  const generate = both((b) => [
    'generate', 'a photo of a cat', '--model', TINY_SD_A, '--scheduler', 'ddim', '--steps', '10', '--guidance', '7.5', '--latents', latents,
    '--out', path.join(tmp, `gen-${b}`), '--json',
  ]);
  const invert = generate.then(() =>
    both((b) => [
      'invert', PHOTOS, '--model', TINY_SD_A, '--steps', '2', '--resolution', '32', '--validation-every', '0', '--token', '<gpu-cat>', '--seed', '3',
      '--out', path.join(tmp, `invert-${b}`), '--embeddings-dir', path.join(tmp, `embeddings-${b}`), '--json',
    ]),
  );
  const dreambooth = invert.then(() =>
    both((b) => [
      'dreambooth', PHOTOS, '--class', 'cat', '--no-prior-preservation', '--model', TINY_SD_A, '--steps', '2', '--resolution', '32',
      '--validation-every', '0', '--seed', '3', '--out', path.join(tmp, `dreambooth-${b}`),
    ]),
  );
  return { generate, invert, dreambooth };
}

/** Worst per-tensor relative error of safetensors file `a` against `b` (same keys and shapes). */
function fileErrors(a: string, b: string, keys: (k: string) => boolean = () => true): { worst: number; key: string } {
  const ta = loadSafetensors(a).tensors;
  const tb = loadSafetensors(b).tensors;
  expect([...ta.keys()].sort()).toEqual([...tb.keys()].sort());
  let result = { worst: 0, key: '' };
  for (const [k, y] of tb) {
    if (!keys(k)) continue;
    const x = ta.get(k)!;
    expect(x.shape, k).toEqual(y.shape);
    let num = 0;
    let den = 0;
    for (let i = 0; i < y.data.length; i++) {
      num = Math.max(num, Math.abs(Number(x.data[i]) - Number(y.data[i])));
      den = Math.max(den, Math.abs(Number(y.data[i])));
    }
    const e = num / Math.max(den, 1e-30);
    if (e >= result.worst) result = { worst: e, key: k };
  }
  return result;
}

async function pixels(file: string): Promise<Buffer> {
  return (await sharp(file).raw().toBuffer({ resolveWithObject: true })).data;
}

async function maxAbsDiff(a: tf.Tensor, b: tf.Tensor): Promise<number> {
  const d = tf.tidy(() => tf.max(tf.abs(tf.sub(a, b))));
  const v = (await d.data())[0]!;
  d.dispose();
  return v;
}

describe.skipIf(problem !== undefined)(TITLE, () => {
  let model: StableDiffusion;
  let tmp: string;
  let commands: CommandRuns;
  beforeAll(async () => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'painter-webgpu-'));
    const latents = path.join(tmp, 'init-latents.safetensors');
    const init = hostReference('pipeline.safetensors').get('init_latents')!;
    await writeSafetensors(latents, { latents: { shape: init.shape, data: init.data as Float32Array } });
    commands = startCommands(tmp, latents);
    model = loadModel(TINY_SD_A);
  });
  afterAll(async () => {
    if (model) disposeModel(model);
    await shutdownWebgpu();
    if (commands) await Promise.allSettled(Object.values(commands));
    if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
    console.log('webgpu worst relative errors:', JSON.stringify(worst));
  }, 600_000);

  describe('components against diffusers / transformers (1e-4)', () => {
    it('CLIP text encoder: last_hidden_state and pooler_output', async () => {
      const r = hostReference('text_encoder.safetensors');
      const out = clipTextForward(model.textEncoder.params, model.textEncoder.config, intRows(host(r, 'input_ids')));
      const last = await errorAgainst(out.lastHiddenState, r, 'last_hidden_state', false);
      const pooled = await errorAgainst(out.pooled, r, 'pooler_output', false);
      tf.dispose([out.lastHiddenState, out.pooled]);
      expect(track('text_encoder.last_hidden_state', last)).toBeLessThan(1e-4);
      expect(track('text_encoder.pooler_output', pooled)).toBeLessThan(1e-4);
    }, 180_000);

    it('UNet forward on the reference inputs (int timesteps)', async () => {
      const r = hostReference('unet.safetensors');
      const sample = device(r, 'sample', true) as tf.Tensor4D;
      const ehs = device(r, 'encoder_hidden_states') as tf.Tensor3D;
      const t = device(r, 'timesteps_int');
      const out = unetForward(model.unet.params, model.unet.config, sample, t, ehs);
      expect(out.shape).toEqual([2, 32, 32, 4]);
      const err = await errorAgainst(out, r, 'noise_pred_int');
      tf.dispose([sample, ehs, t, out]);
      expect(track('unet.noise_pred_int', err)).toBeLessThan(1e-4);
    }, 180_000);

    it('VAE encode (latent_dist.mean) and decode', async () => {
      const r = hostReference('vae.safetensors');
      const image = device(r, 'image', true) as tf.Tensor4D;
      const post = vaeEncode(model.vae.params, model.vae.config, image);
      const mean = await errorAgainst(post.mean, r, 'latent_mean');
      const latent = device(r, 'decode_latent', true) as tf.Tensor4D;
      const decoded = vaeDecode(model.vae.params, model.vae.config, latent);
      const dec = await errorAgainst(decoded, r, 'decoded');
      tf.dispose([image, post.mean, post.logvar, post.std, latent, decoded]);
      expect(track('vae.latent_mean', mean)).toBeLessThan(1e-4);
      expect(track('vae.decoded', dec)).toBeLessThan(1e-4);
    }, 180_000);

    it('schedulers: the DDIM and DPM-Solver++ 2M loops on the reference model outputs, every step', async () => {
      const r = hostReference('schedulers.safetensors');
      const outputs = tf.unstack(device(r, 'model_outputs'));
      const cases: [SchedulerKind, string][] = [
        ['ddim', 'ddim.steps10.prev_sample'],
        ['dpm++2m', 'dpm.steps.prev_sample'],
      ];
      for (const [kind, key] of cases) {
        const s = createScheduler(kind, model.scheduler, 10);
        const expected = tf.unstack(device(r, key));
        let x = device(r, 'sample');
        for (const [i, t] of s.timesteps.entries()) {
          // DDIM and DPM-Solver++ leave the model input unscaled (scale_model_input is the identity).
          const out = s.step(outputs[i]!, t, x);
          track(`scheduler.${kind}.prev_sample`, await relErrorAsync(out.prevSample, expected[i]!));
          out.predOriginalSample?.dispose();
          x.dispose();
          x = out.prevSample;
        }
        tf.dispose([x, ...expected]);
        s.dispose();
      }
      tf.dispose(outputs);
      expect(worst['scheduler.ddim.prev_sample']).toBeLessThan(1e-4);
      expect(worst['scheduler.dpm++2m.prev_sample']).toBeLessThan(1e-4);
    }, 180_000);
  });

  it('10-step DDIM pipeline, guidance 7.5: every step\'s latents and the final image within 1e-3, pixels within 2/255', async () => {
    const r = hostReference('pipeline.safetensors');
    const prompt = encodePrompts(model, ['a photo of a cat']);
    const negative = encodePrompts(model, ['']);
    expect(track('pipeline.prompt_embeds', await errorAgainst(prompt, r, 'prompt_embeds', false))).toBeLessThan(1e-4);
    const scheduler = createScheduler('ddim', model.scheduler, 10);
    expect(scheduler.timesteps).toEqual(numbers(host(r, 'timesteps')));
    const init = device(r, 'init_latents', true) as tf.Tensor4D;
    const perStep = device(r, 'latents_per_step');
    const loop = denoise(model, { scheduler, promptEmbeds: prompt, negativeEmbeds: negative, guidance: 7.5, latents: init });
    let final: tf.Tensor4D;
    for (;;) {
      const s = loop.next();
      if (s.done) {
        final = s.value;
        break;
      }
      const expected = tf.tidy(() => perStep.slice([s.value.step, 0, 0, 0], [1, -1, -1, -1]));
      const latents = nhwcToNchw(s.value.latents);
      track('pipeline.latents_per_step', await relErrorAsync(latents, expected));
      tf.dispose([expected, latents]);
    }
    const raw = decodeLatentsRaw(model, final);
    const image = decodeLatents(model, final);
    const expectedImage = device(r, 'output_image_np');
    const latentErr = track('pipeline.output_latent', await errorAgainst(final, r, 'output_latent'));
    const rawErr = track('pipeline.decoded_unclamped', await errorAgainst(raw, r, 'decoded_unclamped'));
    const imageErr = track('pipeline.output_image_np', await relErrorAsync(image, expectedImage));
    const pixels = (await maxAbsDiff(image, expectedImage)) * 255;
    track('pipeline.image_pixels/255', pixels);
    tf.dispose([prompt, negative, init, perStep, final, raw, image, expectedImage]);
    scheduler.dispose();
    expect(worst['pipeline.latents_per_step']).toBeLessThan(1e-3);
    expect(latentErr).toBeLessThan(1e-3);
    expect(rawErr).toBeLessThan(1e-3);
    expect(imageErr).toBeLessThan(1e-3);
    expect(pixels).toBeLessThan(2);
  }, 300_000);

  describe('editing against diffusers (latents 1e-3, pixels 2/255)', () => {
    /** HWC host pixels of an NCHW reference image in [−1, 1] (or a mask). */
    const hwc = (t: HostTensor) => {
      const [, c, h, w] = t.shape as [number, number, number, number];
      const d = t.data as Float32Array;
      const out = new Float32Array(c * h * w);
      for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) for (let k = 0; k < c; k++) out[(y * w + x) * c + k] = d[k * h * w + y * w + x]!;
      return out;
    };
    const finish = async (name: string, r: Map<string, HostTensor>, final: tf.Tensor4D) => {
      const image = decodeLatents(model, final);
      const expected = device(r, `${name}.image`, true);
      const latentErr = track(`${name}.final_latents`, await errorAgainst(final, r, `${name}.final_latents`));
      const pixels = track(`${name}.image_pixels/255`, (await maxAbsDiff(image, expected)) * 255);
      tf.dispose([image, expected, final]);
      expect(latentErr).toBeLessThan(1e-3);
      expect(pixels).toBeLessThan(2);
    };

    it.each(['img2img.ddim_s060', 'blend.irregular_s075'])('%s', async (name) => {
      const r = hostReference('editing.safetensors');
      const info = (parsePythonJson(fs.readFileSync(path.join(REFERENCE, 'editing.json'), 'utf8')) as { cases: Record<string, { prompt: string; negative_prompt: string; strength: number; mask?: string }> }).cases[name]!;
      const draw = (k: string) => (r.has(`${name}.${k}`) ? (host(r, `${name}.${k}`).data as Float32Array) : undefined);
      const req: EditRequest = {
        prompt: info.prompt,
        negativePrompt: info.negative_prompt,
        steps: 10,
        guidance: 7.5,
        scheduler: 'ddim',
        seed: 0,
        clipSkip: 0,
        strength: info.strength,
        width: 64,
        height: 64,
        image: hwc(host(r, 'input.image')),
        draws: { posterior: draw('posterior_noise') ?? draw('posterior_noise_image'), noise: draw('noise'), posteriorMasked: draw('posterior_noise_masked_image') },
        ...(info.mask && { mask: hwc(host(r, info.mask)) }),
      };
      const cond = encodeEditPrompts(model, req);
      const loop = editLoop(model, req, 0, cond);
      let s = loop.next();
      while (!s.done) s = loop.next();
      disposeConditioning(cond);
      await finish(name, r, s.value);
    }, 300_000);

    it('p2p.replace (Prompt-to-Prompt word swap)', async () => {
      const r = hostReference('editing.safetensors');
      const prompts = ['a photo of a cat on a green background', 'a photo of a dog on a green background'];
      const control = new PromptToPromptControl(model.tokenizer, { source: prompts[0]!, target: prompts[1]!, crossReplace: 0.4, selfReplace: 0.4, steps: 10, length: 77 }, true);
      const promptEmbeds = encodePrompts(model, prompts);
      const negativeEmbeds = encodePrompts(model, ['', '']);
      const latents = device(r, 'p2p.replace.init_latents', true) as tf.Tensor4D;
      const loop = denoise(model, { scheduler: createScheduler('ddim', model.scheduler, 10), promptEmbeds, negativeEmbeds, guidance: 7.5, latents, attentionControl: control });
      let s = loop.next();
      while (!s.done) s = loop.next();
      control.dispose();
      tf.dispose([promptEmbeds, negativeEmbeds, latents]);
      await finish('p2p.replace', r, s.value);
    }, 300_000);
  });

  describe('training gradients (one backward pass through text encoder and UNet, 1e-4)', () => {
    const got = { loss: 0, lossRef: 0, convIn: 0, tiRow: 0 };
    beforeAll(async () => {
      // A model of its own: the probe token is added to its tokenizer.
      const probe = loadModel(TINY_SD_A);
      const r = hostReference('training.safetensors');
      const catRow = numbers(host(r, 'ti_token_id'))[0]!;
      const [id] = addTokens(probe.tokenizer, ['<probe>']);
      const table = probe.textEncoder.params.get('text_model.embeddings.token_embedding.weight')!;
      // A new token row initialised from "cat", in prompts where it replaces "cat": the text encoder
      // sees the reference's vectors, so its gradient is diffusers' gradient of the cat row.
      const rows = tf.variable(table.slice([catRow, 0], [1, -1]), true, 'webgpu_probe_rows');
      const convIn = tf.variable(probe.unet.params.get('conv_in.weight')!.clone(), true, 'webgpu_probe_conv_in');
      const unetParams = new Map(probe.unet.params);
      unetParams.set('conv_in.weight', convIn);
      const ids = promptIdRows(probe, ['a photo of a <probe>', 'a painting of a <probe> in the forest']);
      const latents = device(r, 'latents', true) as tf.Tensor4D;
      const noise = device(r, 'noise', true) as tf.Tensor4D;
      const { value, grads } = tf.variableGrads(() => {
        const ehs = clipTextForward(probe.textEncoder.params, probe.textEncoder.config, ids, { extraTokens: { offset: id!, rows } }).lastHiddenState;
        return diffusionLoss(
          { params: unetParams, config: probe.unet.config },
          noiseSchedule(probe.scheduler),
          { latents, noise, timesteps: numbers(host(r, 'timesteps')), encoderHiddenStates: ehs },
          { predictionType: 'epsilon' },
        );
      }, [rows, convIn]);
      got.loss = (await value.data())[0]!;
      got.lossRef = numbers(host(r, 'loss'))[0]!;
      // conv_in gradient: tfjs HWIO → PyTorch OIHW.
      const gConv = grads[convIn.name]!.transpose([3, 2, 0, 1]);
      got.convIn = await errorAgainst(gConv, r, 'grad_conv_in_weight', false);
      const gRow = grads[rows.name]!.reshape([-1]);
      got.tiRow = await errorAgainst(gRow, r, 'grad_token_embedding_row', false);
      tf.dispose([rows, convIn, latents, noise, value, gConv, gRow, ...Object.values(grads)]);
      disposeModel(probe);
    }, 300_000);

    it('training loss and d(loss)/d conv_in.weight', () => {
      expect(track('training.loss', Math.abs(got.loss - got.lossRef) / got.lossRef)).toBeLessThan(1e-4);
      expect(track('training.grad_conv_in_weight', got.convIn)).toBeLessThan(1e-4);
    });

    it('Textual Inversion: a new token row initialised from "cat" gets diffusers\' gradient of the cat row', () => {
      expect(track('training.grad_token_embedding_row (TI)', got.tiRow)).toBeLessThan(1e-4);
    });
  });

  describe('interop with diffusers: ids exact, embeds 1e-4; the image (DDIM, 10 steps, guidance 7.5) latents 1e-3, pixels 2/255', () => {
    const interop = (): Map<string, HostTensor> => hostReference(path.join(INTEROP, 'reference', 'interop.safetensors'));

    /** interop-helpers' generate + compareCase, read asynchronously; `sample` runs the generation too. */
    async function checkCase(m: StableDiffusion, prompt: string, name: string, sample: boolean): Promise<void> {
      const r = interop();
      expect(promptIdRows(m, [prompt])[0], name).toEqual(numbers(host(r, `${name}.input_ids`)));
      expect(promptIdRows(m, [''])[0], name).toEqual(numbers(host(r, 'negative_input_ids')));
      const promptEmbeds = encodePrompts(m, [prompt]);
      const negativeEmbeds = encodePrompts(m, ['']);
      expect(track(`${name}.prompt_embeds`, await errorAgainst(promptEmbeds, r, `${name}.prompt_embeds`, false)), name).toBeLessThan(1e-4);
      expect(track(`${name}.negative_prompt_embeds`, await errorAgainst(negativeEmbeds, r, `${name}.negative_prompt_embeds`, false)), name).toBeLessThan(1e-4);
      if (sample) {
        const scheduler = createScheduler('ddim', m.scheduler, 10);
        const init = device(r, 'init_latents', true) as tf.Tensor4D;
        const latents = denoiseAll(m, { scheduler, promptEmbeds, negativeEmbeds, guidance: 7.5, latents: init });
        const image = decodeLatents(m, latents);
        const expectedImage = device(r, `${name}.image`);
        const latentErr = track(`${name}.latents`, await errorAgainst(latents, r, `${name}.latents`));
        const pixels = track(`${name}.image_pixels/255`, (await maxAbsDiff(image, expectedImage)) * 255);
        tf.dispose([init, latents, image, expectedImage]);
        scheduler.dispose();
        expect(latentErr, name).toBeLessThan(1e-3);
        expect(pixels, name).toBeLessThan(2);
      }
      tf.dispose([promptEmbeds, negativeEmbeds]);
    }

    it('LoRA image: lora_diffusers (the diffusers file merged at scale 1)', async () => {
      const lora = readLoraFile(path.join(INTEROP, 'lora', 'diffusers', 'pytorch_lora_weights.safetensors'));
      const merged = applyLora(model, lora, 1);
      try {
        await checkCase(merged.model, 'a photo of a cat', 'lora_diffusers', true);
      } finally {
        merged.dispose();
        disposeLora(lora);
      }
    }, 300_000);

    // Only the prompt embeddings: what Textual Inversion changes ends there, and the UNet loop and
    // decoder after them are the 10-step pipeline test's (same scheduler, guidance and initial
    // latents). Its image would cost another ~20 s on lavapipe, beyond this file's time budget.
    it('Textual Inversion: ti_kitty and ti_kitty_2v prompt embeddings (both diffusers embeddings loaded, as the reference)', async () => {
      const ti = path.join(INTEROP, 'textual_inversion', 'diffusers');
      const files = ['kitty', 'kitty-2v'].map((d) => readEmbeddingFile(path.join(ti, d, 'learned_embeds.safetensors')));
      const applied = applyEmbeddings(model, files);
      try {
        await checkCase(applied.model, 'a photo of <kitty>', 'ti_kitty', false);
        await checkCase(applied.model, 'a photo of <kitty-2v> on a table', 'ti_kitty_2v', false);
      } finally {
        applied.dispose();
      }
    }, 180_000);
  });

  describe('commands: --backend webgpu against --backend wasm (run alongside the tests above)', () => {
    it('painter generate: the reference image within 2/255 per pixel of diffusers and of wasm', async () => {
      const runs = await commands.generate;
      expectSuccess(runs);
      for (const b of BACKENDS) expect(ownStderr(runs[b].stderr), b).toBe('');
      const [gpu, wasm] = await Promise.all(BACKENDS.map((b) => pixels((JSON.parse(runs[b].stdout) as { files: { file: string }[] }).files[0]!.file)));
      const ref = host(hostReference('pipeline.safetensors'), 'output_image_np').data as Float32Array;
      let vsReference = 0;
      let vsWasm = 0;
      for (let i = 0; i < ref.length; i++) {
        vsReference = Math.max(vsReference, Math.abs(gpu![i]! - Math.round(ref[i]! * 255)));
        vsWasm = Math.max(vsWasm, Math.abs(gpu![i]! - wasm![i]!));
      }
      expect(track('generate png vs diffusers (/255)', vsReference)).toBeLessThanOrEqual(2);
      expect(track('generate png vs wasm (/255)', vsWasm)).toBeLessThanOrEqual(2);
    }, 300_000);

    it('painter invert, 2 steps: the embedding equals wasm\'s within 1e-4', async () => {
      const runs = await commands.invert;
      expectSuccess(runs);
      const [gpu, wasm] = BACKENDS.map((b) => (JSON.parse(runs[b].stdout) as { output: string }).output);
      const e = fileErrors(gpu!, wasm!);
      expect(track('invert embedding vs wasm', e.worst), e.key).toBeLessThan(1e-4);
    }, 300_000);

    it('painter dreambooth (LoRA, no prior preservation), 2 steps: losses and gradient norms equal wasm\'s within 1e-4', async () => {
      expectSuccess(await commands.dreambooth);
      const log = (b: Backend) =>
        fs
          .readFileSync(path.join(tmp, `dreambooth-${b}`, 'train.log'), 'utf8')
          .trim()
          .split('\n')
          .map((l) => JSON.parse(l) as { step: number; loss: number; gradNorm: number });
      const [gpu, wasm] = BACKENDS.map(log);
      expect(gpu!.map((s) => s.step)).toEqual([1, 2]);
      expect(wasm!.map((s) => s.step)).toEqual([1, 2]);
      for (const [i, w] of wasm!.entries()) {
        expect(track('dreambooth loss vs wasm', Math.abs(gpu![i]!.loss - w.loss) / w.loss)).toBeLessThan(1e-4);
        expect(track('dreambooth grad norm vs wasm', Math.abs(gpu![i]!.gradNorm - w.gradNorm) / w.gradNorm)).toBeLessThan(1e-4);
      }
      // The LoRA file itself is compared only where AdamW does not amplify rounding. The up
      // matrices start at zero, and Adam's first steps move every element by about ±lr whatever
      // its gradient's size (m/√v), so an element whose two updates nearly cancel keeps the float
      // rounding of tiny gradient entries at the tensor's scale: measured 1.2e-3 (webgpu vs wasm)
      // and 1.3e-3 (the cpu backend vs wasm) in one up matrix. The down matrices (random
      // initialisation plus small updates) and the losses and gradient norms above, 1e-7 apart,
      // show the backends compute the same steps.
      const gpuFile = path.join(tmp, 'dreambooth-webgpu', 'dreambooth-lora.safetensors');
      const wasmFile = path.join(tmp, 'dreambooth-wasm', 'dreambooth-lora.safetensors');
      const down = fileErrors(gpuFile, wasmFile, (k) => k.includes('.down.'));
      expect(track('dreambooth lora down vs wasm', down.worst), down.key).toBeLessThan(1e-4);
      track('dreambooth lora up vs wasm (not asserted)', fileErrors(gpuFile, wasmFile, (k) => k.includes('.up.')).worst);
    }, 300_000);
  });
});
