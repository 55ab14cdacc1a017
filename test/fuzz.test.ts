/**
 * Fuzzing every reader of untrusted files: seeded byte flips, truncations and insertions of a
 * valid file (and, for zip and safetensors, flips aimed at their directory structures) must each
 * end in a clean result or a one-line PainterError that names the file, within a second. A
 * failure message lists each case's seed and mutation; `mutate(seedBytes, seed, regions)`
 * reproduces it. Also: the CRC-32 checks that refuse damaged data of the same length.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as zlib from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import sharp from 'sharp';
import { pngParameters } from '../src/app/from-png.js';
import { formatInfotext } from '../src/core/infotext.js';
import { isPainterError } from '../src/errors.js';
import { readSourceImage } from '../src/io/dataset.js';
import { readEmbeddingFile } from '../src/io/embeddings.js';
import { readLoraFile } from '../src/io/lora-files.js';
import { encodePng } from '../src/io/png-out.js';
import { readPngText } from '../src/io/png-text.js';
import { loadSafetensors } from '../src/io/safetensors.js';
import { parseZip, readZipEntry } from '../src/io/zip.js';
import { loadPreset } from '../src/options/resolve.js';
import { FIXTURES, ROOT } from './helpers.js';
import { INTEROP, storedZip, torchSave } from './interop-helpers.js';

const CALL_LIMIT_MS = 1000;

/** mulberry32: a tiny seeded PRNG, uniform in [0, 1). */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** A byte range of the seed file that some cases aim their flips at (a directory, a header). */
interface Region {
  name: string;
  start: number;
  end: number;
}

interface Mutant {
  bytes: Buffer;
  what: string;
}

/** Mutation `seed` of `original`: flips anywhere or inside a region, a truncation, or an insertion. */
function mutate(original: Buffer, seed: number, regions: Region[] = []): Mutant {
  const rand = prng(seed);
  const int = (n: number) => Math.floor(rand() * n);
  const randomBytes = (n: number) => Buffer.from(Array.from({ length: n }, () => int(256)));
  const flip = (start: number, end: number, where: string): Mutant => {
    const bytes = Buffer.from(original);
    const at: number[] = [];
    for (let i = 1 + int(8); i > 0; i--) {
      const p = start + int(end - start);
      bytes[p]! ^= 1 + int(255); // never 0: the byte always changes
      at.push(p);
    }
    return { bytes, what: `flipped bytes ${at.join(', ')} (${where})` };
  };
  const kind = int(3 + (regions.length > 0 ? 2 : 0));
  switch (kind) {
    case 0:
      return flip(0, original.length, 'anywhere');
    case 1: {
      const length = int(original.length);
      return { bytes: original.subarray(0, length), what: `truncated to ${length} bytes` };
    }
    case 2: {
      const at = int(original.length + 1);
      const n = 1 + int(16);
      return { bytes: Buffer.concat([original.subarray(0, at), randomBytes(n), original.subarray(at)]), what: `inserted ${n} bytes at ${at}` };
    }
    default: {
      const r = regions[int(regions.length)]!;
      return flip(r.start, r.end, r.name);
    }
  }
}

/** The structures of a zip archive: end records, central directory, each local header and data. */
function zipRegions(bytes: Buffer): Region[] {
  const zip = parseZip('seed', bytes);
  const cdStart = bytes.indexOf(Buffer.from([0x50, 0x4b, 0x01, 0x02]));
  const regions: Region[] = [{ name: 'central directory and end records', start: cdStart, end: bytes.length }];
  for (const e of zip.entries.values()) {
    const at = e.localHeaderOffset;
    const dataStart = at + 30 + bytes.readUInt16LE(at + 26) + bytes.readUInt16LE(at + 28);
    regions.push({ name: `local header of ${e.name}`, start: at, end: dataStart });
    if (e.compressedSize > 0) regions.push({ name: `data of ${e.name}`, start: dataStart, end: dataStart + e.compressedSize });
  }
  return regions;
}

