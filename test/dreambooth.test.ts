/**
 * DreamBooth: rare-token identifiers, the class-image cache, the prior-preservation term and its
 * weight, which weights train (full, LoRA, text encoder), exact resume, the outputs (diffusers
 * folder, LoRA files in both namings) and bad input on the command line.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { applyLora, disposeLora } from '../src/core/lora.js';
import { disposeModel, type StableDiffusion } from '../src/core/model.js';
import { sampleImages } from '../src/core/pipeline/generate.js';
import { decodeLatents, denoiseAll, encodePrompts } from '../src/core/pipeline/text-to-image.js';
import { Rng } from '../src/core/random.js';
import { createScheduler } from '../src/core/schedulers/index.js';
import { tokenId, tokenize } from '../src/core/tokenizer/clip-tokenizer.js';
import { InterruptedError } from '../src/errors.js';
import { readSourceImage } from '../src/io/dataset.js';
import { loadModel } from '../src/io/load-model.js';
import { readLoraFile, writeLoraFile } from '../src/io/lora-files.js';
import { loadSafetensors } from '../src/io/safetensors.js';
import { classImageKey, classImageName, defaultClassDir, ensureClassImages, painterCacheDir, type ClassImageSettings } from '../src/train/class-images.js';
import { createDreamBooth, LORA_FILE, MODEL_DIR, type DreamBoothSettings } from '../src/train/dreambooth.js';
import { train, type EngineConfig } from '../src/train/engine.js';
import { chooseIdentifier, commonWordProblem, rareTokenCandidates } from '../src/train/identifier.js';
import { toLoraAdapters } from '../src/train/lora-training.js';
import { FIXTURES, relError, ROOT, TINY_SD_A, useBackend } from './helpers.js';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'painter-dreambooth-'));
const PHOTOS = path.join(FIXTURES, 'photos', 'cat');
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

beforeAll(async () => {
  await useBackend();
});

const RES = 32;
const SAMPLING: ClassImageSettings = { prompt: 'a photo of a cat', negativePrompt: '', steps: 3, guidance: 7.5, scheduler: 'dpm++2m', size: RES };

const SETTINGS: DreamBoothSettings = {
  identifier: 'cus',
  className: 'cat',
  instancePrompt: 'a photo of cus cat',
  classPrompt: 'a photo of a cat',
  priorPreservation: true,
  priorWeight: 1,
  mode: 'lora',
  rank: 4,
  alpha: 2,
  trainTextEncoder: false,
  resolution: RES,
  centerCrop: true,
  flip: false,
  batch: 1,
  minSnrGamma: 0,
  noiseOffset: 0,
  seed: 7,
  validationPrompt: 'a photo of cus cat',
  format: 'diffusers',
  baseModelHash: 'test',
};

const ENGINE: EngineConfig = {
  steps: 3,
  gradAccum: 1,
  lr: 1e-2,
  lrSchedule: 'constant',
  warmupSteps: 0,
  weightDecay: 0.01,
  maxGradNorm: 1,
  checkpointEvery: 100,
  validationEvery: 0,
  seed: 11,
};

async function photos(n = 2) {
  const files = fs.readdirSync(PHOTOS).sort().slice(0, n);
  return Promise.all(files.map((f) => readSourceImage(path.join(PHOTOS, f), RES)));
}

/** Class images made once for the training tests (2 sampled images). */
let classImagesPromise: Promise<Awaited<ReturnType<typeof ensureClassImages>>> | undefined;
function sharedClassImages(model: StableDiffusion) {
  classImagesPromise ??= ensureClassImages(model, path.join(tmp, 'shared-class'), 2, SAMPLING, { modelHash: 'test', skipBadImages: false });
  return classImagesPromise;
}

type Snapshot = Map<string, Float32Array>;
function snapshot(model: StableDiffusion): Snapshot {
  const out: Snapshot = new Map();
  for (const part of ['unet', 'vae', 'textEncoder'] as const) for (const [k, t] of model[part].params) out.set(`${part}/${k}`, Float32Array.from(t.dataSync()));
  return out;
}
function same(a: Float32Array, b: Float32Array): boolean {
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength));
}
/** Keys whose values differ between a snapshot and a model. */
function changedKeys(before: Snapshot, model: StableDiffusion): string[] {
  return [...snapshot(model)].filter(([k, v]) => !same(v, before.get(k)!)).map(([k]) => k);
}

