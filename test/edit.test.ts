/**
 * Editing against diffusers (fixtures/tiny-sd-a/reference/editing.*, the 9-channel
 * fixtures/tiny-sd-a-inpaint): image-to-image with DDIM at strengths 0.3/0.6/1.0, Euler a and
 * DPM++ 2M; Blended Latent Diffusion with rectangular and irregular masks at strengths 1 and
 * 0.75; an inpainting model at 1 and 0.75. diffusers' random draws are given to painter, so the
 * latents must match per step (1e-3 relative) and the images within 2/255.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { disposeModel, type StableDiffusion } from '../src/core/model.js';
import { disposeConditioning } from '../src/core/prompt/conditioning.js';
import { editLoop, encodeEditPrompts, planEdit, prepareEdit, type EditRequest } from '../src/core/pipeline/edit.js';
import { decodeLatents } from '../src/core/pipeline/text-to-image.js';
import type { SchedulerKind } from '../src/core/schedulers/index.js';
import { PainterError } from '../src/errors.js';
import { loadModel } from '../src/io/load-model.js';
import { parsePythonJson } from '../src/io/load-weights.js';
import { writeSafetensors } from '../src/io/safetensors.js';
import { FIXTURES, loadReference, nchwToNhwc, nhwcToNchw, ref, relError, runCli, TINY_SD_A, useBackend } from './helpers.js';

const INPAINT = path.join(FIXTURES, 'tiny-sd-a-inpaint');
const EDITING = parsePythonJson(fs.readFileSync(path.join(TINY_SD_A, 'reference', 'editing.json'), 'utf8')) as { cases: Record<string, CaseInfo> };
const INPAINTING = parsePythonJson(fs.readFileSync(path.join(INPAINT, 'reference', 'inpaint.json'), 'utf8')) as { cases: Record<string, CaseInfo> };

interface CaseInfo {
  prompt: string;
  negative_prompt: string;
  strength: number;
  num_inference_steps: number;
  guidance_scale: number;
  mask?: string;
  steps_run: number;
}

let base: StableDiffusion;
let inpaintModel: StableDiffusion;
let editing: Map<string, tf.Tensor>;
let inpainting: Map<string, tf.Tensor>;

beforeAll(async () => {
  await useBackend();
  base = loadModel(TINY_SD_A);
  inpaintModel = loadModel(INPAINT);
  editing = loadReference('editing.safetensors');
  inpainting = loadReference(path.join(INPAINT, 'reference', 'inpaint.safetensors'));
});
afterAll(() => {
  disposeModel(base);
  disposeModel(inpaintModel);
  tf.dispose([...editing.values(), ...inpainting.values()]);
});

const host = (t: tf.Tensor) => t.dataSync() as Float32Array;
const hwc = (nchw: tf.Tensor) => tf.tidy(() => host(nchw.transpose([0, 2, 3, 1])));

function request(refs: Map<string, tf.Tensor>, name: string, info: CaseInfo, scheduler: SchedulerKind): EditRequest {
  const get = (key: string) => refs.get(`${name}.${key}`);
  const draw = (key: string) => (get(key) ? host(get(key)!) : undefined);
  const req: EditRequest = {
    prompt: info.prompt,
    negativePrompt: info.negative_prompt,
    steps: info.num_inference_steps,
    guidance: info.guidance_scale,
    scheduler,
    seed: 0,
    clipSkip: 0,
    strength: info.strength,
    width: 64,
    height: 64,
    image: hwc(ref(refs, 'input.image')),
    draws: {
      posterior: draw('posterior_noise') ?? draw('posterior_noise_image'),
      noise: draw('noise'),
      posteriorMasked: draw('posterior_noise_masked_image'),
      stepNoise: draw('step_noise'),
    },
  };
  if (info.mask) req.mask = hwc(ref(refs, info.mask));
  return req;
}

/** Runs a case; checks the per-step latents (where stored), the final latents and the image. */
function runCase(model: StableDiffusion, refs: Map<string, tf.Tensor>, name: string, info: CaseInfo, scheduler: SchedulerKind): { latents: number; image: number } {
  const req = request(refs, name, info, scheduler);
  const cond = encodeEditPrompts(model, req);
  const perStep = refs.get(`${name}.latents_per_step`);
  const loop = editLoop(model, req, 0, cond);
  let steps = 0;
  let r = loop.next();
  while (!r.done) {
    if (perStep) {
      const err = tf.tidy(() => relError(nhwcToNchw(r.value.latents), perStep.slice([steps], [1]).reshape(perStep.shape.slice(1))));
      expect(err, `${name} step ${steps}`).toBeLessThan(1e-3);
    }
    steps++;
    r = loop.next();
  }
  expect(steps, name).toBe(info.steps_run);
  const final = r.value;
  const image = decodeLatents(model, final);
  const errors = {
    latents: tf.tidy(() => relError(nhwcToNchw(final), ref(refs, `${name}.final_latents`))),
    image: tf.tidy(() => tf.max(tf.abs(tf.sub(nhwcToNchw(image), ref(refs, `${name}.image`)))).dataSync()[0]! * 255),
  };
  tf.dispose([final, image]);
  disposeConditioning(cond);
  return errors;
}

