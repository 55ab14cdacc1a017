import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { PainterError } from '../src/errors.js';
import { floatToHalf, halfToFloat } from '../src/io/float16.js';
import { closeSafetensors, loadSafetensors, openSafetensors, readTensor, toNumbers, writeSafetensors } from '../src/io/safetensors.js';
import { REFERENCE, TINY_SD_A } from './helpers.js';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'painter-st-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

/** Builds a raw safetensors file from a header object and a data area. */
function rawFile(name: string, header: unknown, data: Uint8Array, lengthOverride?: bigint): string {
  const json = Buffer.from(JSON.stringify(header));
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(lengthOverride ?? BigInt(json.length));
  const file = path.join(tmp, name);
  fs.writeFileSync(file, Buffer.concat([len, json, data]));
  return file;
}

function expectError(file: string, ...parts: string[]): void {
  let err: unknown;
  try {
    const f = openSafetensors(file);
    closeSafetensors(f);
  } catch (e) {
    err = e;
  }
  expect(err).toBeInstanceOf(PainterError);
  const msg = (err as Error).message;
  expect(msg).toContain(path.basename(file));
  for (const p of parts) expect(msg).toContain(p);
}

describe('safetensors', () => {
  it('round-trips every dtype with metadata', async () => {
    const file = path.join(tmp, 'rt.safetensors');
    const f32 = Float32Array.from([1.5, -2.25, 3e-5, 65504, 0.1]);
    await writeSafetensors(
      file,
      {
        a: { shape: [5], data: f32 },
        h: { dtype: 'F16', shape: [5], data: f32 },
        b: { dtype: 'BF16', shape: [1, 5], data: f32 },
        i: { shape: [2, 2], data: Int32Array.from([1, -2, 3, 2147483647]) },
        l: { shape: [3], data: BigInt64Array.from([0n, -5n, 9007199254740991n]) },
        e: { shape: [0, 4], data: new Float32Array(0) },
      },
      { format: 'pt', note: 'painter' },
    );
    const { tensors, metadata } = loadSafetensors(file);
    expect(metadata).toEqual({ format: 'pt', note: 'painter' });
    expect(Array.from(tensors.get('a')!.data as Float32Array)).toEqual(Array.from(f32));
    const h = tensors.get('h')!;
    expect(h.dtype).toBe('F16');
    expect(Array.from(h.data as Float32Array)).toEqual(Array.from(f32, (v) => halfToFloat(floatToHalf(v))));
    const b = tensors.get('b')!;
    expect(b.shape).toEqual([1, 5]);
    (b.data as Float32Array).forEach((v, k) => expect(Math.abs(v - f32[k]!)).toBeLessThanOrEqual(Math.abs(f32[k]!) / 128));
    expect(Array.from(tensors.get('i')!.data as Int32Array)).toEqual([1, -2, 3, 2147483647]);
    expect(toNumbers(tensors.get('l')!)).toEqual([0, -5, 9007199254740991]);
    expect(tensors.get('e')!.shape).toEqual([0, 4]);
    // Header padded to 8 bytes, as the reference implementation writes it.
    const n = Number(fs.readFileSync(file).readBigUInt64LE(0));
    expect(n % 8).toBe(0);
  });

  it('half conversion rounds to nearest even and handles subnormals, Inf and NaN', () => {
    expect(floatToHalf(1)).toBe(0x3c00);
    expect(floatToHalf(65504)).toBe(0x7bff);
    expect(floatToHalf(1e6)).toBe(0x7c00);
    expect(floatToHalf(-0)).toBe(0x8000);
    expect(halfToFloat(floatToHalf(5.960464477539063e-8))).toBe(5.960464477539063e-8);
    expect(floatToHalf(1 + 2 ** -11)).toBe(0x3c00); // tie → even
    expect(floatToHalf(1 + 3 * 2 ** -11)).toBe(0x3c02);
    expect(Number.isNaN(halfToFloat(floatToHalf(NaN)))).toBe(true);
  });

  it('reads the reference pipeline files lazily, tensor by tensor', () => {
    const f = openSafetensors(path.join(TINY_SD_A, 'unet', 'diffusion_pytorch_model.safetensors'));
    try {
      expect(f.metadata).toEqual({ format: 'pt' });
      const w = readTensor(f, 'conv_in.weight');
      expect(w.shape).toEqual([32, 4, 3, 3]);
      expect(w.dtype).toBe('F32');
      expect((w.data as Float32Array).every(Number.isFinite)).toBe(true);
    } finally {
      closeSafetensors(f);
    }
    const { tensors } = loadSafetensors(path.join(REFERENCE, 'training.safetensors'));
    expect(toNumbers(tensors.get('timesteps')!)).toEqual([100, 750]);
    expect(toNumbers(tensors.get('ti_token_id')!)).toEqual([535]);
    expect((tensors.get('loss')!.data as Float32Array)[0]).toBeCloseTo(2.1069586277008057, 6);
  });

  it('rejects a header length beyond the file', () => {
    expectError(rawFile('long.safetensors', {}, new Uint8Array(0), 1000n), 'header length 1000', 'beyond');
  });

  it('rejects offsets outside the data area, naming the tensor', () => {
    expectError(rawFile('out.safetensors', { w: { dtype: 'F32', shape: [4], data_offsets: [0, 16] } }, new Uint8Array(8)), '"w"', 'outside the data area');
  });

  it('rejects overlapping and misordered offsets', () => {
    const header = {
      a: { dtype: 'F32', shape: [2], data_offsets: [0, 8] },
      b: { dtype: 'F32', shape: [2], data_offsets: [4, 12] },
    };
    expectError(rawFile('overlap.safetensors', header, new Uint8Array(12)), '"b"', 'overlap');
    const gap = {
      a: { dtype: 'F32', shape: [1], data_offsets: [4, 8] },
      b: { dtype: 'F32', shape: [1], data_offsets: [8, 12] },
    };
    expectError(rawFile('gap.safetensors', gap, new Uint8Array(12)), '"a"', 'gap');
  });

  it('rejects an unknown dtype and a shape that disagrees with the byte size', () => {
    expectError(rawFile('dtype.safetensors', { q: { dtype: 'F8_E4M3', shape: [4], data_offsets: [0, 4] } }, new Uint8Array(4)), '"q"', 'F8_E4M3');
    expectError(rawFile('shape.safetensors', { s: { dtype: 'F32', shape: [3], data_offsets: [0, 8] } }, new Uint8Array(8)), '"s"', 'shape [3]');
  });

  it('rejects a file that is not safetensors at all', () => {
    const file = path.join(tmp, 'junk.safetensors');
    fs.writeFileSync(file, 'abc');
    expectError(file, 'shorter than');
    expectError(path.join(tmp, 'absent.safetensors'), 'cannot open');
  });

  it('writes atomically: a failed write leaves no file behind', async () => {
    const file = path.join(tmp, 'atomic.safetensors');
    await expect(writeSafetensors(file, { x: { shape: [3], data: new Float32Array(2) } })).rejects.toThrow('"x"');
    expect(fs.existsSync(file)).toBe(false);
    expect(fs.readdirSync(tmp).filter((n) => n.includes('atomic'))).toEqual([]);
  });
});
