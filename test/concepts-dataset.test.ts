/**
 * Several concepts in one run: kohya's concept folders (`10_sks dog`) and YAML dataset files,
 * validated with every problem at once; repeats in the epoch order and in buckets (exact counts);
 * Textual Inversion of two tokens (two embeddings, resume to the same bits); DreamBooth of two
 * subjects and two classes (each instance row paired with its own class); both commands on a
 * folder dataset from the command line.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { disposeModel } from '../src/core/model.js';
import { Rng } from '../src/core/random.js';
import { InterruptedError, PainterError } from '../src/errors.js';
import { datasetTokens, folderDataset, loadDatasetFile, validateDataset } from '../src/io/concept-dataset.js';
import { readSourceImage, type SourceImage } from '../src/io/dataset.js';
import { readEmbeddingFile } from '../src/io/embeddings.js';
import { loadModel } from '../src/io/load-model.js';
import { createDreamBooth, LORA_FILE, type DreamBoothSettings } from '../src/train/dreambooth.js';
import { train, type EngineConfig } from '../src/train/engine.js';
import { ImageBatcher, repeatedIndices } from '../src/train/steps.js';
import { createInversion } from '../src/train/textual-inversion.js';
import { FIXTURES, ROOT, TINY_INVERT_SETTINGS, TINY_SD_A, useBackend } from './helpers.js';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'painter-concepts-'));
const PHOTOS = path.join(FIXTURES, 'photos', 'cat');
const CATS = fs.readdirSync(PHOTOS).filter((f) => f.endsWith('.jpg')).sort();
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));
beforeAll(() => useBackend());

const RES = 32;
const ENGINE: EngineConfig = { steps: 4, gradAccum: 1, lr: 5e-3, lrSchedule: 'constant', warmupSteps: 0, weightDecay: 0.01, maxGradNorm: 1, checkpointEvery: 100, validationEvery: 0, seed: 11 };

/** A folder under tmp holding copies of the cat photos numbered `which`. */
function photoFolder(rel: string, which: number[]): string {
  const dir = path.join(tmp, rel);
  fs.mkdirSync(dir, { recursive: true });
  for (const i of which) fs.copyFileSync(path.join(PHOTOS, CATS[i]!), path.join(dir, CATS[i]!));
  return dir;
}

async function photo(i: number, extra: Partial<SourceImage> = {}): Promise<SourceImage> {
  return { ...(await readSourceImage(path.join(PHOTOS, CATS[i]!), RES)), ...extra };
}

describe('kohya concept folders', () => {
  it('a folder of N_text subfolders and no image of its own is a dataset: repeats and token (invert) or prompt (dreambooth)', () => {
    photoFolder('kohya/5_<cat>', [0, 1]);
    photoFolder('kohya/2_<dog>', [2]);
    fs.mkdirSync(path.join(tmp, 'kohya', 'notes'));
    const warnings: string[] = [];
    const ti = folderDataset(path.join(tmp, 'kohya'), 'invert', (m) => warnings.push(m))!;
    expect(ti.kind).toBe('folders');
    expect(ti.concepts.map((c) => [c.name, c.repeats, c.token])).toEqual([
      ['2_<dog>', 2, '<dog>'],
      ['5_<cat>', 5, '<cat>'],
    ]);
    expect(ti.concepts[0]!.folder).toBe(path.join(tmp, 'kohya', '2_<dog>'));
    expect(warnings.join('\n')).toMatch(/skipping .*notes: not a concept folder/);
    expect(datasetTokens(ti).map((t) => t.token)).toEqual(['<dog>', '<cat>']);

    photoFolder('kohya-db/10_sks dog', [0]);
    const db = folderDataset(path.join(tmp, 'kohya-db'), 'dreambooth')!;
    expect(db.concepts).toEqual([{ name: '10_sks dog', folder: path.join(tmp, 'kohya-db', '10_sks dog'), repeats: 10, prompt: 'sks dog' }]);
  });

  it('a folder with images of its own, or without N_text subfolders, is an image folder; a token that is a plain word is refused naming the folder', () => {
    expect(folderDataset(PHOTOS, 'invert')).toBeUndefined();
    photoFolder('plain/some-photos', [0]);
    expect(folderDataset(path.join(tmp, 'plain'), 'invert')).toBeUndefined();
    photoFolder('own/3_<x>', [0]);
    photoFolder('own', [1]);
    expect(folderDataset(path.join(tmp, 'own'), 'invert')).toBeUndefined();
    photoFolder('bad-token/3_cat', [0]);
    expect(() => folderDataset(path.join(tmp, 'bad-token'), 'invert')).toThrow(/3_cat: token "cat": a new token that begins or ends with a letter/);
  });
});