describe('editing matches diffusers', () => {
  const img2img: [string, SchedulerKind][] = [
    ['img2img.ddim_s030', 'ddim'],
    ['img2img.ddim_s060', 'ddim'],
    ['img2img.ddim_s100', 'ddim'],
    ['img2img.euler_a_s060', 'euler-a'],
    ['img2img.dpmpp_2m_s060', 'dpm++2m'],
  ];
  it.each(img2img)('%s (%s): latents 1e-3, image 2/255', (name, scheduler) => {
    const e = runCase(base, editing, name, EDITING.cases[name]!, scheduler);
    expect(e.latents).toBeLessThan(1e-3);
    expect(e.image).toBeLessThan(2);
  });

  it.each(['blend.rect_s100', 'blend.rect_s075', 'blend.irregular_s100', 'blend.irregular_s075'])('%s: Blended Latent Diffusion, latents 1e-3, image 2/255', (name) => {
    const e = runCase(base, editing, name, EDITING.cases[name]!, 'ddim');
    expect(e.latents).toBeLessThan(1e-3);
    expect(e.image).toBeLessThan(2);
  });

  it.each(['inpaint.rect_s100', 'inpaint.irregular_s100', 'inpaint.irregular_s075'])('%s: 9-channel inpainting model, latents 1e-3, image 2/255', (name) => {
    const e = runCase(inpaintModel, inpainting, name, INPAINTING.cases[name]!, 'ddim');
    expect(e.latents).toBeLessThan(1e-3);
    expect(e.image).toBeLessThan(2);
  });
});

describe('edit plans', () => {
  it("start where diffusers' get_timesteps starts", () => {
    expect(planEdit(base, { steps: 10, strength: 0.6 })).toEqual({ mode: 'img2img', startIndex: 4, stepsRun: 6 });
    expect(planEdit(base, { steps: 10, strength: 1 })).toEqual({ mode: 'img2img', startIndex: 0, stepsRun: 10 });
    expect(planEdit(base, { steps: 20, strength: 0.75, mask: new Float32Array(1) }).mode).toBe('blend');
    expect(planEdit(inpaintModel, { steps: 10, strength: 0.3, mask: new Float32Array(1) })).toEqual({ mode: 'inpaint', startIndex: 7, stepsRun: 3 });
  });

  it('start a sampler with two evaluations per step at t_start · order, and run it to the end', () => {
    const req = { ...request(editing, 'img2img.ddim_s060', EDITING.cases['img2img.ddim_s060']!, 'heun'), strength: 0.6 };
    const input = prepareEdit(base, req, 0);
    // Heun over 10 steps has 19 timestep entries; diffusers' img2img runs timesteps[4 · 2:].
    expect(input.scheduler.timesteps).toHaveLength(19);
    expect(input.plan).toMatchObject({ startIndex: 8, stepsRun: 11 });
    input.scheduler.dispose();
    tf.dispose(input.owned);
    const cond = encodeEditPrompts(base, req);
    const loop = editLoop(base, req, 0, cond);
    let evaluations = 0;
    let r = loop.next();
    while (!r.done) {
      evaluations++;
      r = loop.next();
    }
    expect(evaluations).toBe(11);
    expect(tf.tidy(() => tf.all(tf.isFinite(r.value)).dataSync()[0])).toBe(1);
    r.value.dispose();
    disposeConditioning(cond);
  });

  it('refuse what cannot run, naming the flag', () => {
    expect(() => planEdit(base, { steps: 3, strength: 0.2 })).toThrow(PainterError);
    expect(() => planEdit(base, { steps: 3, strength: 0.2 })).toThrow(/--strength 0.2 with --steps 3 runs no denoising step/);
    expect(() => planEdit(base, { steps: 10, strength: 1.5 })).toThrow(/--strength must be in \(0, 1\]/);
    expect(() => planEdit(inpaintModel, { steps: 10, strength: 1 })).toThrow(/inpainting model .*give --mask FILE/);
  });
});