/** Final images in [0, 1] for one prompt from fixed initial latents (DDIM, 4 steps). */
function image(model: StableDiffusion, prompt: string): tf.Tensor4D {
  return tf.tidy(() => {
    const promptEmbeds = encodePrompts(model, [prompt]);
    const negativeEmbeds = encodePrompts(model, ['']);
    const scheduler = createScheduler('ddim', model.scheduler, 4);
    const latents = tf.tensor4d(new Rng(3).normals(16 * 16 * 4), [1, 16, 16, 4]);
    const final = denoiseAll(model, { scheduler, promptEmbeds, negativeEmbeds, guidance: 5, latents });
    scheduler.dispose();
    return decodeLatents(model, final);
  });
}

describe('identifier', () => {
  it('is a rare whole-word token of the vocabulary, drawn with the seed; common words are flagged', () => {
    const model = loadModel(TINY_SD_A);
    const candidates = rareTokenCandidates(model.tokenizer, ['cat']);
    expect(candidates.length).toBeGreaterThan(3);
    const id = chooseIdentifier(model.tokenizer, 7, ['cat']);
    expect(chooseIdentifier(model.tokenizer, 7, ['cat'])).toBe(id);
    expect(candidates).toContain(id);
    expect(id).toMatch(/^[a-z]{2,3}$/);
    // One token, from the later-merged (rarer) half of this 897-token vocabulary.
    expect(tokenize(model.tokenizer, id)).toEqual([`${id}</w>`]);
    expect(tokenId(model.tokenizer, `${id}</w>`)!).toBeGreaterThanOrEqual(512 + (897 - 512) / 2 - 1);
    for (const c of candidates) expect(commonWordProblem(model.tokenizer, c, 'cat'), c).toBeUndefined();
    expect(commonWordProblem(model.tokenizer, 'dog', 'cat')).toMatch(/common English word/);
    expect(commonWordProblem(model.tokenizer, 'the', 'cat')).toMatch(/common English word/);
    expect(commonWordProblem(model.tokenizer, 'ing', 'cat')).toMatch(/most frequent words/);
    expect(commonWordProblem(model.tokenizer, 'my cat', 'cat')).toMatch(/class noun/);
    expect(commonWordProblem(model.tokenizer, 'sks', 'cat')).toBeUndefined();
    disposeModel(model);
  });
});

