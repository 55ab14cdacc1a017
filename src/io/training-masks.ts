/**
 * Loss masks for training images (masked loss, as kohya's --masked_loss / --alpha_mask): a
 * grayscale picture beside the photo, `NAME.mask.png` (any image format painter reads; white =
 * learn, black = ignore, grey = in between), or the photo's own alpha channel. The mask is
 * resized exactly as its photo is, so the two line up through every crop and mirror.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import sharp from 'sharp';
import { PainterError } from '../errors.js';

/** The infix of a mask file's name: `cat.mask.png` masks `cat.jpg`. */
const MASK_INFIX = '.mask.';

/** Whether a file is a loss mask (and so not a training image of its own). */
export function isMaskFile(file: string): boolean {
  return path.basename(file).toLowerCase().includes(MASK_INFIX);
}

/** The mask file beside an image, if there is one (`NAME.mask.png`, `.jpg`, `.jpeg` or `.webp`). */
export function maskFileFor(imageFile: string, extensions: readonly string[]): string | undefined {
  const stem = imageFile.slice(0, imageFile.length - path.extname(imageFile).length);
  for (const ext of extensions) {
    for (const e of [ext, ext.toUpperCase()]) {
      const file = `${stem}${MASK_INFIX}${e}`;
      if (fs.existsSync(file)) return file;
    }
  }
  return undefined;
}

export interface MaskRequest {
  /** The photo the mask belongs to, for messages. */
  image: string;
  /** Read the photo's alpha channel (--alpha-mask) instead of a mask file. */
  alpha?: boolean;
  /** The mask file (when not alpha). */
  file?: string;
  /** The photo's size after EXIF rotation and resizing: the mask is brought to it. */
  width: number;
  height: number;
}

/**
 * One byte per pixel (0 = ignore … 255 = learn) at the photo's resized size. A mask that is black
 * everywhere would teach nothing and is refused.
 */
export async function readMask(r: MaskRequest): Promise<Uint8Array> {
  const source = r.alpha ? r.image : r.file!;
  let data: Buffer;
  try {
    const img = sharp(source, { failOn: 'truncated' }).rotate();
    if (r.alpha && !(await sharp(source).metadata()).hasAlpha) {
      throw new PainterError(`${r.image}: --alpha-mask reads the alpha channel, but this image has none; save it as PNG/WebP with transparency, or give it a NAME.mask.png instead`);
    }
    const meta = await sharp(source).metadata();
    // EXIF orientations 5–8 turn the picture a quarter.
    const [mw, mh] = (meta.orientation ?? 1) >= 5 ? [meta.height!, meta.width!] : [meta.width!, meta.height!];
    if (!r.alpha && Math.abs(mw / mh - r.width / r.height) > 0.02 * (r.width / r.height)) {
      throw new PainterError(`${source}: the mask is ${mw}×${mh}, not the shape of ${path.basename(r.image)}; make the mask the photo's size`);
    }
    const resized = img.resize({ width: r.width, height: r.height, fit: 'fill', kernel: 'cubic' });
    data = await (r.alpha ? resized.extractChannel('alpha') : resized.flatten({ background: '#000000' }).toColourspace('b-w')).raw().toBuffer();
  } catch (e) {
    if (e instanceof PainterError) throw e;
    throw new PainterError(`${source}: cannot read this mask (${(e as Error).message.split('\n')[0]}); replace it with a grayscale PNG (white = learn, black = ignore)`);
  }
  if (data.length !== r.width * r.height) throw new PainterError(`${source}: the mask did not come out as one channel of ${r.width}×${r.height}; save it as a grayscale PNG`);
  if (data.every((v) => v === 0)) throw new PainterError(`${source}: the mask is black everywhere, so nothing of ${path.basename(r.image)} would be learnt; paint what to learn white`);
  return new Uint8Array(data);
}
