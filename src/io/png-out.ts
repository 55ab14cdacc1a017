/**
 * Writes generated images as PNG with their parameters in a text chunk. Names follow
 * AUTOMATIC1111 (`00012-1234.png`: a running number, then the seed); an existing file is
 * never overwritten, and a file appears only complete (temp file + hard link).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import sharp from 'sharp';
import { addPngText } from './png-text.js';

export async function encodePng(pixels: Uint8Array, width: number, height: number, text: Record<string, string>): Promise<Buffer> {
  const png = await sharp(Buffer.from(pixels.buffer, pixels.byteOffset, pixels.byteLength), { raw: { width, height, channels: 3 } })
    .png({ compressionLevel: 6 })
    .toBuffer();
  return addPngText(png, text);
}

function nextIndex(dir: string): number {
  let max = -1;
  for (const f of fs.existsSync(dir) ? fs.readdirSync(dir) : []) {
    const m = /^(\d{5,})-/.exec(f);
    if (m) max = Math.max(max, Number(m[1]));
  }
  return max + 1;
}

/** Writes `data` as the next free `NNNNN-<suffix>.png` in `dir`; returns the path. */
export function writeNewPng(dir: string, suffix: string, data: Buffer): string {
  fs.mkdirSync(dir, { recursive: true });
  const tmp = path.join(dir, `.painter-${process.pid}-${Date.now()}.png.tmp`);
  fs.writeFileSync(tmp, data);
  try {
    for (let index = nextIndex(dir); ; index++) {
      const target = path.join(dir, `${String(index).padStart(5, '0')}-${suffix}.png`);
      try {
        fs.linkSync(tmp, target); // fails if the name exists: never overwrites
        return target;
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
      }
    }
  } finally {
    fs.rmSync(tmp, { force: true });
  }
}
