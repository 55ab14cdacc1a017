/**
 * `painter generate` as users run it: the PNG of the reference generation (DDIM, 10 steps,
 * guidance 7.5, reference initial latents) equals diffusers' image within 2/255 per pixel;
 * seeds, batches, schedulers, metadata and bad input.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import sharp from 'sharp';
import { formatInfotext, parseInfotext, type GenerationParams } from '../src/core/infotext.js';
import { addPngText, readPngText } from '../src/io/png-text.js';
import { loadSafetensors, writeSafetensors } from '../src/io/safetensors.js';
import { generate, type GenerateInput } from '../src/app/generate.js';
import { REFERENCE, ROOT, TINY_SD_A, useBackend } from './helpers.js';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'painter-gen-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

function painter(args: string[]) {
  const r = spawnSync(process.execPath, [path.join(ROOT, 'bin', 'painter'), ...args], {
    encoding: 'utf8',
    env: { ...process.env, PAINTER_BACKEND: 'wasm' },
    timeout: 120_000,
  });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

async function pixels(file: string): Promise<Buffer> {
  return (await sharp(file).raw().toBuffer({ resolveWithObject: true })).data;
}

/** The library call `painter generate` makes, in this process (no start-up per run). */
async function generateHere(input: GenerateInput): Promise<{ file: string; seed: number }[]> {
  return (await generate({ backend: 'wasm', ...input })).files;
}

const LATENTS = path.join(tmp, 'init-latents.safetensors');

beforeAll(async () => {
  await useBackend('wasm');
  const init = loadSafetensors(path.join(REFERENCE, 'pipeline.safetensors')).tensors.get('init_latents')!;
  await writeSafetensors(LATENTS, { latents: { shape: init.shape, data: init.data as Float32Array } });
});

