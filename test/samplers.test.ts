/**
 * Samplers and prompts as AUTOMATIC1111 users write them, end to end through `generate`: every
 * A1111 sampler label writes the infotext A1111 writes (Sampler, Schedule type), `--from-png`
 * makes the same pixels again from painter's PNGs and reads A1111's own (old combined names,
 * Clip skip, variation seed), `<lora:NAME:SCALE>` tags load LoRAs, and the variation seed
 * behaves as A1111's.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generate, type GenerateInput } from '../src/app/generate.js';
import { settingsFromParameters, settingsFlags } from '../src/app/from-png.js';
import { parseInfotext } from '../src/core/infotext.js';
import { extractLoraTags } from '../src/core/prompt/extra-networks.js';
import { parseSamplerName, SAMPLER_NAMES, samplerLabel } from '../src/core/schedulers/sampler-names.js';
import { slerpNoise } from '../src/core/variation-seed.js';
import { Rng } from '../src/core/random.js';
import { addPngText, readPngText } from '../src/io/png-text.js';
import { PainterError } from '../src/errors.js';
import { FIXTURES, TINY_SD_A, useBackend } from './helpers.js';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'painter-samplers-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));
beforeAll(() => useBackend('wasm'));

const LORA = path.join(FIXTURES, 'interop', 'tiny-sd-a', 'lora', 'diffusers', 'pytorch_lora_weights.safetensors');
let runs = 0;

async function run(input: Partial<GenerateInput>): Promise<{ file: string; text: string; pixels: Buffer }> {
  const out = path.join(tmp, `run-${runs++}`);
  const r = await generate({ prompt: '', model: TINY_SD_A, steps: 3, seed: 5, backend: 'wasm', out, ...input });
  const file = r.files[0]!.file;
  const text = readPngText(fs.readFileSync(file))['parameters']!;
  return { file, text, pixels: (await sharp(file).raw().toBuffer()) as Buffer };
}

const lastLine = (text: string) => text.split('\n').at(-1)!;

describe('sampler names', () => {
  it("reads A1111's labels, old combined names and painter's aliases", () => {
    expect(parseSamplerName('DPM++ 2M')).toEqual({ kind: 'dpm++2m' });
    expect(parseSamplerName('DPM++ 2M Karras')).toEqual({ kind: 'dpm++2m', schedule: 'karras' });
    expect(parseSamplerName('Euler a')).toEqual({ kind: 'euler-a' });
    expect(parseSamplerName('euler-a')).toEqual({ kind: 'euler-a' });
    expect(parseSamplerName('DPM++ SDE Karras')).toEqual({ kind: 'dpm++sde', schedule: 'karras' });
    expect(parseSamplerName('PLMS')).toEqual({ kind: 'pndm' });
    expect(parseSamplerName('Euler Exponential')).toEqual({ kind: 'euler', schedule: 'exponential' });
    expect(parseSamplerName('DPM adaptive')).toBeUndefined();
    expect(parseSamplerName('DDIM Karras Karras')).toBeUndefined();
  });
});

/** Each A1111 label and the Schedule type A1111 records for tiny-sd-a's scheduler config. */
const LABELS: [string, string | undefined][] = [
  ['DPM++ 2M', 'SGM Uniform'],
  ['DPM++ SDE', 'Uniform'],
  ['DPM++ 2M SDE', 'SGM Uniform'],
  ['Euler a', 'Uniform'],
  ['Euler', 'Uniform'],
  ['Heun', 'Uniform'],
  ['LCM', 'DDIM'],
  ['DDIM', undefined],
  ['PLMS', undefined],
  ['UniPC', undefined],
];

