/**
 * Minimal ZIP reader (PKWARE APPNOTE 6.3): the central directory (ZIP64 included, as torch.save
 * always writes it), stored and deflated entries, CRC-32 checked (node:zlib's crc32). Enough for
 * torch.save archives; no encryption, no multi-disk archives.
 *
 * `openZip` keeps only the central directory in memory and reads each entry on demand from the
 * file descriptor (`closeZip` releases it), so a multi-GB `.ckpt` is never held whole; `parseZip`
 * reads an archive already in memory. (`fflate` on npm is a zero-dependency alternative if a
 * streaming or faster inflater is ever needed.)
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

/** Random access to the archive's bytes: a buffer in memory or an open file. */
interface ByteSource {
  readonly size: number;
  /** Bytes [start, start + into.length) into `into`; the range lies inside the archive. */
  readInto(start: number, into: Uint8Array): void;
  close(): void;
}

export interface ZipArchive {
  file: string;
  /** Entries by name, in central-directory order. */
  entries: Map<string, ZipEntry>;
  /** Where the central directory starts: every entry's data lies before it. */
  centralOffset: number;
  /** Entries whose CRC-32 has been checked (each is checked once). */
  verified: Set<string>;
  source: ByteSource;
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

function memorySource(bytes: Buffer): ByteSource {
  return {
    size: bytes.length,
    readInto: (start, into) => into.set(bytes.subarray(start, start + into.length)),
    close: () => {},
  };
}

function fileSource(file: string, fd: number): ByteSource {
  return {
    size: fs.fstatSync(fd).size,
    readInto(start, into) {
      for (let done = 0; done < into.length; ) {
        const got = fs.readSync(fd, into, done, into.length - done, start + done);
        if (got === 0) fail(file, 'the file ended while it was read (truncated, or changed while painter read it)');
        done += got;
      }
    },
    close: () => fs.closeSync(fd),
  };
}

/** `length` bytes at `start`, which the caller has checked lie inside the archive. */
function bytesAt(src: ByteSource, start: number, length: number): Buffer {
  const out = Buffer.alloc(length);
  src.readInto(start, out);
  return out;
}

function u64(buf: Buffer, at: number, file: string): number {
  const v = buf.readBigUInt64LE(at);
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) damaged(file, 'ZIP64 size or offset too large');
  return Number(v);
}

/** Absolute offset of the end-of-central-directory record. */
function findEocd(src: ByteSource, file: string): number {
  // The EOCD record is 22 bytes plus a comment of at most 65535 bytes, at the very end.
  const tailLength = Math.min(src.size, 22 + U16_MAX);
  const tailStart = src.size - tailLength;
  const tail = bytesAt(src, tailStart, tailLength);
  for (let i = tailLength - 22; i >= 0; i--) {
    if (tail.readUInt32LE(i) === SIG_EOCD) return tailStart + i;
  }
  fail(file, 'not a ZIP archive or truncated (no end-of-central-directory record); the download may be incomplete');
}

/** Reads the archive's directory; entry data is read with `readZipEntry`, the file closed with `closeZip`. */
export function openZip(file: string): ZipArchive {
  let fd: number;
  try {
    fd = fs.openSync(file, 'r');
  } catch (e) {
    fail(file, `cannot read (${(e as NodeJS.ErrnoException).code ?? String(e)}); check the path`);
  }
  const src = fileSource(file, fd);
  try {
    return parseArchive(file, src);
  } catch (e) {
    src.close();
    throw e;
  }
}

/** Releases the file `openZip` opened (nothing for an archive parsed from memory). */
export function closeZip(zip: ZipArchive): void {
  zip.source.close();
}

/** Parses an archive held in memory. */
export function parseZip(file: string, bytes: Buffer): ZipArchive {
  return parseArchive(file, memorySource(bytes));
}

/**
 * Parses the end records and the central directory. Every offset and length read from the file
 * is checked against the structure that holds it before it is followed, so a damaged archive is
 * an error naming the file and the broken structure, never a RangeError.
 */
