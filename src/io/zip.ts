/**
 * Minimal ZIP reader (PKWARE APPNOTE 6.3): the central directory (ZIP64 included, as torch.save
 * always writes it), stored and deflated entries, CRC-32 checked. Enough for torch.save
 * archives; no encryption, no multi-disk archives.
 *
 * The whole archive is read into memory: painter only opens small files this way (embeddings,
 * LoRA .pt files). (`fflate` on npm is a zero-dependency alternative if a streaming or faster
 * reader is ever needed.)
 */
import * as fs from 'node:fs';
import * as zlib from 'node:zlib';
import { PainterError } from '../errors.js';

export interface ZipEntry {
  name: string;
  /** 0 = stored, 8 = deflate */
  method: number;
  crc32: number;
  compressedSize: number;
  size: number;
  localHeaderOffset: number;
}

export interface ZipArchive {
  file: string;
  /** Entries by name, in central-directory order. */
  entries: Map<string, ZipEntry>;
  bytes: Buffer;
}

const SIG_EOCD = 0x06054b50;
const SIG_ZIP64_LOCATOR = 0x07064b50;
const SIG_ZIP64_EOCD = 0x06064b50;
const SIG_CENTRAL = 0x02014b50;
const SIG_LOCAL = 0x04034b50;
const U16_MAX = 0xffff;
const U32_MAX = 0xffffffff;

function fail(file: string, what: string): never {
  throw new PainterError(`${file}: ${what}`);
}

let crcTable: Uint32Array | undefined;

/** CRC-32 (IEEE 802.3, reflected polynomial 0xEDB88320), as ZIP stores it. */
export function crc32(data: Uint8Array): number {
  if (!crcTable) {
    crcTable = new Uint32Array(256);
    for (let n = 0; n < 256; n++) {
      let c = n;
      for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
      crcTable[n] = c >>> 0;
    }
  }
  let c = 0xffffffff;
  for (let i = 0; i < data.length; i++) c = crcTable[(c ^ data[i]!) & 0xff]! ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

/** True when the bytes start like a ZIP archive (local file header "PK\x03\x04"). */
export function looksLikeZip(head: Uint8Array): boolean {
  return head.length >= 4 && head[0] === 0x50 && head[1] === 0x4b && head[2] === 0x03 && head[3] === 0x04;
}

function u64(buf: Buffer, at: number, file: string): number {
  const v = buf.readBigUInt64LE(at);
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) fail(file, 'ZIP64 size or offset too large');
  return Number(v);
}

function findEocd(buf: Buffer, file: string): number {
  // The EOCD record is 22 bytes plus a comment of at most 65535 bytes, at the very end.
  const stop = Math.max(0, buf.length - 22 - U16_MAX);
  for (let i = buf.length - 22; i >= stop; i--) {
    if (buf.readUInt32LE(i) === SIG_EOCD) return i;
  }
  fail(file, 'not a ZIP archive or truncated (no end-of-central-directory record); the download may be incomplete');
}

/** Reads the archive's directory; entry data is extracted with `readZipEntry`. */
export function openZip(file: string): ZipArchive {
  let bytes: Buffer;
  try {
    bytes = fs.readFileSync(file);
  } catch (e) {
    fail(file, `cannot read (${(e as NodeJS.ErrnoException).code ?? String(e)}); check the path`);
  }
  return parseZip(file, bytes);
}