describe('generate with each sampler', () => {
  it('covers every label --scheduler offers', () => {
    expect(LABELS.map(([l]) => l).sort()).toEqual(SAMPLER_NAMES.filter((n) => parseSamplerName(n) && samplerLabel(parseSamplerName(n)!.kind) === n).sort());
  });

  it.each(LABELS)('%s: the infotext A1111 writes, and --from-png makes the same pixels', async (label, scheduleType) => {
    const first = await run({ prompt: 'a (red:1.2) chair', negative: 'blurry', scheduler: label });
    const st = scheduleType ? `, Schedule type: ${scheduleType}` : '';
    expect(lastLine(first.text)).toMatch(new RegExp(`^Steps: 3, Sampler: ${label.replace(/\+/g, '\\+')}${st}, CFG scale: 7\\.5, Seed: 5, Size: 64x64, Model hash: [0-9a-f]{10}, Model: tiny-sd-a, Version: painter$`));
    expect(first.text.split('\n').slice(0, 2)).toEqual(['a (red:1.2) chair', 'Negative prompt: blurry']);
    const again = await run({ fromPng: first.file });
    expect(again.text).toBe(first.text);
    expect(again.pixels.equals(first.pixels)).toBe(true);
  });

  it('--schedule karras / exponential, an old name, and flags over --from-png', async () => {
    const karras = await run({ prompt: 'a chair', scheduler: 'DPM++ 2M', schedule: 'karras' });
    expect(lastLine(karras.text)).toMatch(/^Steps: 3, Sampler: DPM\+\+ 2M, Schedule type: Karras, CFG scale/);
    const old = await run({ prompt: 'a chair', scheduler: 'DPM++ 2M Karras' });
    expect(old.pixels.equals(karras.pixels)).toBe(true);
    const plain = await run({ prompt: 'a chair', scheduler: 'DPM++ 2M' });
    expect(plain.pixels.equals(karras.pixels)).toBe(false);
    const exponential = await run({ prompt: 'a chair', scheduler: 'Euler', schedule: 'exponential' });
    expect(lastLine(exponential.text)).toMatch(/Sampler: Euler, Schedule type: Exponential,/);
    // A flag passed with --from-png wins over the PNG's value.
    const reseeded = await run({ fromPng: karras.file, seed: 9 });
    expect(lastLine(reseeded.text)).toMatch(/Schedule type: Karras, CFG scale: 7\.5, Seed: 9,/);
    await expect(run({ prompt: 'a chair', scheduler: 'DDIM', schedule: 'karras' })).rejects.toThrow(/DDIM.*karras/);
  });

  it("--from-png reads AUTOMATIC1111's own infotext", async () => {
    const a1111 = [
      'a cat on a chair',
      'Negative prompt: ugly',
      'Steps: 4, Sampler: Euler a Karras, CFG scale: 5.5, Seed: 42, Size: 64x64, Model hash: 6ce0161689, Model: v1-5, Variation seed: 7, Variation seed strength: 0.25, Clip skip: 2, Hires upscale: 2, Version: v1.10.1',
    ].join('\n');
    const png = path.join(tmp, 'a1111.png');
    const blank = await sharp({ create: { width: 64, height: 64, channels: 3, background: '#808080' } }).png().toBuffer();
    fs.writeFileSync(png, addPngText(blank, { parameters: a1111 }));
    const settings = settingsFromParameters(parseInfotext(a1111), png);
    expect(settings.options).toMatchObject({ steps: 4, scheduler: 'Euler a', schedule: 'karras', guidance: 5.5, seed: 42, clipSkip: 1, subseed: 7, subseedStrength: 0.25 });
    expect(settings.ignored).toEqual(['Hires upscale']);
    expect(settingsFlags(settings)).toBe('--scheduler "Euler a" --schedule karras --steps 4 --guidance 5.5 --seed 42 --width 64 --height 64 --clip-skip 1 --subseed 7 --subseed-strength 0.25');
    const warnings: string[] = [];
    const r = await generate({ fromPng: png, model: TINY_SD_A, backend: 'wasm', out: path.join(tmp, 'from-a1111') }, { warn: (m) => warnings.push(m) });
    const text = readPngText(fs.readFileSync(r.files[0]!.file))['parameters']!;
    expect(text).toMatch(/^a cat on a chair\nNegative prompt: ugly\nSteps: 4, Sampler: Euler a, Schedule type: Karras, CFG scale: 5\.5, Seed: 42, Size: 64x64, .*Variation seed: 7, Variation seed strength: 0\.25, Clip skip: 2, Version: painter$/);
    expect(warnings).toEqual([`${png}: "Hires upscale" is not reproduced by painter generate`]);
    expect(() => settingsFromParameters(parseInfotext('x\nSteps: 4, Sampler: DPM adaptive, CFG scale: 7, Seed: 1, Size: 64x64'), 'p.png')).toThrow(/p\.png: the sampler "DPM adaptive"/);
  });
});