/** The header length and JSON header of a safetensors file. */
function safetensorsRegions(bytes: Buffer): Region[] {
  const n = Number(bytes.readBigUInt64LE(0));
  return [
    { name: 'header length', start: 0, end: 8 },
    { name: 'JSON header', start: 8, end: 8 + n },
  ];
}

interface Seed {
  file: string;
  regions?: Region[];
  /** Builds the file from the mutated bytes (e.g. a mutated pickle re-zipped with a valid CRC). */
  wrap?: (mutated: Buffer) => Buffer;
}

interface Tally {
  clean: number;
  refused: number;
  failures: string[];
  slowestMs: number;
}

let tmp: string;
const tallies: Record<string, Tally> = {};

/**
 * Writes `cases` mutants of the seed files (named like the seed, so format detection by
 * extension sees the real one) and reads each: a clean result or a one-line PainterError naming
 * the file passes (`namesFile: false` for a reader of bytes, which cannot name it); anything
 * else, or a call of a second or more, is a failure.
 */
async function fuzz(reader: string, seeds: Seed[], cases: number, read: (file: string) => unknown, { namesFile = true } = {}): Promise<Tally> {
  const dir = fs.mkdtempSync(path.join(tmp, `${reader.replace(/\W+/g, '-')}-`));
  const tally: Tally = { clean: 0, refused: 0, failures: [], slowestMs: 0 };
  const originals = seeds.map((s) => fs.readFileSync(s.file));
  for (let seed = 1; seed <= cases; seed++) {
    const i = (seed - 1) % seeds.length;
    const s = seeds[i]!;
    const { bytes, what } = mutate(originals[i]!, seed, s.regions);
    const file = path.join(dir, `case-${seed}-${path.basename(s.file)}`);
    fs.writeFileSync(file, s.wrap ? s.wrap(bytes) : bytes);
    const t0 = performance.now();
    let error: unknown;
    try {
      await read(file);
    } catch (e) {
      error = e;
    }
    const ms = performance.now() - t0;
    tally.slowestMs = Math.max(tally.slowestMs, ms);
    const problems: string[] = [];
    if (ms >= CALL_LIMIT_MS) problems.push(`took ${ms.toFixed(0)} ms`);
    if (error === undefined) tally.clean++;
    else if (!isPainterError(error)) problems.push(`raw ${String((error as Error).stack ?? error).split('\n').slice(0, 2).join(' ')}`);
    else if (error.message.includes('\n')) problems.push(`multi-line message ${JSON.stringify(error.message)}`);
    else if (namesFile && !error.message.includes(file)) problems.push(`message does not name the file: ${error.message}`);
    else tally.refused++;
    if (problems.length > 0) tally.failures.push(`seed ${seed} of ${path.basename(s.file)}, ${what}: ${problems.join('; ')}`);
  }
  tallies[reader] = tally;
  return tally;
}

function expectAllHandled(t: Tally): void {
  expect(t.failures, t.failures.join('\n')).toEqual([]);
}

const PT = path.join(INTEROP, 'textual_inversion', 'a1111');
const TI_DIFFUSERS = path.join(INTEROP, 'textual_inversion', 'diffusers', 'kitty', 'learned_embeds.safetensors');
const TI_KOHYA = path.join(INTEROP, 'textual_inversion', 'kohya', 'kitty-2v.safetensors');
const LORA_KOHYA = path.join(INTEROP, 'lora', 'kohya', 'lora_kohya.safetensors');
const LORA_DIFFUSERS = path.join(INTEROP, 'lora', 'diffusers', 'pytorch_lora_weights.safetensors');

const withZipRegions = (file: string): Seed => ({ file, regions: zipRegions(fs.readFileSync(file)) });
const withHeaderRegions = (file: string): Seed => ({ file, regions: safetensorsRegions(fs.readFileSync(file)) });