function parseArchive(file: string, src: ByteSource): ZipArchive {
  if (src.size < 22) fail(file, `not a ZIP archive: ${src.size} bytes`);
  const eocdAt = findEocd(src, file);
  const eocd = bytesAt(src, eocdAt, 22);
  let count = eocd.readUInt16LE(10);
  let cdSize = eocd.readUInt32LE(12);
  let cdOffset = eocd.readUInt32LE(16);
  // The central directory ends where the end records begin.
  let endRecords = eocdAt;
  const locator = eocdAt - 20;
  const loc = locator >= 0 ? bytesAt(src, locator, 20) : undefined;
  if (loc && loc.readUInt32LE(0) === SIG_ZIP64_LOCATOR) {
    const at = u64(loc, 8, file);
    if (at + 56 > locator) damaged(file, 'broken ZIP64 end-of-central-directory record');
    const z64 = bytesAt(src, at, 56);
    if (z64.readUInt32LE(0) !== SIG_ZIP64_EOCD) damaged(file, 'broken ZIP64 end-of-central-directory record');
    count = u64(z64, 32, file);
    cdSize = u64(z64, 40, file);
    cdOffset = u64(z64, 48, file);
    endRecords = at;
  } else if (count === U16_MAX || cdSize === U32_MAX || cdOffset === U32_MAX) {
    fail(file, 'ZIP64 archive without its ZIP64 locator (truncated?)');
  }
  const cdEnd = cdOffset + cdSize;
  if (cdEnd > endRecords) damaged(file, `central directory [${cdOffset}, ${cdEnd}) overlaps the end records at byte ${endRecords}`);
  const cd = bytesAt(src, cdOffset, cdSize);

  const entries = new Map<string, ZipEntry>();
  let p = 0;
  for (let i = 0; i < count; i++) {
    if (p + 46 > cdSize || cd.readUInt32LE(p) !== SIG_CENTRAL) damaged(file, `central directory entry ${i} is missing or broken`);
    const flags = cd.readUInt16LE(p + 8);
    const method = cd.readUInt16LE(p + 10);
    const crc = cd.readUInt32LE(p + 16);
    let compressedSize = cd.readUInt32LE(p + 20);
    let size = cd.readUInt32LE(p + 24);
    const nameLen = cd.readUInt16LE(p + 28);
    const extraLen = cd.readUInt16LE(p + 30);
    const commentLen = cd.readUInt16LE(p + 32);
    let localHeaderOffset = cd.readUInt32LE(p + 42);
    const next = p + 46 + nameLen + extraLen + commentLen;
    if (next > cdSize) damaged(file, `central directory entry ${i} runs past the end of the directory`);
    const name = cd.toString('utf8', p + 46, p + 46 + nameLen);
    // ZIP64 extended information: only the fields whose 32-bit value is saturated, in this order.
    const extraEnd = p + 46 + nameLen + extraLen;
    for (let e = p + 46 + nameLen; e + 4 <= extraEnd; ) {
      const id = cd.readUInt16LE(e);
      const fieldEnd = e + 4 + cd.readUInt16LE(e + 2);
      if (fieldEnd > extraEnd) damaged(file, `extra field of entry ${JSON.stringify(name)} runs past its end`);
      if (id === 0x0001) {
        let q = e + 4;
        const field = (): number => {
          if (q + 8 > fieldEnd) damaged(file, `ZIP64 field of entry ${JSON.stringify(name)} is too short`);
          q += 8;
          return u64(cd, q - 8, file);
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
  if (p !== cdSize) damaged(file, `the central directory holds ${cdSize} bytes but its ${count} entries take ${p}`);
  return { file, entries, centralOffset: cdOffset, verified: new Set(), source: src };
}

/** The entry and where its (compressed) data start, after checking its local header. */
function locate(zip: ZipArchive, name: string): { e: ZipEntry; start: number } {
  const e = zip.entries.get(name);
  const quoted = JSON.stringify(name);
  if (!e) fail(zip.file, `archive has no entry ${quoted}`);
  const at = e.localHeaderOffset;
  if (at + 30 > zip.centralOffset) fail(zip.file, `entry ${quoted}: local header missing (damaged archive)`);
  const header = bytesAt(zip.source, at, 30);
  if (header.readUInt32LE(0) !== SIG_LOCAL) fail(zip.file, `entry ${quoted}: local header missing (damaged archive)`);
  const nameLen = header.readUInt16LE(26);
  // The local header's extra field may differ from the central one (torch pads it for alignment).
  const start = at + 30 + nameLen + header.readUInt16LE(28);
  if (start > zip.centralOffset || bytesAt(zip.source, at + 30, nameLen).toString('utf8') !== name || header.readUInt16LE(8) !== e.method) {
    fail(zip.file, `entry ${quoted}: local header does not match the central directory (damaged archive)`);
  }
  if (start + e.compressedSize > zip.centralOffset) {
    fail(zip.file, `entry ${quoted} ends beyond its place in the archive (truncated or damaged file)`);
  }
  return { e, start };
}

function checkCrc(zip: ZipArchive, e: ZipEntry, data: Uint8Array): void {
  if (zip.verified.has(e.name)) return;
  if (crc32(data) !== e.crc32) fail(zip.file, `entry ${JSON.stringify(e.name)} fails its CRC-32 check (damaged file)`);
  zip.verified.add(e.name);
}

/** Uncompressed bytes of an entry; its CRC-32 is checked on the first read. */
export function readZipEntry(zip: ZipArchive, name: string): Buffer {
  const { e, start } = locate(zip, name);
  const quoted = JSON.stringify(name);
  const raw = bytesAt(zip.source, start, e.compressedSize);
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
  checkCrc(zip, e, data);
  return data;
}

/**
 * Reads a whole entry into `into` (exactly its uncompressed size), e.g. a typed array's bytes: a
 * stored entry goes straight from the file into it, with no intermediate copy. CRC-checked.
 */
export function readZipEntryInto(zip: ZipArchive, name: string, into: Uint8Array): void {
  const { e, start } = locate(zip, name);
  if (into.length !== e.size) throw new Error(`readZipEntryInto: entry ${JSON.stringify(name)} has ${e.size} bytes, not ${into.length}`);
  if (e.method !== 0) {
    into.set(readZipEntry(zip, name));
    return;
  }
  if (e.compressedSize !== e.size) fail(zip.file, `stored entry ${JSON.stringify(name)} has ${e.compressedSize} bytes, the directory says ${e.size} (damaged archive)`);
  zip.source.readInto(start, into);
  checkCrc(zip, e, into);
}

/**
 * Checks every entry's CRC-32, so damage anywhere in the archive's data is reported, not only in
 * the entries a reader goes on to use.
 */
export function verifyZip(zip: ZipArchive): void {
  for (const name of zip.entries.keys()) readZipEntry(zip, name);
}