describe('prompts with A1111 syntax', () => {
  it('emphasis, editing, alternation and BREAK change the image; literal brackets with --emphasis none', async () => {
    const plain = await run({ prompt: 'a cat on a chair', scheduler: 'DDIM' });
    const variants = ['a (cat:1.5) on a chair', 'a [cat:dog:1] on a chair', 'a [cat|dog] on a chair', 'a cat BREAK on a chair'];
    for (const prompt of variants) {
      const r = await run({ prompt, scheduler: 'DDIM' });
      expect(r.pixels.equals(plain.pixels), prompt).toBe(false);
    }
    const literal = await run({ prompt: 'a (cat:1.5) on a chair', scheduler: 'DDIM', emphasis: 'none' });
    expect(lastLine(literal.text)).toMatch(/, Emphasis: None, Version: painter$/);
    const again = await run({ fromPng: literal.file });
    expect(again.pixels.equals(literal.pixels)).toBe(true);
    // [cat:cat:2] never changes the text: the same image as plain "cat".
    const same = await run({ prompt: 'a [cat:cat:2] on a chair', scheduler: 'DDIM' });
    expect(same.pixels.equals(plain.pixels)).toBe(true);
  });

  it('<lora:NAME:SCALE> loads NAME.safetensors from --lora-dir, as --lora FILE:SCALE does', async () => {
    expect(extractLoraTags('a cat <lora:style:0.5>, red')).toEqual({ prompt: 'a cat , red', loras: [{ name: 'style', scale: 0.5 }] });
    expect(extractLoraTags('<lora:x>').loras).toEqual([{ name: 'x', scale: 1 }]);
    expect(() => extractLoraTags('<lora:x:big>')).toThrow(PainterError);
    const dir = path.join(tmp, 'loras');
    fs.mkdirSync(dir);
    fs.copyFileSync(LORA, path.join(dir, 'style.safetensors'));
    const byFlag = await run({ prompt: 'a cat', lora: [`${path.join(dir, 'style.safetensors')}:0.5`] });
    const byTag = await run({ prompt: 'a cat <lora:style:0.5>', loraDir: dir });
    expect(byTag.pixels.equals(byFlag.pixels)).toBe(true);
    expect(byTag.text.split('\n')[0]).toBe('a cat <lora:style:0.5>');
    const again = await run({ fromPng: byTag.file, loraDir: dir });
    expect(again.pixels.equals(byTag.pixels)).toBe(true);
    await expect(run({ prompt: 'a cat <lora:absent:1>', loraDir: dir })).rejects.toThrow(/<lora:absent:1>.*absent\.safetensors.*--lora-dir/);
  });
});

describe('variation seed', () => {
  it("slerp as A1111's: the ends, and the blend of near-parallel noises", () => {
    const shape = [2, 3, 4] as const;
    const a = new Rng(1).normals(24);
    const b = new Rng(2).normals(24);
    const close = (x: Float32Array, y: Float32Array) => x.forEach((v, i) => expect(v).toBeCloseTo(y[i]!, 5));
    close(slerpNoise(0, a, b, shape), a);
    close(slerpNoise(1, a, b, shape), b);
    const mid = slerpNoise(0.25, a, b, shape);
    // Column (c=1, x=2) is one vector along h: sin((1−t)ω)/sin ω · low + sin(tω)/sin ω · high.
    const col = (v: Float32Array) => [0, 1, 2].map((y) => v[(3 + y) * 4 + 2]!);
    const [ca, cb] = [col(a), col(b)];
    const omega = Math.acos(ca.reduce((s, x, i) => s + x * cb[i]!, 0) / Math.hypot(...ca) / Math.hypot(...cb));
    const expected = ca.map((x, i) => (Math.sin(0.75 * omega) * x + Math.sin(0.25 * omega) * cb[i]!) / Math.sin(omega));
    col(mid).forEach((v, i) => expect(v).toBeCloseTo(expected[i]!, 5));
    // Nearly parallel noises take A1111's linear branch, low·t + high·(1 − t).
    close(slerpNoise(0.3, a, a, shape), a);
  });

  it('--subseed-strength 0 keeps the image, 1 gives the subseed\'s; the PNG records both', async () => {
    const base = await run({ prompt: 'a chair', scheduler: 'DDIM' });
    const other = await run({ prompt: 'a chair', scheduler: 'DDIM', seed: 7 });
    const none = await run({ prompt: 'a chair', scheduler: 'DDIM', subseed: 7, subseedStrength: 0 });
    const full = await run({ prompt: 'a chair', scheduler: 'DDIM', subseed: 7, subseedStrength: 1 });
    const some = await run({ prompt: 'a chair', scheduler: 'DDIM', subseed: 7, subseedStrength: 0.2 });
    expect(none.pixels.equals(base.pixels)).toBe(true);
    let worst = 0;
    for (let i = 0; i < full.pixels.length; i++) worst = Math.max(worst, Math.abs(full.pixels[i]! - other.pixels[i]!));
    expect(worst).toBeLessThanOrEqual(1);
    expect(some.pixels.equals(base.pixels) || some.pixels.equals(other.pixels)).toBe(false);
    expect(lastLine(some.text)).toMatch(/Variation seed: 7, Variation seed strength: 0\.2,/);
    await expect(run({ prompt: 'a chair', subseedStrength: 0.5 })).rejects.toThrow(/--subseed-strength needs --subseed/);
  });
});