describe('painter generate', () => {
  it('reproduces the diffusers reference image within 2/255 per pixel, and records its parameters', async () => {
    const out = path.join(tmp, 'ref');
    const r = painter(['generate', 'a photo of a cat', '--model', TINY_SD_A, '--scheduler', 'ddim', '--steps', '10', '--guidance', '7.5', '--latents', LATENTS, '--out', out, '--json']);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const result = JSON.parse(r.stdout);
    expect(result.files).toHaveLength(1);
    const file = result.files[0].file as string;
    const ours = await pixels(file);
    const ref = loadSafetensors(path.join(REFERENCE, 'pipeline.safetensors')).tensors.get('output_image_np')!.data as Float32Array;
    let worst = 0;
    for (let i = 0; i < ref.length; i++) worst = Math.max(worst, Math.abs(ours[i]! - Math.round(ref[i]! * 255)));
    expect(worst).toBeLessThanOrEqual(2);
    const params = parseInfotext(readPngText(fs.readFileSync(file))['parameters']!);
    expect(params).toMatchObject({ prompt: 'a photo of a cat', steps: 10, sampler: 'DDIM', cfgScale: 7.5, width: 64, height: 64, model: 'tiny-sd-a' });
    expect(params.modelHash).toMatch(/^[0-9a-f]{10}$/);
    const info = painter(['info', file]);
    expect(info.code).toBe(0);
    expect(info.stdout).toContain('Sampler: DDIM, CFG scale: 7.5');
    expect(info.stdout).toContain(`painter generate --from-png ${file} makes it again (--scheduler DDIM --steps 10 --guidance 7.5 --seed 0 --width 64 --height 64)`);
  });

  it('same seed → identical PNG; a batch uses seed, seed+1 and matches single runs; files are never overwritten', async () => {
    const out = path.join(tmp, 'seeds');
    const common = { prompt: 'a cat', model: TINY_SD_A, steps: 2, scheduler: 'euler-a', out } as const;
    const a = await generateHere({ ...common, seed: 7, count: 2, batch: 2 });
    const b = await generateHere({ ...common, seed: 8 });
    const c = await generateHere({ ...common, seed: 7 });
    expect(a.map((f) => f.seed)).toEqual([7, 8]);
    expect(fs.readdirSync(out).filter((f) => f.endsWith('.png'))).toHaveLength(4);
    expect(new Set([a[0]!.file, a[1]!.file, b[0]!.file, c[0]!.file]).size).toBe(4);
    expect((await pixels(c[0]!.file)).equals(await pixels(a[0]!.file))).toBe(true);
    expect((await pixels(b[0]!.file)).equals(await pixels(a[1]!.file))).toBe(true);
    expect((await pixels(a[0]!.file)).equals(await pixels(a[1]!.file))).toBe(false);
  });

  it('runs every scheduler, with and without guidance', async () => {
    for (const s of ['ddim', 'pndm', 'euler-a', 'dpm++2m'] as const) {
      const files = await generateHere({ prompt: 'a dog', model: TINY_SD_A, scheduler: s, steps: 3, guidance: s === 'ddim' ? 1 : 5, width: 32, height: 48, out: path.join(tmp, s) });
      expect(files, s).toHaveLength(1);
      expect((await sharp(files[0]!.file).metadata()).height, s).toBe(48);
    }
  });

  it('bad input: one line, the right exit code, no file written', () => {
    const out = path.join(tmp, 'bad');
    const cases: [string[], number, RegExp][] = [
      [['--model', path.join(tmp, 'nope')], 1, /--model .*nope: not found/],
      [['--model', TINY_SD_A, '--scheduler', 'warp'], 2, /Invalid values|choices/i],
      [['--model', TINY_SD_A, '--steps', '0'], 2, /--steps must be at least 1/],
      [['--model', TINY_SD_A, '--steps', '-3'], 2, /--steps must be at least 1/],
      [['--model', TINY_SD_A, '--width', '33'], 1, /--width\/--height: size 33x64 is not a multiple of the model's latent factor 2/],
      [['--model', TINY_SD_A, '--latents', path.join(ROOT, 'package.json')], 1, /--latents .*package\.json/],
      [['--model', TINY_SD_A, '--latents', LATENTS, '--width', '32'], 1, /has shape \[1, 4, 32, 32\]; this model and size need \[B, 4, 32, 16\]/],
    ];
    for (const [args, code, message] of cases) {
      const r = painter(['generate', 'a cat', '--out', out, ...args]);
      expect(r.code, args.join(' ')).toBe(code);
      expect(r.stderr, args.join(' ')).toMatch(message);
      expect(r.stderr).not.toMatch(/\n\s+at /);
    }
    expect(fs.existsSync(out) ? fs.readdirSync(out) : []).toEqual([]);
  });

  it('warns about placeholders no embedding defines; a long prompt is read whole', () => {
    const long = Array.from({ length: 90 }, (_, i) => `word${i % 7}`).join(' ');
    const r = painter(['generate', `a photo of <ghost> ${long}`, '--model', TINY_SD_A, '--steps', '1', '--out', path.join(tmp, 'warn')]);
    expect(r.code).toBe(0);
    expect(r.stderr).toContain('warning: the prompt uses <ghost>, but no loaded embedding defines it');
    expect(r.stderr).not.toMatch(/longer than|cut/);
  });
});

describe('infotext', () => {
  it('round-trips through format, PNG chunks (Latin-1 and UTF-8) and parse', async () => {
    const p: GenerationParams = {
      prompt: 'a <kitty>, oil painting\nsecond line',
      negativePrompt: 'blurry, 低品質',
      steps: 20,
      sampler: 'DPM++ 2M',
      cfgScale: 7,
      seed: 4294967295,
      width: 512,
      height: 768,
      modelHash: '0123456789',
      model: 'v1-5',
      clipSkip: 2,
      tiHashes: { kitty: 'abcdef012345' },
      loraHashes: { style: '0123456789ab' },
      extra: { Version: 'painter' },
    };
    const text = formatInfotext(p);
    expect(text.split('\n').at(-1)).toMatch(/^Steps: 20, Sampler: DPM\+\+ 2M, CFG scale: 7, Seed: 4294967295, Size: 512x768, Model hash: 0123456789/);
    expect(parseInfotext(text)).toEqual(p);
    const png = await sharp({ create: { width: 2, height: 2, channels: 3, background: '#000' } }).png().toBuffer();
    const withText = addPngText(png, { parameters: text });
    expect(readPngText(withText)['parameters']).toBe(text);
    expect((await sharp(withText).raw().toBuffer()).length).toBe(12); // still a valid PNG
    // An A1111-written line parses too.
    const a1111 = parseInfotext('masterpiece\nNegative prompt: ugly\nSteps: 28, Sampler: Euler a, Schedule type: Automatic, CFG scale: 5.5, Seed: 42, Size: 512x512, Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, TI hashes: "kitty: 1234abcd5678", Version: v1.10.1');
    expect(a1111).toMatchObject({ prompt: 'masterpiece', negativePrompt: 'ugly', steps: 28, sampler: 'Euler a', cfgScale: 5.5, seed: 42, tiHashes: { kitty: '1234abcd5678' } });
    expect(a1111.scheduleType).toBe('Automatic');
  });
});

describe('painter generate with learned concepts', () => {
  const TI = path.join(ROOT, 'fixtures', 'interop', 'tiny-sd-a', 'textual_inversion');
  const LORA = path.join(ROOT, 'fixtures', 'interop', 'tiny-sd-a', 'lora');
  const run = async (prompt: string, concepts: Partial<GenerateInput>) => {
    const files = await generateHere({ prompt, model: TINY_SD_A, steps: 2, scheduler: 'ddim', out: path.join(tmp, 'concepts'), ...concepts });
    return pixels(files[0]!.file);
  };

  it('an embedding in each format changes images whose prompt uses its token, and only those', async () => {
    const plainCat = await run('a photo of a cat', {});
    const formats: [Partial<GenerateInput>, string][] = [
      [{ embedding: [path.join(TI, 'diffusers', 'kitty', 'learned_embeds.safetensors')] }, '<kitty>'],
      [{ embedding: [path.join(TI, 'a1111', 'kitty.pt')] }, 'kitty'],
      [{ embedding: [path.join(TI, 'kohya', 'kitty.safetensors')], token: '<kitty>' }, '<kitty>'],
    ];
    let first: Buffer | undefined;
    for (const [concepts, token] of formats) {
      const what = JSON.stringify(concepts);
      const withToken = await run(`a photo of ${token}`, concepts);
      const withoutToken = await run('a photo of a cat', concepts);
      expect(withoutToken.equals(plainCat), what).toBe(true);
      expect(withToken.equals(plainCat), what).toBe(false);
      first ??= withToken;
      expect(withToken.equals(first), `${what}: same vectors, same image`).toBe(true);
    }
  });

  it('a LoRA changes the image; scale 0 leaves it unchanged; both namings agree', async () => {
    const plain = await run('a photo of a cat', {});
    const diffusers = await run('a photo of a cat', { lora: [`${path.join(LORA, 'diffusers', 'pytorch_lora_weights.safetensors')}:0.5`] });
    const kohya = await run('a photo of a cat', { lora: [path.join(LORA, 'kohya', 'lora_kohya.safetensors')] });
    const zero = await run('a photo of a cat', { lora: [`${path.join(LORA, 'kohya', 'lora_kohya.safetensors')}:0`] });
    expect(diffusers.equals(plain)).toBe(false);
    // kohya's alpha/rank = 0.5 equals the diffusers file at scale 0.5 (within rounding of the merge).
    let worst = 0;
    for (let i = 0; i < kohya.length; i++) worst = Math.max(worst, Math.abs(kohya[i]! - diffusers[i]!));
    expect(worst).toBeLessThanOrEqual(1);
    expect(zero.equals(plain)).toBe(true);
  });

  it('bad embedding and LoRA files: one line naming the file', () => {
    const wide = path.join(tmp, 'wide.safetensors');
    const broken = path.join(tmp, 'broken.pt');
    fs.writeFileSync(broken, 'PK\u0003\u0004 not really a zip');
    return writeSafetensors(wide, { '<wide>': { shape: [1, 48], data: new Float32Array(48) } }).then(() => {
      const cases: [string[], RegExp][] = [
        [['--embedding', wide], /wide\.safetensors.*48.*32|wide\.safetensors.*width/],
        [['--embedding', broken], /broken\.pt/],
        [['--embedding', path.join(tmp, 'absent.safetensors')], /absent\.safetensors/],
        [['--lora', path.join(tmp, 'absent-lora.safetensors')], /absent-lora\.safetensors/],
      ];
      for (const [args, message] of cases) {
        const r = painter(['generate', 'a cat', '--model', TINY_SD_A, '--steps', '1', '--out', path.join(tmp, 'bad-concepts'), ...args]);
        expect(r.code, args.join(' ')).toBe(1);
        expect(r.stderr, args.join(' ')).toMatch(message);
        expect(r.stderr.trim().split('\n'), args.join(' ')).toHaveLength(1);
      }
    });
  });
});

describe('painter generate interrupted', () => {
  it('Ctrl-C stops between steps with exit 130, keeping only complete images', async () => {
    const { spawn } = await import('node:child_process');
    const out = path.join(tmp, 'interrupted');
    const child = spawn(process.execPath, [path.join(ROOT, 'bin', 'painter'), 'generate', 'a cat', '--model', TINY_SD_A, '--steps', '4', '--count', '200', '--width', '32', '--height', '32', '--out', out], {
      env: { ...process.env, PAINTER_BACKEND: 'wasm' },
    });
    let stderr = '';
    child.stderr.on('data', (d) => (stderr += String(d)));
    await new Promise<void>((resolve) => {
      const t = setInterval(() => {
        if (fs.existsSync(out) && fs.readdirSync(out).some((f) => f.endsWith('.png'))) {
          clearInterval(t);
          resolve();
        }
      }, 50);
    });
    child.kill('SIGINT');
    const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
    expect(code, stderr).toBe(130);
    expect(stderr).toMatch(/interrupted; \d+ complete image\(s\) kept/);
    const files = fs.readdirSync(out);
    expect(files.length).toBeGreaterThan(0);
    expect(files.length).toBeLessThan(200);
    expect(files.every((f) => /^\d{5}-\d+\.png$/.test(f))).toBe(true); // no temp or partial files
    for (const f of files) expect((await sharp(path.join(out, f)).raw().toBuffer()).length).toBe(32 * 32 * 3);
  });
});

describe('painter generate within a memory limit', () => {
  const TI = path.join(ROOT, 'fixtures', 'interop', 'tiny-sd-a', 'textual_inversion', 'diffusers', 'kitty', 'learned_embeds.safetensors');
  const LORA = path.join(ROOT, 'fixtures', 'interop', 'tiny-sd-a', 'lora', 'kohya', 'lora_kohya.safetensors');
  const run = (env: Record<string, string>, out: string) => {
    const r = spawnSync(
      process.execPath,
      [path.join(ROOT, 'bin', 'painter'), 'generate', 'a photo of <kitty>', '--model', TINY_SD_A, '--steps', '3', '--count', '2', '--seed', '5', '--embedding', TI, '--lora', LORA, '--out', path.join(tmp, out), '--json'],
      { encoding: 'utf8', env: { ...process.env, PAINTER_BACKEND: 'wasm', ...env }, timeout: 120_000 },
    );
    return { code: r.status, stdout: r.stdout, stderr: r.stderr };
  };

  it('generates one component at a time when only that fits, with identical images; refuses below that', async () => {
    const whole = run({}, 'whole');
    // tiny-sd-a needs ~43 MB whole and ~40 MB one component at a time on wasm.
    const phased = run({ PAINTER_MEMORY_LIMIT: '43MB' }, 'phased');
    expect(whole.code, whole.stderr).toBe(0);
    expect(phased.code, phased.stderr).toBe(0);
    expect(whole.stderr).not.toContain('one component loaded at a time');
    expect(phased.stderr).toContain('generating with one component loaded at a time');
    const a = JSON.parse(whole.stdout).files;
    const b = JSON.parse(phased.stdout).files;
    for (let i = 0; i < 2; i++) expect((await pixels(b[i].file)).equals(await pixels(a[i].file)), `image ${i}`).toBe(true);
    const refused = run({ PAINTER_MEMORY_LIMIT: '30MB' }, 'refused');
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(/^painter: not enough memory: generate needs about \d+ MB .* even holding one component at a time\), but only 29 MB can be used .*PAINTER_MEMORY_LIMIT.*Nothing was loaded or written/);
    expect(fs.existsSync(path.join(tmp, 'refused'))).toBe(false);
  });
});