export function parseZip(file: string, bytes: Buffer): ZipArchive {
  if (bytes.length < 22) fail(file, `not a ZIP archive: ${bytes.length} bytes`);
  const eocd = findEocd(bytes, file);
  let count = bytes.readUInt16LE(eocd + 10);
  let cdSize = bytes.readUInt32LE(eocd + 12);
  let cdOffset = bytes.readUInt32LE(eocd + 16);
  const locator = eocd - 20;
  if (locator >= 0 && bytes.readUInt32LE(locator) === SIG_ZIP64_LOCATOR) {
    const at = u64(bytes, locator + 8, file);
    if (at + 56 > bytes.length || bytes.readUInt32LE(at) !== SIG_ZIP64_EOCD) fail(file, 'broken ZIP64 end-of-central-directory record');
    count = u64(bytes, at + 32, file);
    cdSize = u64(bytes, at + 40, file);
    cdOffset = u64(bytes, at + 48, file);
  } else if (count === U16_MAX || cdSize === U32_MAX || cdOffset === U32_MAX) {
    fail(file, 'ZIP64 archive without its ZIP64 locator (truncated?)');
  }
  if (cdOffset + cdSize > bytes.length) fail(file, 'central directory lies beyond the end of the file (truncated?)');

  const entries = new Map<string, ZipEntry>();
  let p = cdOffset;
  for (let i = 0; i < count; i++) {
    if (p + 46 > bytes.length || bytes.readUInt32LE(p) !== SIG_CENTRAL) fail(file, `central directory entry ${i} is damaged`);
    const flags = bytes.readUInt16LE(p + 8);
    const method = bytes.readUInt16LE(p + 10);
    const crc = bytes.readUInt32LE(p + 16);
    let compressedSize = bytes.readUInt32LE(p + 20);
    let size = bytes.readUInt32LE(p + 24);
    const nameLen = bytes.readUInt16LE(p + 28);
    const extraLen = bytes.readUInt16LE(p + 30);
    const commentLen = bytes.readUInt16LE(p + 32);
    let localHeaderOffset = bytes.readUInt32LE(p + 42);
    const name = bytes.toString('utf8', p + 46, p + 46 + nameLen);
    // ZIP64 extended information: only the fields whose 32-bit value is saturated, in this order.
    let e = p + 46 + nameLen;
    const extraEnd = e + extraLen;
    while (e + 4 <= extraEnd) {
      const id = bytes.readUInt16LE(e);
      const len = bytes.readUInt16LE(e + 2);
      if (id === 0x0001) {
        let q = e + 4;
        if (size === U32_MAX) {
          size = u64(bytes, q, file);
          q += 8;
        }
        if (compressedSize === U32_MAX) {
          compressedSize = u64(bytes, q, file);
          q += 8;
        }
        if (localHeaderOffset === U32_MAX) localHeaderOffset = u64(bytes, q, file);
      }
      e += 4 + len;
    }
    if (flags & 1) fail(file, `entry "${name}" is encrypted`);
    entries.set(name, { name, method, crc32: crc, compressedSize, size, localHeaderOffset });
    p = extraEnd + commentLen;
  }
  return { file, entries, bytes };
}

/** Uncompressed bytes of an entry, CRC-checked. */
export function readZipEntry(zip: ZipArchive, name: string): Buffer {
  const e = zip.entries.get(name);
  if (!e) fail(zip.file, `archive has no entry "${name}"`);
  const b = zip.bytes;
  const at = e.localHeaderOffset;
  if (at + 30 > b.length || b.readUInt32LE(at) !== SIG_LOCAL) fail(zip.file, `entry "${name}": local header missing (damaged archive)`);
  // The local header's extra field may differ from the central one (torch pads it for alignment).
  const start = at + 30 + b.readUInt16LE(at + 26) + b.readUInt16LE(at + 28);
  if (start + e.compressedSize > b.length) fail(zip.file, `entry "${name}" ends beyond the end of the file (truncated?)`);
  const raw = b.subarray(start, start + e.compressedSize);
  let data: Buffer;
  switch (e.method) {
    case 0:
      data = raw;
      break;
    case 8:
      try {
        data = zlib.inflateRawSync(raw);
      } catch (err) {
        fail(zip.file, `entry "${name}" cannot be inflated (${(err as Error).message})`);
      }
      break;
    default:
      fail(zip.file, `entry "${name}" uses compression method ${e.method}; only stored and deflate are supported`);
  }
  if (data.length !== e.size) fail(zip.file, `entry "${name}" has ${data.length} bytes, the directory says ${e.size} (damaged archive)`);
  if (crc32(data) !== e.crc32) fail(zip.file, `entry "${name}" fails its CRC-32 check (damaged file)`);
  return data;
}
