/**
 * PNG text chunks: generation parameters are stored as AUTOMATIC1111 does, in a text chunk
 * keyed "parameters" (tEXt when the text is Latin-1, iTXt UTF-8 otherwise), so A1111, ComfyUI
 * and other tools read them back.
 */
import * as zlib from 'node:zlib';
import { PainterError } from '../errors.js';

const SIGNATURE = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);

function chunk(type: string, data: Buffer): Buffer {
  const len = Buffer.alloc(4);
  len.writeUInt32BE(data.length);
  const typeBuf = Buffer.from(type, 'latin1');
  const crc = Buffer.alloc(4);
  crc.writeUInt32BE(zlib.crc32(Buffer.concat([typeBuf, data])) >>> 0);
  return Buffer.concat([len, typeBuf, data, crc]);
}

function isLatin1(s: string): boolean {
  for (let i = 0; i < s.length; i++) if (s.charCodeAt(i) > 0xff) return false;
  return true;
}

function textChunk(key: string, value: string): Buffer {
  if (isLatin1(value)) return chunk('tEXt', Buffer.concat([Buffer.from(key, 'latin1'), Buffer.from([0]), Buffer.from(value, 'latin1')]));
  // iTXt: keyword, 0, compression flag 0, method 0, empty language tag, 0, empty translated keyword, 0, UTF-8 text.
  return chunk('iTXt', Buffer.concat([Buffer.from(key, 'latin1'), Buffer.from([0, 0, 0, 0, 0]), Buffer.from(value, 'utf8')]));
}

interface RawChunk {
  type: string;
  data: Buffer;
  /** The CRC-32 stored after the data (of type and data). */
  crc: number;
  start: number;
  end: number;
}

function damaged(what: string): never {
  throw new PainterError(`damaged PNG: ${what}`);
}

function chunks(png: Buffer): RawChunk[] {
  if (png.length < 8 || !png.subarray(0, 8).equals(SIGNATURE)) throw new PainterError('not a PNG file (no PNG signature)');
  const out: RawChunk[] = [];
  let p = 8;
  while (p + 12 <= png.length) {
    const len = png.readUInt32BE(p);
    const type = png.toString('latin1', p + 4, p + 8);
    if (!/^[A-Za-z]{4}$/.test(type)) damaged(`the chunk at byte ${p} has no valid type`);
    if (p + 12 + len > png.length) damaged(`chunk ${type} at byte ${p} runs past the end of the file (truncated?)`);
    out.push({ type, data: png.subarray(p + 8, p + 8 + len), crc: png.readUInt32BE(p + 8 + len), start: p, end: p + 12 + len });
    p += 12 + len;
    if (type === 'IEND') break;
  }
  return out;
}

/** A text chunk's data, after its CRC-32 check (the image chunks are left to the image decoder). */
function checkedData(c: RawChunk): Buffer {
  const crc = zlib.crc32(c.data, zlib.crc32(Buffer.from(c.type, 'latin1')));
  if (crc !== c.crc) damaged(`${c.type} chunk at byte ${c.start} fails its CRC-32 check`);
  return c.data;
}

// Text chunks hold a few KB; this bound keeps a damaged or hostile compressed chunk from filling memory.
const MAX_TEXT_BYTES = 16 << 20;

function inflate(key: string, body: Buffer): Buffer {
  try {
    return zlib.inflateSync(body, { maxOutputLength: MAX_TEXT_BYTES });
  } catch (e) {
    damaged(`the compressed text ${JSON.stringify(key)} cannot be inflated (${(e as Error).message})`);
  }
}

/** Inserts text chunks right after IHDR (before the image data, where readers look first). */
export function addPngText(png: Buffer, entries: Record<string, string>): Buffer {
  const all = chunks(png);
  const ihdr = all.find((c) => c.type === 'IHDR');
  if (!ihdr) damaged('no IHDR chunk');
  const extra = Object.entries(entries).map(([k, v]) => textChunk(k, v));
  return Buffer.concat([png.subarray(0, ihdr.end), ...extra, png.subarray(ihdr.end)]);
}

/**
 * All tEXt / iTXt / zTXt entries of a PNG, each chunk CRC-checked. A damaged file is a
 * PainterError saying what is wrong (the caller adds the file name).
 */
export function readPngText(png: Buffer): Record<string, string> {
  const out: Record<string, string> = {};
  for (const c of chunks(png)) {
    if (c.type !== 'tEXt' && c.type !== 'zTXt' && c.type !== 'iTXt') continue;
    const data = checkedData(c);
    // An intact chunk that breaks the format (another tool's bug) is skipped, as readers do.
    const z = data.indexOf(0);
    if (z <= 0) continue;
    const key = data.toString('latin1', 0, z);
    if (c.type === 'tEXt') out[key] = data.toString('latin1', z + 1);
    else if (c.type === 'zTXt') out[key] = inflate(key, data.subarray(z + 2)).toString('latin1');
    else {
      // keyword, 0, compression flag, method, language tag, 0, translated keyword, 0, text
      const compressed = data[z + 1] === 1;
      const language = data.indexOf(0, z + 3);
      const translated = language < 0 ? -1 : data.indexOf(0, language + 1);
      if (translated < 0) continue;
      const body = data.subarray(translated + 1);
      out[key] = (compressed ? inflate(key, body) : body).toString('utf8');
    }
  }
  return out;
}