describe('dataset files (--dataset FILE.yaml)', () => {
  it('reads folders relative to the file, repeats (default 1), prompt and class, token and init_token, caption_extension', () => {
    photoFolder('yaml/a', [0]);
    photoFolder('yaml/b', [1]);
    const file = path.join(tmp, 'yaml', 'db.yaml');
    fs.writeFileSync(file, 'concepts:\n  - folder: a\n    prompt: a photo of cus cat\n    repeats: 3\n    caption_extension: .cap\n  - folder: b\n    prompt: a photo of zwx dog\n    class: dog\n');
    expect(loadDatasetFile(file, 'dreambooth').concepts).toEqual([
      { name: 'a', folder: path.join(tmp, 'yaml', 'a'), repeats: 3, prompt: 'a photo of cus cat', captionExtensions: ['cap'] },
      { name: 'b', folder: path.join(tmp, 'yaml', 'b'), repeats: 1, prompt: 'a photo of zwx dog', className: 'dog' },
    ]);
    const ti = path.join(tmp, 'yaml', 'ti.yaml');
    fs.writeFileSync(ti, 'concepts:\n  - {folder: a, token: "<a>", init_token: cat}\n  - {folder: b, token: "<b>"}\n');
    expect(loadDatasetFile(ti, 'invert').concepts.map((c) => [c.token, c.initToken])).toEqual([
      ['<a>', 'cat'],
      ['<b>', undefined],
    ]);
  });

  it('every problem at once, each naming the file and the key', () => {
    photoFolder('yaml-bad/a', [0]);
    const file = path.join(tmp, 'yaml-bad', 'bad.yaml');
    const raw = {
      concept: [],
      concepts: [{ folder: 'a', prompt: 'x', repeats: 0 }, { folder: 'missing', token: '<t>' }, { prompt: 7, colour: 'red' }, 'a'],
    };
    const { errors } = validateDataset(raw, 'dreambooth', file);
    const expected = [
      `${file}: key "concept": unknown key`,
      `${file}: concepts[0] key "repeats" must be at least 1, got 0`,
      `${file}: concepts[1] key "token": is for painter invert`,
      `${file}: concepts[1]: key "prompt" is missing`,
      `${file}: concepts[1] key "folder": ${path.join(tmp, 'yaml-bad', 'missing')} is not found`,
      `${file}: concepts[2] key "prompt" must be a string, got 7`,
      `${file}: concepts[2] key "colour": unknown key`,
      `${file}: concepts[2]: key "folder" is missing`,
      `${file}: concepts[3]: must be a mapping`,
    ];
    for (const e of expected) expect(errors.some((x) => x.startsWith(e)), `${e}\n in\n${errors.join('\n')}`).toBe(true);
    expect(errors).toHaveLength(expected.length);
    // An invert file: a token that is a plain word, a second init_token for one token.
    const ti = validateDataset({ concepts: [{ folder: 'a', token: 'cat' }, { folder: 'a', token: '<t>', init_token: 'cat' }, { folder: 'a', token: '<t>', init_token: 'dog' }] }, 'invert', file).errors;
    expect(ti).toEqual([expect.stringMatching(/concepts\[0\] key "token": token "cat": a new token/), expect.stringMatching(/concepts\[2\] key "init_token": the token "<t>" has another init_token/)]);
    fs.writeFileSync(file, 'concepts: [{folder: a, repeats: -1}, {folder: b}]\n');
    expect(() => loadDatasetFile(file, 'invert')).toThrow(PainterError);
    expect(() => loadDatasetFile(file, 'invert')).toThrow(/invalid dataset:\n {2}.*concepts\[0\] key "repeats".*\n.*concepts\[0\]: key "token" is missing/);
  });
});