describe('painter edit', () => {
  let tmp: string;
  beforeAll(() => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'painter-edit-'));
  });
  afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

  /** A [1, C, 64, 64] reference tensor in [−1, 1] (or a {0,1} mask) as an 8-bit PNG file. */
  async function png(name: string, key: string, refs: Map<string, tf.Tensor>, mask = false): Promise<string> {
    const t = ref(refs, key);
    const c = t.shape[1]!;
    const bytes = tf.tidy(() => {
      const hwc = t.transpose([0, 2, 3, 1]);
      return Buffer.from((mask ? tf.mul(hwc, 255) : tf.round(tf.mul(tf.add(hwc, 1), 127.5))).dataSync());
    });
    const file = path.join(tmp, name);
    await sharp(bytes, { raw: { width: 64, height: 64, channels: c as 1 | 3 } }).png().toFile(file);
    return file;
  }

  async function noiseFile(name: string, refs: Map<string, tf.Tensor>, keys: Record<string, string>): Promise<string> {
    const file = path.join(tmp, name);
    const out = new Map(Object.entries(keys).map(([to, from]) => [to, { shape: ref(refs, from).shape, data: ref(refs, from).dataSync() as Float32Array }]));
    // A key this edit does not use is accepted and ignored.
    await writeSafetensors(file, out);
    return file;
  }

  async function readPng(file: string): Promise<tf.Tensor4D> {
    const { data, info } = await sharp(file).raw().toBuffer({ resolveWithObject: true });
    return tf.tensor4d(Float32Array.from(data), [1, info.height, info.width, info.channels]);
  }

  const common = (model: string, name: string, info: CaseInfo) => [
    '--model',
    model,
    '--steps',
    String(info.num_inference_steps),
    '--strength',
    String(info.strength),
    '--guidance',
    String(info.guidance_scale),
    '--negative',
    info.negative_prompt,
    '--scheduler',
    'ddim',
    '--out',
    path.join(tmp, name),
    '--json',
  ];

  it.each([
    ['img2img.ddim_s060', false],
    ['blend.irregular_s075', false],
    ['inpaint.irregular_s075', true],
  ] as const)("reproduces diffusers' %s from PNG files and --noise (image within 2/255)", async (name, inpaint) => {
    const refs = inpaint ? inpainting : editing;
    const info = (inpaint ? INPAINTING : EDITING).cases[name]!;
    const args = ['edit', await png(`${name}-input.png`, 'input.image', refs), info.prompt, ...common(inpaint ? INPAINT : TINY_SD_A, name, info)];
    if (info.mask) args.push('--mask', await png(`${name}-mask.png`, info.mask, refs, true));
    const draws: Record<string, string> = { noise: `${name}.noise`, posterior: refs.has(`${name}.posterior_noise`) ? `${name}.posterior_noise` : `${name}.posterior_noise_image` };
    if (refs.has(`${name}.posterior_noise_masked_image`)) draws['posterior_masked'] = `${name}.posterior_noise_masked_image`;
    args.push('--noise', await noiseFile(`${name}-noise.safetensors`, refs, draws));
    const r = await runCli(args);
    expect(r.code, r.stderr).toBe(0);
    const out = JSON.parse(r.stdout) as { files: { file: string }[]; mode: string };
    expect(out.mode).toBe(name.split('.')[0]);
    const got = await readPng(out.files[0]!.file);
    const err = tf.tidy(() => tf.max(tf.abs(tf.sub(got, tf.mul(nchwToNhwc(ref(refs, `${name}.image`)), 255)))).dataSync()[0]!);
    got.dispose();
    expect(err).toBeLessThanOrEqual(2);
  });

  it('--paste-back keeps every pixel outside the mask as the input has it', async () => {
    const input = await png('pb-in.png', 'input.image', editing);
    const mask = await png('pb-mask.png', 'input.mask_rect', editing, true);
    const r = await runCli(['edit', input, 'a cat', '--model', TINY_SD_A, '--steps', '4', '--strength', '1', '--mask', mask, '--paste-back', '--out', path.join(tmp, 'pb'), '--json']);
    expect(r.code, r.stderr).toBe(0);
    const [out, inp, m] = await Promise.all(
      [(JSON.parse(r.stdout) as { files: { file: string }[] }).files[0]!.file, input, mask].map(async (f, i) => (await (i === 2 ? sharp(f).extractChannel(0) : sharp(f)).raw().toBuffer()) as Buffer),
    );
    let outside = 0;
    let changedInside = 0;
    for (let p = 0; p < 64 * 64; p++) {
      const same = [0, 1, 2].every((c) => out![p * 3 + c] === inp![p * 3 + c]);
      if (m![p]! < 128) {
        outside++;
        expect(same).toBe(true);
      } else if (!same) changedInside++;
    }
    expect(outside).toBeGreaterThan(0);
    expect(changedInside).toBeGreaterThan(0);
    const bad = await runCli(['edit', input, 'a cat', '--model', TINY_SD_A, '--paste-back']);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/--paste-back needs --mask or --outpaint/);
  });

  it('writes A1111 img2img parameters and refuses bad input with one line', async () => {
    const input = await png('in.png', 'input.image', editing);
    const ok = await runCli(['edit', input, 'a cat', '--model', TINY_SD_A, '--steps', '4', '--out', path.join(tmp, 'params'), '--json']);
    expect(ok.code, ok.stderr).toBe(0);
    const info = await runCli(['info', (JSON.parse(ok.stdout) as { files: { file: string }[] }).files[0]!.file]);
    expect(info.stdout).toMatch(/Denoising strength: 0\.6/);
    const cases: [string[], RegExp, number][] = [
      [['edit', path.join(tmp, 'missing.png'), 'a cat', '--model', TINY_SD_A], /IMAGE .*missing\.png: cannot read this image/, 1],
      [['edit', input, 'a cat', '--model', TINY_SD_A, '--strength', '0'], /--strength/, 2],
      [['edit', input, 'a cat', '--model', TINY_SD_A, '--outpaint', '1,2,3'], /--outpaint 1,2,3: give four pixel counts/, 2],
      [['edit', input, 'a cat', '--model', TINY_SD_A, '--mask-blur', '2'], /--mask-blur needs --mask/, 2],
      [['edit', input, 'a cat', '--model', INPAINT], /inpainting model .*--mask FILE/, 1],
      [['edit', input, 'a cat', '--model', TINY_SD_A, '--mask', await png('black.png', 'input.mask_rect', editing, true).then(async (f) => {
        await sharp({ create: { width: 64, height: 64, channels: 3, background: '#000' } }).png().toFile(f);
        return f;
      })], /the mask is black everywhere/, 1],
    ];
    for (const [args, message, code] of cases) {
      const r = await runCli(args);
      expect(r.code, `${args.join(' ')}: ${r.stderr}`).toBe(code);
      expect(r.stderr.trim().split('\n'), args.join(' ')).toHaveLength(1);
      expect(r.stderr).toMatch(message);
    }
  });
});