/** A PNG chunk (length, type, data, CRC-32 of type and data). */
function pngChunk(type: string, data: Buffer): Buffer {
  const head = Buffer.alloc(8);
  head.writeUInt32BE(data.length, 0);
  head.write(type, 4, 'latin1');
  const crc = Buffer.alloc(4);
  crc.writeUInt32BE(zlib.crc32(Buffer.concat([head.subarray(4), data])));
  return Buffer.concat([head, data, crc]);
}

beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'painter-fuzz-'));
});
afterAll(() => {
  fs.rmSync(tmp, { recursive: true, force: true });
  console.log('fuzz outcomes:', JSON.stringify(Object.fromEntries(Object.entries(tallies).map(([k, t]) => [k, { clean: t.clean, refused: t.refused, failures: t.failures.length, slowestMs: Math.round(t.slowestMs) }]))));
});

describe('fuzzed files end in a clean result or a one-line error naming the file', () => {
  it('A1111 .pt embeddings (zip + pickle)', async () => {
    const seeds = ['kitty.pt', 'kitty-2v.pt'].map((f) => withZipRegions(path.join(PT, f)));
    expectAllHandled(await fuzz('pt embedding', seeds, 200, (f) => readEmbeddingFile(f)));
  });

  it('A1111 .pt embeddings with a mutated pickle in an intact archive (the unpickler itself)', async () => {
    // The archive's CRC check refuses a mutated data.pkl before it is unpickled, so these mutants
    // are re-zipped with valid CRCs.
    const seeds = ['kitty.pt', 'kitty-2v.pt'].map((name): Seed => {
      const zip = parseZip(name, fs.readFileSync(path.join(PT, name)));
      const entries = Object.fromEntries([...zip.entries.keys()].map((k) => [k, readZipEntry(zip, k)]));
      const pkl = Object.keys(entries).find((k) => k.endsWith('/data.pkl'))!;
      const file = path.join(tmp, name);
      fs.writeFileSync(file, entries[pkl]!);
      return { file, wrap: (mutated) => storedZip({ ...entries, [pkl]: mutated }) };
    });
    expectAllHandled(await fuzz('pt pickle', seeds, 200, (f) => readEmbeddingFile(f)));
  });

  it('torch.save LoRA state dicts (.bin: zip + pickle)', async () => {
    const { tensors } = loadSafetensors(LORA_DIFFUSERS);
    // Four adapters are enough structure; the whole file would only add data bytes.
    const keys = [...tensors.keys()].filter((k) => /attn1\.(to_q|to_k)\.lora/.test(k)).slice(0, 8);
    const dict = Object.fromEntries(keys.map((k) => [k, { shape: tensors.get(k)!.shape, data: tensors.get(k)!.data as Float32Array }]));
    const bin = path.join(tmp, 'pytorch_lora_weights.bin');
    fs.writeFileSync(bin, torchSave('archive', dict, true));
    expect(readLoraFile(bin).adapters.length).toBe(keys.length / 2);
    expectAllHandled(
      await fuzz('pt lora', [withZipRegions(bin)], 100, (f) => {
        for (const a of readLoraFile(f).adapters) tf.dispose([a.down, a.up]);
      }),
    );
  });

  it('safetensors', async () => {
    const seeds = [TI_DIFFUSERS, TI_KOHYA, LORA_KOHYA].map(withHeaderRegions);
    expectAllHandled(await fuzz('safetensors', seeds, 200, (f) => loadSafetensors(f)));
  });

  it('safetensors embeddings', async () => {
    const seeds = [TI_DIFFUSERS, TI_KOHYA].map(withHeaderRegions);
    expectAllHandled(await fuzz('safetensors embedding', seeds, 100, (f) => readEmbeddingFile(f)));
  });

  it('safetensors LoRA files', async () => {
    const seeds = [LORA_KOHYA, LORA_DIFFUSERS].map(withHeaderRegions);
    expectAllHandled(
      await fuzz('safetensors lora', seeds, 100, (f) => {
        for (const a of readLoraFile(f).adapters) tf.dispose([a.down, a.up]);
      }),
    );
  });

  it('PNG infotext', async () => {
    const pixels = new Uint8Array(16 * 16 * 3).map((_, i) => (i * 37) % 256);
    const params = {
      prompt: 'a photo of <kitty> on a sofa',
      negativePrompt: 'blurry',
      steps: 20,
      sampler: 'DDIM',
      cfgScale: 7.5,
      seed: 1234,
      width: 16,
      height: 16,
      tiHashes: { '<kitty>': '0123abcd' },
      extra: {},
    };
    const latin1 = path.join(tmp, 'latin1.png');
    fs.writeFileSync(latin1, await encodePng(pixels, 16, 16, { parameters: formatInfotext(params) }));
    // UTF-8 text goes into iTXt; a compressed zTXt comment exercises inflation too.
    const utf8 = await encodePng(pixels, 16, 16, { parameters: formatInfotext({ ...params, prompt: 'a photo of <kitty>, 猫' }) });
    const ztxt = pngChunk('zTXt', Buffer.concat([Buffer.from('Comment\0\0', 'latin1'), zlib.deflateSync(Buffer.from('made by painter', 'latin1'))]));
    const mixed = path.join(tmp, 'mixed.png');
    fs.writeFileSync(mixed, Buffer.concat([utf8.subarray(0, 33), ztxt, utf8.subarray(33)]));
    expect(pngParameters(mixed).parameters.seed).toBe(1234);
    const seeds = [{ file: latin1 }, { file: mixed }];
    expectAllHandled(await fuzz('png infotext', seeds, 100, (f) => pngParameters(f)));
    // The chunk reader on its own, which pngParameters wraps: damage is a PainterError, never a raw exception.
    expectAllHandled(await fuzz('png text chunks', seeds, 100, (f) => readPngText(fs.readFileSync(f)), { namesFile: false }));
  });

  it('YAML presets', async () => {
    expectAllHandled(
      await fuzz('yaml preset', [{ file: path.join(ROOT, 'presets', 'ti-object.yaml') }], 100, (f) => {
        const r = loadPreset(f, 'invert');
        // A preset's problems are returned all at once; each must still be one line naming the file.
        for (const e of r.errors) if (e.includes('\n') || !e.includes(f)) throw new Error(`preset error is not one line naming the file: ${JSON.stringify(e)}`);
      }),
    );
  });

  it('training images', async () => {
    const seeds = [{ file: path.join(FIXTURES, 'photos', 'cat', 'chelsea-1.jpg') }];
    expectAllHandled(await fuzz('image', seeds, 50, (f) => readSourceImage(f, 32)));
  });
});