describe('repeats (kohya num_repeats)', () => {
  const fake = (repeats: number, bucket?: readonly [number, number]): SourceImage => ({ file: 'x', width: 1, height: 1, rgb: Buffer.alloc(3), repeats, ...(bucket && { bucket }) });

  it('an image with N repeats appears exactly N times per epoch, in the epoch order and in buckets (no batch mixes buckets)', () => {
    const counts = (batcher: ImageBatcher, draws: number, n: number, check: (batch: number[]) => void = () => undefined) => {
      const c = Array<number>(n).fill(0);
      const rng = new Rng(4);
      for (let d = 0; d < draws; d++) {
        const batch: number[] = [];
        batcher.draw(rng, (i) => batch.push(i));
        check(batch);
        for (const i of batch) c[i]!++;
      }
      return c;
    };
    const images = [fake(3), fake(1), fake(2)];
    expect(counts(new ImageBatcher(images, 1), 6, 3)).toEqual([3, 1, 2]);
    expect(counts(new ImageBatcher(images, 2), 6, 3)).toEqual([6, 2, 4]);
    // Buckets: [0, 0, 0, 1] in one (two batches of 2), [2, 2] in the other (one batch): an epoch is three batches.
    const bucketed = [fake(3, [32, 32]), fake(1, [32, 32]), fake(2, [48, 16])];
    expect(counts(new ImageBatcher(bucketed, 2), 3, 3, (b) => expect(new Set(b.map((i) => bucketed[i]!.bucket!.join())).size).toBe(1))).toEqual([3, 1, 2]);
    expect(counts(new ImageBatcher(bucketed, 2), 6, 3)).toEqual([6, 2, 4]);
    // Without repeats the epoch is every image once, in the order runs have always drawn.
    expect(repeatedIndices(4)).toEqual([0, 1, 2, 3]);
    expect(repeatedIndices(3, [2, 1, 3])).toEqual([0, 0, 1, 2, 2, 2]);
  });
});

describe('Textual Inversion of two tokens in one run', () => {
  const TOKENS = [{ token: '<cat-a>', initToken: 'cat' }, { token: '<cat-b>', initToken: 'cat' }];

  async function run(dir: string, stopAfter?: number, resume?: string) {
    const model = loadModel(TINY_SD_A);
    const images = [await photo(0, { concept: 0 }), await photo(1, { concept: 1, repeats: 2 })];
    const setup = createInversion(model, images, { ...TINY_INVERT_SETTINGS, batch: 2, conceptTokens: TOKENS });
    let steps = 0;
    try {
      const r = await train(setup.task, { ...ENGINE, checkpointEvery: 3 }, dir, { test: true }, { onStep: () => steps++, shouldStop: () => stopAfter !== undefined && steps >= stopAfter }, resume);
      return { rows: Float32Array.from(setup.rows.dataSync()), losses: r.losses, output: r.output, placeholders: setup.placeholders, tokens: setup.tokens };
    } finally {
      setup.dispose();
      disposeModel(model);
    }
  }

  it('both embeddings are written, each trained on its own images (different), and a resumed run is bit-exact', async () => {
    const straight = await run(path.join(tmp, 'ti-straight'));
    expect(straight.placeholders).toEqual(['<cat-a>', '<cat-b>']);
    expect(straight.tokens).toEqual(['<cat-a>', '<cat-b>']);
    expect(straight.output).toBe(path.join(tmp, 'ti-straight', 'cat-a.safetensors'));
    const a = readEmbeddingFile(path.join(tmp, 'ti-straight', 'cat-a.safetensors'));
    const b = readEmbeddingFile(path.join(tmp, 'ti-straight', 'cat-b.safetensors'));
    expect([a.token, b.token]).toEqual(['<cat-a>', '<cat-b>']);
    const va = Array.from(a.vectors);
    const vb = Array.from(b.vectors);
    expect(va).toEqual(Array.from(straight.rows.slice(0, 32)));
    expect(vb).toEqual(Array.from(straight.rows.slice(32)));
    // Both start from "cat": they differ only because each learnt from its own images.
    expect(va).not.toEqual(vb);
    expect(straight.losses.every(Number.isFinite)).toBe(true);

    await expect(run(path.join(tmp, 'ti-resumed'), 2)).rejects.toBeInstanceOf(InterruptedError);
    const resumed = await run(path.join(tmp, 'ti-resumed'), undefined, path.join(tmp, 'ti-resumed', 'checkpoints', 'step-000002'));
    expect(Buffer.from(resumed.rows.buffer).equals(Buffer.from(straight.rows.buffer))).toBe(true);
    expect(resumed.losses).toEqual(straight.losses);
  });
});

