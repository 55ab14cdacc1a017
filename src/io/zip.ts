/**
 * Minimal ZIP reader (PKWARE APPNOTE 6.3): the central directory (ZIP64 included, as torch.save
 * always writes it), stored and deflated entries, CRC-32 checked (node:zlib's crc32). Enough for
 * torch.save archives; no encryption, no multi-disk archives.
 *
 * The whole archive is read into memory: painter only opens small files this way (embeddings,
 * LoRA .pt files). (`fflate` on npm is a zero-dependency alternative if a streaming or faster
 * reader is ever needed.)
 */
import { constants as bufferConstants } from 'node:buffer';
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
  /** Where the central directory starts: every entry's data lies before it. */
  centralOffset: number;
  /** Entries whose CRC-32 has been checked (each is checked once). */
  verified: Set<string>;
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

/** A damaged archive: the message says which structure is broken. */
function damaged(file: string, what: string): never {
  fail(file, `not a valid ZIP archive (${what}); the file is damaged or incomplete`);
}

/** CRC-32 (IEEE 802.3), as ZIP stores it. */
export function crc32(data: Uint8Array): number {
  return zlib.crc32(data);
}

/** True when the bytes start like a ZIP archive (local file header "PK\x03\x04"). */
export function looksLikeZip(head: Uint8Array): boolean {
  return head.length >= 4 && head[0] === 0x50 && head[1] === 0x4b && head[2] === 0x03 && head[3] === 0x04;
}

function u64(buf: Buffer, at: number, file: string): number {
  const v = buf.readBigUInt64LE(at);
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) damaged(file, 'ZIP64 size or offset too large');
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

/**
 * Parses the end records and the central directory. Every offset and length read from the file
 * is checked against the structure that holds it before it is followed, so a damaged archive is
 * an error naming the file and the broken structure, never a RangeError.
 */
export function parseZip(file: string, bytes: Buffer): ZipArchive {
  if (bytes.length < 22) fail(file, `not a ZIP archive: ${bytes.length} bytes`);
  const eocd = findEocd(bytes, file);
  let count = bytes.readUInt16LE(eocd + 10);
  let cdSize = bytes.readUInt32LE(eocd + 12);
  let cdOffset = bytes.readUInt32LE(eocd + 16);
  // The central directory ends where the end records begin.
  let endRecords = eocd;
  const locator = eocd - 20;
  if (locator >= 0 && bytes.readUInt32LE(locator) === SIG_ZIP64_LOCATOR) {
    const at = u64(bytes, locator + 8, file);
    if (at + 56 > locator || bytes.readUInt32LE(at) !== SIG_ZIP64_EOCD) damaged(file, 'broken ZIP64 end-of-central-directory record');
    count = u64(bytes, at + 32, file);
    cdSize = u64(bytes, at + 40, file);
    cdOffset = u64(bytes, at + 48, file);
    endRecords = at;
  } else if (count === U16_MAX || cdSize === U32_MAX || cdOffset === U32_MAX) {
    fail(file, 'ZIP64 archive without its ZIP64 locator (truncated?)');
  }
  const cdEnd = cdOffset + cdSize;
  if (cdEnd > endRecords) damaged(file, `central directory [${cdOffset}, ${cdEnd}) overlaps the end records at byte ${endRecords}`);

  const entries = new Map<string, ZipEntry>();
  let p = cdOffset;
  for (let i = 0; i < count; i++) {
    if (p + 46 > cdEnd || bytes.readUInt32LE(p) !== SIG_CENTRAL) damaged(file, `central directory entry ${i} is missing or broken`);
    const flags = bytes.readUInt16LE(p + 8);
    const method = bytes.readUInt16LE(p + 10);
    const crc = bytes.readUInt32LE(p + 16);
    let compressedSize = bytes.readUInt32LE(p + 20);
    let size = bytes.readUInt32LE(p + 24);
    const nameLen = bytes.readUInt16LE(p + 28);
    const extraLen = bytes.readUInt16LE(p + 30);
    const commentLen = bytes.readUInt16LE(p + 32);
    let localHeaderOffset = bytes.readUInt32LE(p + 42);
    const next = p + 46 + nameLen + extraLen + commentLen;
    if (next > cdEnd) damaged(file, `central directory entry ${i} runs past the end of the directory`);
    const name = bytes.toString('utf8', p + 46, p + 46 + nameLen);
    // ZIP64 extended information: only the fields whose 32-bit value is saturated, in this order.
    const extraEnd = p + 46 + nameLen + extraLen;
    for (let e = p + 46 + nameLen; e + 4 <= extraEnd; ) {
      const id = bytes.readUInt16LE(e);
      const fieldEnd = e + 4 + bytes.readUInt16LE(e + 2);
      if (fieldEnd > extraEnd) damaged(file, `extra field of entry ${JSON.stringify(name)} runs past its end`);
      if (id === 0x0001) {
        let q = e + 4;
        const field = (): number => {
          if (q + 8 > fieldEnd) damaged(file, `ZIP64 field of entry ${JSON.stringify(name)} is too short`);
          q += 8;
          return u64(bytes, q - 8, file);
        };
        if (size === U32_MAX) size = field();
        if (compressedSize === U32_MAX) compressedSize = field();
        if (localHeaderOffset === U32_MAX) localHeaderOffset = field();
      }
      e = fieldEnd;
    }
    if (flags & 1) fail(file, `entry ${JSON.stringify(name)} is encrypted`);
    if (entries.has(name)) damaged(file, `entry ${JSON.stringify(name)} is listed twice`);
    entries.set(name, { name, method, crc32: crc, compressedSize, size, localHeaderOffset });
    p = next;
  }
  if (p !== cdEnd) damaged(file, `the central directory holds ${cdSize} bytes but its ${count} entries take ${p - cdOffset}`);
  return { file, entries, bytes, centralOffset: cdOffset, verified: new Set() };
}