describe('CRC-32 checks', () => {
  it('refuses a .pt whose entry data changed without changing length', () => {
    const bytes = fs.readFileSync(path.join(PT, 'kitty.pt'));
    for (const entry of ['kitty/data/0', 'kitty/data.pkl', 'kitty/version']) {
      const region = zipRegions(bytes).find((r) => r.name === `data of ${entry}`)!;
      const damaged = Buffer.from(bytes);
      damaged[region.start + Math.floor((region.end - region.start) / 2)]! ^= 0x01;
      const file = path.join(tmp, `crc-${entry.replace(/\W+/g, '-')}.pt`);
      fs.writeFileSync(file, damaged);
      expect(() => readEmbeddingFile(file)).toThrow(`${file}: entry "${entry}" fails its CRC-32 check`);
    }
  });

  it('refuses a PNG whose parameters text changed without changing length', async () => {
    const png = await encodePng(new Uint8Array(4 * 4 * 3), 4, 4, { parameters: 'a cat\nSteps: 20, Sampler: DDIM, CFG scale: 7.5, Seed: 1, Size: 4x4' });
    const damaged = Buffer.from(png);
    damaged[damaged.indexOf('Seed: 1') + 6] = 0x32; // Seed: 1 → Seed: 2
    const file = path.join(tmp, 'crc-parameters.png');
    fs.writeFileSync(file, damaged);
    expect(() => pngParameters(file)).toThrow(/crc-parameters\.png: cannot read PNG metadata \(damaged PNG: tEXt chunk at byte \d+ fails its CRC-32 check\)/);
  });
});