describe('DreamBooth of two subjects and two classes in one run', () => {
  // The data and loss settings of the tiny Textual Inversion runs; DreamBooth's own on top.
  const { token: _t, initToken: _i, vectors: _v, mode: _m, format: _f, ...method } = TINY_INVERT_SETTINGS;
  const SETTINGS: DreamBoothSettings = {
    ...method,
    ...{ identifier: 'cus', className: 'cat, dog', instancePrompt: 'a photo of cus cat', classPrompt: 'a photo of a cat', validationPrompt: 'a photo of cus cat' },
    ...{ priorPreservation: true, priorWeight: 1, mode: 'lora', rank: 2, alpha: 2, trainTextEncoder: false, format: 'diffusers', flip: false, batch: 2, seed: 7 },
  };
  const SUBJECTS = {
    concepts: [
      { instancePrompt: 'a photo of cus cat', classIndex: 0 },
      { instancePrompt: 'a photo of zwx dog', classIndex: 1 },
    ],
    classes: [
      { classPrompt: 'a photo of a cat', images: [0, 1] },
      { classPrompt: 'a photo of a dog', images: [2] },
    ],
  };

  it('each instance row is paired with a class image of its own subject\'s class, prompted with its own prompt; a few steps train to a finite loss', async () => {
    const model = loadModel(TINY_SD_A);
    const instance = [await photo(0, { concept: 0 }), await photo(1, { concept: 1, repeats: 2 }), await photo(2, { concept: 0 })];
    const classImages = [await photo(3), await photo(4), await photo(2)];
    const setup = createDreamBooth(model, instance, classImages, { ...SETTINGS, subjects: SUBJECTS });
    const swapped = { ...SUBJECTS, concepts: SUBJECTS.concepts.map((c, i) => ({ ...c, instancePrompt: SUBJECTS.concepts[1 - i]!.instancePrompt })) };
    try {
      const rng = new Rng(9);
      const seen = [0, 0];
      for (let d = 0; d < 8; d++) {
        const b = setup.draw(rng);
        expect(b.prior).toHaveLength(b.instance.length);
        b.instance.forEach((v, i) => {
          const k = instance[v.image]!.concept!;
          seen[k]!++;
          expect(SUBJECTS.classes[k]!.images).toContain(b.prior[i]!.image);
        });
      }
      // Repeats: subject 1's one image (2 repeats) comes as often as subject 0's two images.
      expect(seen).toEqual([8, 8]);
      // The instance term depends on each subject's own prompt.
      const batch = setup.draw(rng);
      const other = createDreamBooth(model, instance, classImages, { ...SETTINGS, subjects: swapped });
      try {
        const own = tf.tidy(() => setup.loss(batch, 'instance').dataSync()[0]!);
        expect(tf.tidy(() => setup.loss(batch, 'instance').dataSync()[0]!)).toBe(own);
        expect(tf.tidy(() => other.loss(batch, 'instance').dataSync()[0]!)).not.toBe(own);
      } finally {
        other.dispose();
      }
      const r = await train(setup.task, { ...ENGINE, steps: 2 }, path.join(tmp, 'db-two'), { test: true });
      expect(r.losses).toHaveLength(2);
      expect(r.losses.every(Number.isFinite)).toBe(true);
      expect(fs.existsSync(path.join(tmp, 'db-two', LORA_FILE))).toBe(true);
    } finally {
      setup.dispose();
      disposeModel(model);
    }
  });
});