describe('class images', () => {
  it('are sampled once into the folder and reused; user-supplied ones count and are never touched', async () => {
    const model = loadModel(TINY_SD_A);
    const dir = path.join(tmp, 'class-reuse');
    fs.mkdirSync(dir);
    fs.copyFileSync(path.join(PHOTOS, 'chelsea-1.jpg'), path.join(dir, 'mine.jpg'));
    const first = await ensureClassImages(model, dir, 3, SAMPLING, { modelHash: 'h', skipBadImages: false });
    expect([first.existing, first.generated, first.images.length]).toEqual([1, 2, 3]);
    const files = fs.readdirSync(dir).filter((f) => !f.startsWith('.')).sort();
    expect(files).toEqual([classImageName(0), classImageName(1), 'mine.jpg']);
    const bytes = new Map(files.map((f) => [f, fs.readFileSync(path.join(dir, f))]));
    const second = await ensureClassImages(model, dir, 3, SAMPLING, { modelHash: 'h', skipBadImages: false });
    expect([second.existing, second.generated]).toEqual([3, 0]);
    expect(second.images.map((i) => i.file)).toEqual(first.images.map((i) => i.file));
    for (const [f, b] of bytes) expect(fs.readFileSync(path.join(dir, f)).equals(b), f).toBe(true);
    // Asking for fewer uses the first ones; asking for more samples only the missing one.
    expect((await ensureClassImages(model, dir, 2, SAMPLING, { modelHash: 'h', skipBadImages: false })).images).toHaveLength(2);
    const more = await ensureClassImages(model, dir, 4, SAMPLING, { modelHash: 'h', skipBadImages: false });
    expect([more.existing, more.generated]).toEqual([3, 1]);
    // A sampled image depends only on its index (its seed): a deleted one comes back identical.
    const again = fs.readFileSync(path.join(dir, classImageName(1)));
    fs.rmSync(path.join(dir, classImageName(1)));
    await ensureClassImages(model, dir, 4, SAMPLING, { modelHash: 'h', skipBadImages: false });
    expect(fs.readFileSync(path.join(dir, classImageName(1))).equals(again)).toBe(true);
    disposeModel(model);
  });

  it('the cache folder is keyed by model hash, prompt and sampling settings, under PAINTER_CACHE_DIR or XDG_CACHE_HOME', () => {
    const key = classImageKey('abc', SAMPLING);
    expect(classImageKey('abc', { ...SAMPLING })).toBe(key);
    for (const change of [{ prompt: 'a photo of a dog' }, { steps: 4 }, { guidance: 5 }, { size: 64 }, { scheduler: 'ddim' as const }]) {
      expect(classImageKey('abc', { ...SAMPLING, ...change })).not.toBe(key);
    }
    expect(classImageKey('abd', SAMPLING)).not.toBe(key);
    expect(defaultClassDir('abc', SAMPLING, { PAINTER_CACHE_DIR: '/x/cache' })).toBe(path.join('/x/cache', 'class-images', key));
    expect(painterCacheDir({ XDG_CACHE_HOME: '/xdg' })).toBe(path.join('/xdg', 'painter'));
    expect(painterCacheDir({ XDG_CACHE_HOME: 'relative' })).toBe(path.join(os.homedir(), '.cache', 'painter'));
  });

  it('a corrupt file in the class folder is an error naming it; --skip-bad-images skips it and never replaces it', async () => {
    const model = loadModel(TINY_SD_A);
    const dir = path.join(tmp, 'class-corrupt');
    fs.mkdirSync(dir);
    fs.copyFileSync(path.join(FIXTURES, 'photos', 'truncated.jpg'), path.join(dir, classImageName(0)).replace('.png', '.jpg'));
    fs.writeFileSync(path.join(dir, classImageName(1)), 'not a png');
    await expect(ensureClassImages(model, dir, 2, SAMPLING, { modelHash: 'h', skipBadImages: false })).rejects.toThrow(/class-00000\.jpg: cannot read this image .*--skip-bad-images/);
    const warnings: string[] = [];
    const r = await ensureClassImages(model, dir, 2, SAMPLING, { modelHash: 'h', skipBadImages: true }, { warn: (m) => warnings.push(m) });
    expect([r.existing, r.generated]).toEqual([0, 2]);
    expect(warnings.join('\n')).toMatch(/class-00000\.jpg/);
    expect(fs.readFileSync(path.join(dir, classImageName(1)), 'utf8')).toBe('not a png');
    expect(r.images.map((i) => path.basename(i.file))).toEqual([classImageName(0), classImageName(2)]);
    disposeModel(model);
  });
});