/** Uncompressed bytes of an entry; its CRC-32 is checked on the first read. */
export function readZipEntry(zip: ZipArchive, name: string): Buffer {
  const e = zip.entries.get(name);
  const quoted = JSON.stringify(name);
  if (!e) fail(zip.file, `archive has no entry ${quoted}`);
  const b = zip.bytes;
  const at = e.localHeaderOffset;
  if (at + 30 > zip.centralOffset || b.readUInt32LE(at) !== SIG_LOCAL) fail(zip.file, `entry ${quoted}: local header missing (damaged archive)`);
  const nameLen = b.readUInt16LE(at + 26);
  // The local header's extra field may differ from the central one (torch pads it for alignment).
  const start = at + 30 + nameLen + b.readUInt16LE(at + 28);
  if (start > zip.centralOffset || b.toString('utf8', at + 30, at + 30 + nameLen) !== name || b.readUInt16LE(at + 8) !== e.method) {
    fail(zip.file, `entry ${quoted}: local header does not match the central directory (damaged archive)`);
  }
  if (start + e.compressedSize > zip.centralOffset) {
    fail(zip.file, `entry ${quoted} ends beyond its place in the archive (truncated or damaged file)`);
  }
  const raw = b.subarray(start, start + e.compressedSize);
  let data: Buffer;
  switch (e.method) {
    case 0:
      data = raw;
      break;
    case 8:
      try {
        // Never inflate past the size the directory promises (a damaged or hostile stream could be huge).
        data = zlib.inflateRawSync(raw, { maxOutputLength: Math.min(Math.max(1, e.size), bufferConstants.MAX_LENGTH) });
      } catch (err) {
        fail(zip.file, `entry ${quoted} cannot be inflated (${(err as Error).message})`);
      }
      break;
    default:
      fail(zip.file, `entry ${quoted} uses compression method ${e.method}; only stored and deflate are supported`);
  }
  if (data.length !== e.size) fail(zip.file, `entry ${quoted} has ${data.length} bytes, the directory says ${e.size} (damaged archive)`);
  if (!zip.verified.has(name)) {
    if (crc32(data) !== e.crc32) fail(zip.file, `entry ${quoted} fails its CRC-32 check (damaged file)`);
    zip.verified.add(name);
  }
  return data;
}

/**
 * Checks every entry's CRC-32, so damage anywhere in the archive's data is reported, not only in
 * the entries a reader goes on to use.
 */
export function verifyZip(zip: ZipArchive): void {
  for (const name of zip.entries.keys()) readZipEntry(zip, name);
}