function painter(args: string[], env: Record<string, string> = {}) {
  const r = spawnSync(process.execPath, [path.join(ROOT, 'bin', 'painter'), ...args], {
    encoding: 'utf8',
    env: { ...process.env, PAINTER_BACKEND: 'wasm', PAINTER_EMBEDDINGS: path.join(tmp, 'embeddings'), PAINTER_CACHE_DIR: path.join(tmp, 'cache'), ...env },
    timeout: 120_000,
  });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

describe('painter invert / dreambooth on a folder dataset (command line)', () => {
  const base = ['--model', TINY_SD_A, '--resolution', String(RES), '--steps', '2', '--validation-every', '0'];

  it('invert learns one embedding per concept folder, installs each, and lists the concepts in the log and config.json', () => {
    const ds = path.join(tmp, 'cli-ti');
    photoFolder('cli-ti/1_<cli-a>', [0]);
    photoFolder('cli-ti/3_<cli-b>', [1]);
    const out = path.join(tmp, 'cli-ti-run');
    const r = painter(['invert', ds, '--init-token', 'cat', '--out', out, ...base]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/read as a dataset of 2 concept\(s\)/);
    expect(r.stderr).toMatch(/concept 1_<cli-a>: <cli-a>, 1 image\(s\) × 1 repeat\(s\) = 1 per epoch/);
    expect(r.stderr).toMatch(/concept 3_<cli-b>: <cli-b>, 1 image\(s\) × 3 repeat\(s\) = 3 per epoch/);
    // One line per embedding on stdout, each installed in the embeddings folder.
    expect(r.stdout.trim().split('\n')).toEqual([path.join(out, 'cli-a.safetensors'), path.join(out, 'cli-b.safetensors')]);
    for (const name of ['cli-a', 'cli-b']) {
      const installed = path.join(tmp, 'embeddings', `${name}.safetensors`);
      expect(fs.readFileSync(installed).equals(fs.readFileSync(path.join(out, `${name}.safetensors`)))).toBe(true);
      expect(readEmbeddingFile(installed).token).toBe(`<${name}>`);
      expect(r.stderr).toContain(`installed as ${installed}`);
    }
    const config = JSON.parse(fs.readFileSync(path.join(out, 'config.json'), 'utf8'));
    expect(config.concepts.map((c: { token: string; images: number; repeats: number }) => [c.token, c.images, c.repeats])).toEqual([
      ['<cli-a>', 1, 1],
      ['<cli-b>', 1, 3],
    ]);
    // --token that is not the dataset's is refused; a bad dataset file lists every problem (exit 1).
    const clash = painter(['invert', ds, '--token', '<x>', '--out', path.join(tmp, 'cli-ti-clash'), ...base]);
    expect(clash.code).toBe(2);
    expect(clash.stderr).toMatch(/--token "<x>": the dataset .* names the tokens it learns \(<cli-a>, <cli-b>\); drop --token/);
    const bad = path.join(tmp, 'cli-bad.yaml');
    fs.writeFileSync(bad, 'concepts:\n  - folder: nowhere\n    token: "<z>"\n  - folder: cli-ti\n    repeats: 0\n');
    const invalid = painter(['invert', '--dataset', bad, '--out', path.join(tmp, 'cli-ti-bad'), ...base]);
    expect(invalid.code).toBe(1);
    expect(invalid.stderr).toMatch(/concepts\[0\] key "folder": .*nowhere is not found/);
    expect(invalid.stderr).toMatch(/concepts\[1\] key "repeats" must be at least 1, got 0/);
    expect(invalid.stderr).toMatch(/concepts\[1\]: key "token" is missing/);
    expect(invalid.stderr).not.toMatch(/\n\s+at /);
  });

  it('dreambooth trains one LoRA on every concept folder, with --class for each, and lists them', () => {
    const ds = path.join(tmp, 'cli-db');
    photoFolder('cli-db/2_cus cat', [0]);
    photoFolder('cli-db/1_zwx cat', [1]);
    const out = path.join(tmp, 'cli-db-run');
    const r = painter(['dreambooth', ds, '--class', 'cat', '--class-images', '1', '--out', out, ...base]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/read as a dataset of 2 concept\(s\)/);
    expect(r.stderr).toMatch(/2 subject\(s\): "zwx cat" \(class cat\), "cus cat" \(class cat\)/);
    expect(r.stderr).toMatch(/concept 2_cus cat: "cus cat" \(class cat\), 1 image\(s\) × 2 repeat\(s\) = 2 per epoch/);
    expect(r.stderr).toMatch(/1 class images of "a photo of a cat"/);
    expect(r.stdout.trim()).toBe(path.join(out, LORA_FILE));
    const config = JSON.parse(fs.readFileSync(path.join(out, 'config.json'), 'utf8'));
    expect(config.concepts.map((c: { prompt: string; repeats: number; class: string; images: number }) => [c.prompt, c.repeats, c.class, c.images])).toEqual([
      ['zwx cat', 1, 'cat', 1],
      ['cus cat', 2, 'cat', 1],
    ]);
    expect(config.classImageFiles).toHaveLength(1);
  });

  it('dreambooth --dataset FILE: two subjects of two classes, each class its own class images', () => {
    photoFolder('cli-yaml/cat', [2]);
    photoFolder('cli-yaml/dog', [3]);
    const file = path.join(tmp, 'cli-yaml', 'dataset.yaml');
    fs.writeFileSync(file, 'concepts:\n  - {folder: cat, prompt: "a photo of cus cat", class: cat}\n  - {folder: dog, prompt: "a photo of zwx dog", class: dog, repeats: 2}\n');
    const out = path.join(tmp, 'cli-yaml-run');
    const r = painter(['dreambooth', '--dataset', file, '--class-images', '1', '--out', out, '--json', ...base]);
    expect(r.code, r.stderr).toBe(0);
    const done = JSON.parse(r.stdout);
    expect(done.classes.map((c: { className: string; classPrompt: string; count: number }) => [c.className, c.classPrompt, c.count])).toEqual([
      ['cat', 'a photo of a cat', 1],
      ['dog', 'a photo of a dog', 1],
    ]);
    expect(done.classes[0].dir).not.toBe(done.classes[1].dir);
    expect(done.concepts.map((c: { prompt: string; class: string; repeats: number }) => [c.prompt, c.class, c.repeats])).toEqual([
      ['a photo of cus cat', 'cat', 1],
      ['a photo of zwx dog', 'dog', 2],
    ]);
    const config = JSON.parse(fs.readFileSync(path.join(out, 'config.json'), 'utf8'));
    expect(config.dataset).toBe(file);
    expect(config.classImageFiles).toHaveLength(2);
    // A resume takes the dataset from the run (its class images from the cache).
    const more = painter(['dreambooth', '--resume', 'latest', '--out', out, '--steps', '3', '--json']);
    expect(more.code, more.stderr).toBe(0);
    expect(JSON.parse(more.stdout)).toMatchObject({ steps: 3, classes: [{ existing: 1, generated: 0 }, { existing: 1, generated: 0 }] });
    // --class-dir holds one class: with two it is refused before any work.
    const refused = painter(['dreambooth', '--dataset', file, '--class-dir', path.join(tmp, 'mine'), '--out', path.join(tmp, 'cli-yaml-refused'), ...base]);
    expect(refused.code).toBe(2);
    expect(refused.stderr).toMatch(/--class-dir holds the class images of one class, and the dataset has 2 \(cat, dog\)/);
  });
});