describe('prior-preservation loss', () => {
  it('the gradient with λ equals the instance gradient plus λ times the prior gradient (LoRA on UNet and text encoder)', async () => {
    const model = loadModel(TINY_SD_A);
    const cls = await sharedClassImages(model);
    const lambda = 0.7;
    const setup = createDreamBooth(model, await photos(), cls.images, { ...SETTINGS, batch: 2, priorWeight: lambda, trainTextEncoder: true });
    // Non-zero up matrices, so down gets gradient too.
    const rng = new Rng(99);
    for (const a of setup.lora!.adapters) a.up.assign(tf.tensor(rng.normals(a.up.size).map((v) => 0.05 * v), a.up.shape));
    const batch = setup.draw(new Rng(1));
    const vars = [...setup.task.vars.values()];
    const grads = (term: 'total' | 'instance' | 'prior') => {
      const { value, grads: g } = tf.variableGrads(() => setup.loss(batch, term), vars);
      const flat = tf.concat(vars.map((v) => g[v.name]!.reshape([-1])));
      const loss = value.dataSync()[0]!;
      tf.dispose([value, ...Object.values(g)]);
      return { loss, flat };
    };
    const total = grads('total');
    const instance = grads('instance');
    const prior = grads('prior');
    const expected = tf.add(instance.flat, tf.mul(prior.flat, lambda));
    const error = relError(total.flat, expected);
    expect(error).toBeLessThan(1e-4);
    expect(Math.abs(total.loss - (instance.loss + lambda * prior.loss)) / total.loss).toBeLessThan(1e-5);
    // The prior term is really there: its gradient is not negligible next to the instance one.
    const norm = (t: tf.Tensor) => tf.tidy(() => tf.norm(t).dataSync()[0]!);
    expect(norm(prior.flat)).toBeGreaterThan(0.05 * norm(instance.flat));
    expect(relError(instance.flat, total.flat)).toBeGreaterThan(1e-2);
    tf.dispose([total.flat, instance.flat, prior.flat, expected]);
    setup.dispose();
    disposeModel(model);
  });

  it('an instance image\'s caption file follows the instance prompt ("a photo of cus cat, <caption>"), for frozen and trained text encoders', async () => {
    const model = loadModel(TINY_SD_A);
    const cls = await sharedClassImages(model);
    const [a, b] = await photos();
    const captioned = [{ ...a!, caption: 'on a beach' }, { ...b!, caption: 'in the snow' }];
    for (const trainTextEncoder of [false, true]) {
      const loss = (images: typeof captioned, instancePrompt: string) => {
        const setup = createDreamBooth(model, images, cls.images, { ...SETTINGS, batch: 1, instancePrompt, trainTextEncoder });
        const value = tf.tidy(() => setup.loss(setup.draw(new Rng(5)), 'instance').dataSync()[0]!);
        setup.dispose();
        return value;
      };
      // One image per run, so the draw picks it: its caption is exactly a longer instance prompt.
      const withCaption = loss([captioned[0]!], 'a photo of cus cat');
      expect(withCaption).toBeCloseTo(loss([a!], 'a photo of cus cat, on a beach'), 6);
      expect(Math.abs(withCaption - loss([a!], 'a photo of cus cat'))).toBeGreaterThan(1e-6);
      // Two captioned images in one run: each row gets its own image's prompt.
      const both = loss(captioned, 'a photo of cus cat');
      const first = createDreamBooth(model, captioned, cls.images, { ...SETTINGS, batch: 1, trainTextEncoder });
      const drawn = first.draw(new Rng(5)).instance[0]!.image;
      first.dispose();
      expect(both).toBeCloseTo(loss([a!, b!], `a photo of cus cat, ${captioned[drawn]!.caption}`), 6);
    }
    disposeModel(model);
  });
});

