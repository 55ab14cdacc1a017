/**
 * The bundled model as a user meets it: commands use it without --model, the README's quick start
 * runs on it, and it draws what a prompt asks for (read back by the shipped attribute classifier).
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { resolveModelPath } from '../src/io/paths.js';
import { disposeModel } from '../src/core/model.js';
import { sampleImages } from '../src/core/pipeline/generate.js';
import { loadModel } from '../src/io/load-model.js';
import { readPngText } from '../src/io/png-text.js';
import { predict, imagesToTensor } from '../recipes/painter-mini/classifier.js';
import { toClassifierSize } from '../recipes/painter-mini/bench-concepts.js';
import { MINI_MAX_BYTES } from '../recipes/painter-mini/mini-config.js';
import { loadClassifier } from '../recipes/painter-mini/train-classifier.js';
import { LABEL_CLASSES } from '../recipes/painter-mini/world.js';
import { FIXTURES, ROOT, useBackend } from './helpers.js';

const MINI = path.join(FIXTURES, 'painter-mini');
/**
 * Measured on the shipped model by the shipped 64×64 classifier: object 10/16 (the star is read
 * as a cup or a tree, the small fish twice as a car), colour 15/16, background 16/16 (with the
 * 300-step decoder: 9, 15, 16); chance 1/10 each.
 */
const OBJECT_MIN = 0.4;
const COLOUR_MIN = 0.75;
const BACKGROUND_MIN = 0.75;
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'painter-mini-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

beforeAll(async () => {
  await useBackend();
});

function painter(args: string[]) {
  const r = spawnSync(process.execPath, [path.join(ROOT, 'bin', 'painter'), ...args], { encoding: 'utf8', env: { ...process.env, PAINTER_BACKEND: 'wasm' }, timeout: 300_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

function folderBytes(dir: string): number {
  return fs.readdirSync(dir, { withFileTypes: true }).reduce((n, e) => n + (e.isDirectory() ? folderBytes(path.join(dir, e.name)) : fs.statSync(path.join(dir, e.name)).size), 0);
}

describe('painter-mini, the bundled model', () => {
  it('ships as a diffusers folder within the size limit and is the default --model', () => {
    for (const f of ['model_index.json', 'README.md', 'unet/config.json', 'vae/config.json', 'text_encoder/config.json', 'tokenizer/vocab.json', 'scheduler/scheduler_config.json']) {
      expect(fs.existsSync(path.join(MINI, f)), f).toBe(true);
    }
    expect(folderBytes(MINI)).toBeLessThanOrEqual(MINI_MAX_BYTES + 1e6);
    expect(resolveModelPath(undefined)).toBe(MINI);
    expect(resolveModelPath('painter-mini')).toBe(MINI);
    expect(resolveModelPath('some/other')).toBe('some/other');
  });

  it('generates without --model, recording the model in the PNG', async () => {
    const out = path.join(tmp, 'gen');
    const r = painter(['generate', 'a red cat on a blue background', '--steps', '8', '--seed', '3', '--count', '2', '--batch', '2', '--out', out, '--json']);
    expect(r.code, r.stderr).toBe(0);
    const files = (JSON.parse(r.stdout) as { files: { file: string }[] }).files.map((f) => f.file);
    expect(files).toHaveLength(2);
    const meta = await sharp(files[0]!).metadata();
    expect([meta.width, meta.height]).toEqual([64, 64]);
    expect(readPngText(fs.readFileSync(files[0]!))['parameters']).toMatch(/Size: 64x64, Model hash: [0-9a-f]{10}, Model: painter-mini/);
  });

  it('draws the object and colours a prompt asks for (read back by the attribute classifier)', async () => {
    const model = loadModel(MINI);
    const clf = loadClassifier(path.join(FIXTURES, 'mini-classifier'));
    try {
      const asks: [string, string, string, string][] = [
        ['a red cat on a blue background', 'cat', 'red', 'blue'],
        ['a yellow star on a white background', 'star', 'yellow', 'white'],
        ['a blue car on a yellow background', 'car', 'blue', 'yellow'],
        ['a small orange fish on a purple background', 'fish', 'orange', 'purple'],
      ];
      let objects = 0;
      let colours = 0;
      let backgrounds = 0;
      let n = 0;
      for (const [prompt, object, colour, background] of asks) {
        const images: Uint8Array[] = [];
        const req = { prompt, negativePrompt: '', steps: 20, guidance: 7.5, scheduler: 'dpm++2m' as const, seed: 11, count: 4, batch: 4, width: 64, height: 64, clipSkip: 0 };
        for await (const e of sampleImages(model, req)) if (e.kind === 'image') images.push(toClassifierSize(e.image.pixels, 64, clf.config.imageSize));
        const x = imagesToTensor(images, clf.config.imageSize);
        const pred = predict(clf.params, clf.config, x);
        x.dispose();
        pred.object.forEach((k) => (objects += LABEL_CLASSES.object[k] === object ? 1 : 0));
        pred.colour.forEach((k) => (colours += LABEL_CLASSES.colour[k] === colour ? 1 : 0));
        pred.backgroundColour.forEach((k) => (backgrounds += LABEL_CLASSES.backgroundColour[k] === background ? 1 : 0));
        n += images.length;
      }
      // Chance is 1 in 10 for each.
      console.log(`painter-mini reads: object ${objects}/${n}, colour ${colours}/${n}, background ${backgrounds}/${n}`);
      expect(objects / n).toBeGreaterThanOrEqual(OBJECT_MIN);
      expect(colours / n).toBeGreaterThanOrEqual(COLOUR_MIN);
      expect(backgrounds / n).toBeGreaterThanOrEqual(BACKGROUND_MIN);
    } finally {
      disposeModel(model);
      for (const t of clf.params.values()) t.dispose();
    }
    // 16 images of 20 steps: ~40 s alone, three times that beside the other test files.
  }, 300_000);

  it('runs the README quick start: invert on fixtures/cat-photos, then generate finds <cat> by itself', () => {
    const emb = path.join(tmp, 'embeddings');
    const inv = painter(['invert', path.join(FIXTURES, 'cat-photos'), '--token', '<cat>', '--steps', '20', '--validation-every', '0', '--out', path.join(tmp, 'run'), '--embeddings-dir', emb, '--json']);
    expect(inv.code, inv.stderr).toBe(0);
    expect(JSON.parse(inv.stdout).installed).toBe(path.join(emb, 'cat.safetensors'));
    const config = JSON.parse(fs.readFileSync(path.join(tmp, 'run', 'config.json'), 'utf8')) as Record<string, unknown>;
    expect(JSON.stringify(config)).toContain(MINI);
    const gen = painter(['generate', 'a photo of <cat> on a green background', '--steps', '6', '--embeddings-dir', emb, '--out', path.join(tmp, 'qs')]);
    expect(gen.code, gen.stderr).toBe(0);
    expect(gen.stderr).toContain(`<cat> from ${path.join(emb, 'cat.safetensors')}`);
    expect(gen.stderr).not.toMatch(/no loaded embedding defines/);
  });
});
