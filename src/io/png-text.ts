/**
 * PNG text chunks: generation parameters are stored as AUTOMATIC1111 does, in a text chunk
 * keyed "parameters" (tEXt when the text is Latin-1, iTXt UTF-8 otherwise), so A1111, ComfyUI
 * and other tools read them back.
 */
import * as zlib from 'node:zlib';

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
  start: number;
  end: number;
}

function chunks(png: Buffer): RawChunk[] {
  if (png.length < 8 || !png.subarray(0, 8).equals(SIGNATURE)) throw new Error('not a PNG file');
  const out: RawChunk[] = [];
  let p = 8;
  while (p + 12 <= png.length) {
    const len = png.readUInt32BE(p);
    const type = png.toString('latin1', p + 4, p + 8);
    if (p + 12 + len > png.length) throw new Error(`PNG chunk ${type} is truncated`);
    out.push({ type, data: png.subarray(p + 8, p + 8 + len), start: p, end: p + 12 + len });
    p += 12 + len;
    if (type === 'IEND') break;
  }
  return out;
}

/** Inserts text chunks right after IHDR (before the image data, where readers look first). */
export function addPngText(png: Buffer, entries: Record<string, string>): Buffer {
  const all = chunks(png);
  const ihdr = all.find((c) => c.type === 'IHDR');
  if (!ihdr) throw new Error('PNG has no IHDR chunk');
  const extra = Object.entries(entries).map(([k, v]) => textChunk(k, v));
  return Buffer.concat([png.subarray(0, ihdr.end), ...extra, png.subarray(ihdr.end)]);
}

/** All tEXt / iTXt / zTXt entries of a PNG. */
export function readPngText(png: Buffer): Record<string, string> {
  const out: Record<string, string> = {};
  for (const c of chunks(png)) {
    if (c.type === 'tEXt') {
      const z = c.data.indexOf(0);
      if (z > 0) out[c.data.toString('latin1', 0, z)] = c.data.toString('latin1', z + 1);
    } else if (c.type === 'zTXt') {
      const z = c.data.indexOf(0);
      if (z > 0) out[c.data.toString('latin1', 0, z)] = zlib.inflateSync(c.data.subarray(z + 2)).toString('latin1');
    } else if (c.type === 'iTXt') {
      const z = c.data.indexOf(0);
      if (z <= 0) continue;
      const key = c.data.toString('latin1', 0, z);
      const compressed = c.data[z + 1] === 1;
      let p = z + 3;
      p = c.data.indexOf(0, p) + 1; // language tag
      p = c.data.indexOf(0, p) + 1; // translated keyword
      const body = c.data.subarray(p);
      out[key] = (compressed ? zlib.inflateSync(body) : body).toString('utf8');
    }
  }
  return out;
}