describe('painter dreambooth (engine)', () => {
  it('LoRA: only the adapters train (no optimizer state for frozen weights); the file merged into the weights gives the same image as the LoRA on the fly', async () => {
    const model = loadModel(TINY_SD_A);
    const cls = await sharedClassImages(model);
    const before = snapshot(model);
    const live = tf.memory().numTensors;
    const setup = createDreamBooth(model, await photos(), cls.images, { ...SETTINGS, trainTextEncoder: true });
    const keys = [...setup.task.vars.keys()];
    expect(keys.every((k) => /^lora\/(unet|text_encoder)\/.+\.(down|up)$/.test(k))).toBe(true);
    expect(keys.filter((k) => k.startsWith('lora/unet/')).length).toBe(2 * 48);
    expect(keys.filter((k) => k.startsWith('lora/text_encoder/')).length).toBe(2 * 20);
    const counts: number[] = [];
    const runDir = path.join(tmp, 'lora-run');
    const result = await train(setup.task, ENGINE, runDir, {}, { onStep: () => counts.push(tf.memory().numTensors) });
    expect(new Set(counts.slice(1)).size).toBe(1);
    expect(result.output).toBe(path.join(runDir, LORA_FILE));
    expect(changedKeys(before, model)).toEqual([]);
    // The checkpoint holds the adapters and their AdamW moments, nothing else.
    const state = loadSafetensors(path.join(result.checkpoint!, 'state.safetensors')).tensors;
    expect([...state.keys()].every((k) => /^(param|adam\.m|adam\.v)\/lora\//.test(k))).toBe(true);
    expect(state.size).toBe(3 * keys.length);
    // Trained view: exactly the adapted weights differ from the base.
    const view = setup.trainedModel();
    const changed = changedKeys(before, view.model);
    const adapted = setup.lora!.adapters.map((a) => `${a.component === 'unet' ? 'unet' : 'textEncoder'}/${a.module}.weight`);
    expect(changed.sort()).toEqual(adapted.sort());
    // Merging is exact LoRA algebra: x·(W + (α/r)·down·up) = x·W + (α/r)·(x·down)·up.
    const first = setup.lora!.adapters[0]!;
    const w = model.unet.params.get(`${first.module}.weight`)!;
    const x = tf.tensor2d(new Rng(4).normals(5 * w.shape[0]!), [5, w.shape[0]!]);
    const branch = tf.tidy(() => tf.add(tf.matMul(x, w), tf.mul(tf.matMul(tf.matMul(x, first.down), first.up), SETTINGS.alpha / SETTINGS.rank)));
    const mergedLayer = tf.matMul(x, view.model.unet.params.get(`${first.module}.weight`)!);
    expect(relError(mergedLayer, branch)).toBeLessThan(1e-5);
    tf.dispose([x, branch, mergedLayer]);
    // The written file (diffusers naming, α/r folded in) and a kohya file with alpha, merged.
    const kohya = path.join(tmp, 'lora-kohya.safetensors');
    await writeLoraFile(kohya, toLoraAdapters(setup.lora!), { format: 'kohya', alpha: SETTINGS.alpha });
    const onTheFly = image(view.model, 'a photo of cus cat');
    for (const file of [result.output, kohya]) {
      const lora = readLoraFile(file);
      expect(lora.format).toBe(file === kohya ? 'kohya' : 'diffusers');
      expect(lora.adapters).toHaveLength(48 + 20);
      const merged = applyLora(model, lora);
      disposeLora(lora);
      expect(merged.merged).toEqual({ unet: 48, text_encoder: 20 });
      const img = image(merged.model, 'a photo of cus cat');
      expect(relError(img, onTheFly)).toBeLessThan(1e-4);
      img.dispose();
      merged.dispose();
    }
    const kohyaTensors = loadSafetensors(kohya).tensors;
    expect(Array.from(kohyaTensors.get('lora_unet_mid_block_attentions_0_transformer_blocks_0_attn1_to_q.alpha')!.data)).toEqual([2]);
    expect(loadSafetensors(result.output).metadata).toMatchObject({ 'painter.identifier': 'cus', 'painter.class': 'cat', 'painter.steps': '3' });
    onTheFly.dispose();
    view.dispose();
    setup.dispose();
    expect(tf.memory().numTensors).toBe(live);
    disposeModel(model);
  });

  it('full: every UNet weight trains and nothing else; the output folder reloads with the trained weights and generates the same image', async () => {
    const model = loadModel(TINY_SD_A);
    const cls = await sharedClassImages(model);
    const before = snapshot(model);
    const live = tf.memory().numTensors;
    const setup = createDreamBooth(model, await photos(), cls.images, { ...SETTINGS, mode: 'full' });
    expect([...setup.task.vars.keys()].sort()).toEqual([...model.unet.params.keys()].map((k) => `unet/${k}`).sort());
    const runDir = path.join(tmp, 'full-run');
    const result = await train(setup.task, { ...ENGINE, steps: 2, lr: 1e-3 }, runDir, {});
    expect(result.output).toBe(path.join(runDir, MODEL_DIR));
    expect(changedKeys(before, model)).toEqual([]);
    const view = setup.trainedModel();
    const changed = changedKeys(before, view.model);
    expect(changed.every((k) => k.startsWith('unet/'))).toBe(true);
    expect(changed.length).toBe(model.unet.params.size);
    for (const f of ['model_index.json', 'unet/config.json', 'unet/diffusion_pytorch_model.safetensors', 'vae/config.json', 'text_encoder/config.json', 'tokenizer/vocab.json', 'scheduler/scheduler_config.json']) {
      expect(fs.existsSync(path.join(result.output, f)), f).toBe(true);
    }
    const reloaded = loadModel(result.output);
    const trained = snapshot(view.model);
    for (const [k, v] of snapshot(reloaded)) expect(same(v, trained.get(k)!), k).toBe(true);
    const request = { prompt: 'a photo of cus cat', negativePrompt: '', steps: 3, guidance: 5, scheduler: 'ddim' as const, seed: 1, count: 1, batch: 1, width: RES, height: RES, clipSkip: 0 };
    const pixels = async (m: StableDiffusion) => {
      const out: Buffer[] = [];
      for await (const e of sampleImages(m, request)) if (e.kind === 'image') out.push(Buffer.from(e.image.pixels));
      return out;
    };
    const [a] = await pixels(reloaded);
    const [b] = await pixels(view.model);
    expect(a!.equals(b!)).toBe(true);
    disposeModel(reloaded);
    view.dispose();
    setup.dispose();
    expect(tf.memory().numTensors).toBe(live);
    disposeModel(model);
  });

  it('full with --train-text-encoder: the UNet and the text encoder train, the VAE does not', async () => {
    const model = loadModel(TINY_SD_A);
    const cls = await sharedClassImages(model);
    const before = snapshot(model);
    const setup = createDreamBooth(model, await photos(), cls.images, { ...SETTINGS, mode: 'full', trainTextEncoder: true });
    expect(setup.task.vars.size).toBe(model.unet.params.size + model.textEncoder.params.size);
    await train(setup.task, { ...ENGINE, steps: 1, lr: 1e-3 }, path.join(tmp, 'full-te'), {});
    const view = setup.trainedModel();
    const changed = changedKeys(before, view.model);
    expect(changed.filter((k) => k.startsWith('vae/'))).toEqual([]);
    expect(changed.filter((k) => k.startsWith('textEncoder/')).length).toBe(model.textEncoder.params.size);
    expect(changedKeys(before, model)).toEqual([]);
    view.dispose();
    setup.dispose();
    disposeModel(model);
  });

  it('without prior preservation only instance rows train; interrupt + resume equals an uninterrupted run, bit for bit', async () => {
    const model = loadModel(TINY_SD_A);
    const cls = await sharedClassImages(model);
    const none = createDreamBooth(model, await photos(), [], { ...SETTINGS, priorPreservation: false });
    const b = none.draw(new Rng(0));
    expect([b.instance.length, b.prior.length, b.timesteps.length]).toEqual([1, 0, 1]);
    none.dispose();
    const run = async (dir: string, stopAfter?: number, resume?: string) => {
      const setup = createDreamBooth(model, await photos(3), cls.images, { ...SETTINGS, trainTextEncoder: true });
      let steps = 0;
      try {
        const r = await train(setup.task, { ...ENGINE, steps: 4, checkpointEvery: 3 }, dir, {}, { onStep: () => steps++, shouldStop: () => stopAfter !== undefined && steps >= stopAfter }, resume);
        return { weights: [...setup.task.vars.values()].map((v) => Float32Array.from(v.dataSync())), losses: r.losses };
      } finally {
        setup.dispose();
      }
    };
    const straight = await run(path.join(tmp, 'straight'));
    await expect(run(path.join(tmp, 'resumed'), 2)).rejects.toBeInstanceOf(InterruptedError);
    const resumed = await run(path.join(tmp, 'resumed'), undefined, path.join(tmp, 'resumed', 'checkpoints', 'step-000002'));
    expect(resumed.losses).toEqual(straight.losses);
    resumed.weights.forEach((w, i) => expect(same(w, straight.weights[i]!)).toBe(true));
    disposeModel(model);
  });
});

function painter(args: string[], env: Record<string, string> = {}) {
  const r = spawnSync(process.execPath, [path.join(ROOT, 'bin', 'painter'), ...args], {
    encoding: 'utf8',
    env: { ...process.env, PAINTER_BACKEND: 'wasm', PAINTER_CACHE_DIR: path.join(tmp, 'cache'), ...env },
    timeout: 180_000,
  });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

describe('painter dreambooth (command line)', () => {
  const base = ['--model', TINY_SD_A, '--resolution', String(RES), '--steps', '2', '--validation-every', '0', '--class-images', '2'];

  it('LoRA run: prints the identifier, caches class images for the next run, and generate --lora loads both namings', () => {
    const out = path.join(tmp, 'cli-lora');
    const r = painter(['dreambooth', PHOTOS, '--class', 'cat', '--out', out, '--json', ...base]);
    expect(r.code, r.stderr).toBe(0);
    const first = JSON.parse(r.stdout);
    expect(first.output).toBe(path.join(out, LORA_FILE));
    expect(first.identifier).toMatch(/^[a-z]{2,3}$/);
    expect(first.classImages).toMatchObject({ count: 2, existing: 0, generated: 2 });
    expect(first.classImages.dir.startsWith(path.join(tmp, 'cache', 'class-images'))).toBe(true);
    const again = painter(['dreambooth', PHOTOS, '--class', 'cat', '--out', path.join(tmp, 'cli-kohya'), '--format', 'kohya', ...base]);
    expect(again.code, again.stderr).toBe(0);
    expect(again.stderr).toContain(`identifier "${first.identifier}"`);
    expect(again.stderr).toMatch(/2 class images of "a photo of a cat" in .* \(2 already there, 0 sampled\)/);
    const kohya = path.join(tmp, 'cli-kohya', LORA_FILE);
    expect([...loadSafetensors(kohya).tensors.keys()].some((k) => k.startsWith('lora_unet_') && k.endsWith('.alpha'))).toBe(true);
    for (const file of [first.output, kohya]) {
      const g = painter(['generate', `a photo of ${first.identifier} cat`, '--model', TINY_SD_A, '--lora', file, '--steps', '2', '--width', '32', '--height', '32', '--out', path.join(tmp, 'gen'), '--json']);
      expect(g.code, g.stderr).toBe(0);
      expect(JSON.parse(g.stdout).files).toHaveLength(1);
    }
  });

  it('full run: the model folder loads with painter generate --model; a common-word identifier is a warning', () => {
    const out = path.join(tmp, 'cli-full');
    const r = painter(['dreambooth', PHOTOS, '--class', 'cat', '--mode', 'full', '--identifier', 'dog', '--no-prior-preservation', '--out', out, ...base]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/warning: --identifier "dog": "dog" is a common English word/);
    expect(r.stdout.trim()).toBe(path.join(out, MODEL_DIR));
    const config = JSON.parse(fs.readFileSync(path.join(out, 'config.json'), 'utf8'));
    expect(config).toMatchObject({ identifier: 'dog', lr: 5e-6, mode: 'full' });
    const g = painter(['generate', 'a photo of dog cat', '--model', path.join(out, MODEL_DIR), '--steps', '2', '--out', path.join(tmp, 'gen-full'), '--json']);
    expect(g.code, g.stderr).toBe(0);
  });

  it('bad input: one clear line naming the file or flag, exit 1 (2 for usage)', () => {
    const corrupt = path.join(tmp, 'cli-corrupt-class');
    fs.mkdirSync(corrupt);
    fs.copyFileSync(path.join(FIXTURES, 'photos', 'truncated.jpg'), path.join(corrupt, 'broken.jpg'));
    const cases: [string[], RegExp, number][] = [
      [[PHOTOS, '--class', 'cat', '--class-dir', corrupt, ...base], /broken\.jpg: cannot read this image .*--skip-bad-images/, 1],
      [[PHOTOS, ...base], /--class is required/, 2],
      [[PHOTOS, '--class', 'cat', '--rank', '0', ...base], /--rank must be at least 1, got 0/, 2],
      [[PHOTOS, '--class', 'cat', '--rank=-2', ...base], /--rank must be at least 1, got -2/, 2],
      [[PHOTOS, '--class', 'cat', ...base.slice(0, -2), '--class-images', '0'], /--class-images 0 leaves nothing for prior preservation/, 2],
    ];
    for (const [args, message, exitCode] of cases) {
      const out = path.join(tmp, 'cli-bad');
      const r = painter(['dreambooth', ...args, '--out', out]);
      expect(r.code, args.join(' ')).toBe(exitCode);
      expect(r.stderr, args.join(' ')).toMatch(message);
      expect(r.stderr).not.toMatch(/\n\s+at /);
      expect(fs.existsSync(path.join(out, LORA_FILE))).toBe(false);
    }
    expect(fs.readdirSync(corrupt)).toEqual(['broken.jpg']);
  });
});
