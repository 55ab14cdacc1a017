/**
 * Training images from a folder: found with fast-glob (jpg/jpeg/png/webp, any case), EXIF
 * orientation applied, resized so the short side equals the resolution, cropped (centre or a
 * given offset), optionally mirrored, as RGB in [-1, 1] (diffusers' training transforms).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import fg from 'fast-glob';
import sharp from 'sharp';
import { selectBucket, type Bucket } from '../core/training/buckets.js';
import { PainterError } from '../errors.js';
import { isMaskFile, maskFileFor, readMask } from './training-masks.js';

export const IMAGE_EXTENSIONS = ['jpg', 'jpeg', 'png', 'webp'];

/**
 * Text files that sit beside training images — captions (A1111's .txt, kohya's .caption; read
 * by `captionFor`), notes, READMEs, metadata — not reported as stray files.
 */
const SIDE_FILE_EXTENSIONS = ['txt', 'caption', 'md', 'json', 'yaml', 'yml', 'csv'];

export interface FolderScan {
  images: string[];
  /** Other files that are not images by extension (skipped with a note). */
  ignored: string[];
}

/**
 * The images of a folder, in name order; `recursive` false reads only the folder's own files
 * (not its subfolders), as for the current folder when no folder is named.
 */
export function scanImageFolder(dir: string, what = 'training images', recursive = true): FolderScan {
  if (!fs.existsSync(dir)) throw new PainterError(`${dir}: folder not found; give the folder that holds the ${what}`);
  if (!fs.statSync(dir).isDirectory()) throw new PainterError(`${dir}: not a folder; give the folder that holds the ${what}`);
  const files = fg.sync('**/*', { cwd: dir, onlyFiles: true, dot: false, followSymbolicLinks: true, deep: recursive ? Infinity : 1 }).sort();
  const images: string[] = [];
  const ignored: string[] = [];
  for (const f of files) {
    const ext = path.extname(f).slice(1).toLowerCase();
    // A loss mask (NAME.mask.png) belongs to its photo; it is no training image of its own.
    if (IMAGE_EXTENSIONS.includes(ext) && !isMaskFile(f)) images.push(path.join(dir, f));
    else if (IMAGE_EXTENSIONS.includes(ext)) continue;
    else if (!SIDE_FILE_EXTENSIONS.includes(ext)) ignored.push(path.join(dir, f));
  }
  return { images, ignored };
}

export interface SourceImage {
  file: string;
  /** Size after EXIF rotation and resizing so the short side equals the resolution. */
  width: number;
  height: number;
  /** RGB bytes of the resized image, HWC. */
  rgb: Buffer;
  /** The image's caption file (`captionFor`), if it has one. */
  caption?: string;
  /** Its loss mask at the same size, one byte per pixel (training-masks.ts), if it has one. */
  mask?: Uint8Array;
  /** Its aspect-ratio bucket [width, height] (--buckets): crops are this size instead of square. */
  bucket?: Bucket;
  /** The concept it belongs to, an index into a concept dataset's concepts (concept-dataset.ts). */
  concept?: number;
  /** How often it appears per epoch (its concept's repeats; default 1). */
  repeats?: number;
}

/** The crop size of an image: its bucket, else resolution × resolution. */
export function cropSize(img: Pick<SourceImage, 'bucket'>, resolution: number): Bucket {
  return img.bucket ?? [resolution, resolution];
}

export interface ReadImageOptions {
  /** Take the loss mask from the image's alpha channel (--alpha-mask) rather than a NAME.mask.png beside it. */
  alphaMask?: boolean;
  /** Aspect-ratio buckets: the image is resized to cover the one nearest its aspect ratio. */
  buckets?: readonly Bucket[];
  /** Caption file extensions looked for, without the dot (default CAPTION_EXTENSIONS). */
  captionExtensions?: readonly string[];
}

/** Caption files beside an image, in the order looked for: AUTOMATIC1111's .txt, kohya's .caption. */
export const CAPTION_EXTENSIONS = ['txt', 'caption'];

/**
 * The caption of a training image: the text of `<name>.txt` (or `<name>.caption`) beside it,
 * whitespace collapsed; undefined when there is none or it is empty.
 */
export function captionFor(imageFile: string, extensions: readonly string[] = CAPTION_EXTENSIONS): string | undefined {
  const stem = imageFile.slice(0, imageFile.length - path.extname(imageFile).length);
  for (const ext of extensions) {
    const file = `${stem}.${ext}`;
    if (!fs.existsSync(file)) continue;
    const text = fs.readFileSync(file, 'utf8').replace(/\s+/g, ' ').trim();
    return text === '' ? undefined : text;
  }
  return undefined;
}

/**
 * Decodes one image, applying EXIF orientation, dropping alpha and resizing so its short side is
 * `resolution` (bicubic, like diffusers' Resize). A corrupt or truncated file is an error naming
 * the file.
 */
export async function readSourceImage(file: string, resolution: number, opts: ReadImageOptions = {}): Promise<SourceImage> {
  const image = await readPixels(file, resolution, opts.buckets, opts.captionExtensions);
  const maskFile = opts.alphaMask ? undefined : maskFileFor(file, IMAGE_EXTENSIONS);
  if (!opts.alphaMask && maskFile === undefined) return image;
  return { ...image, mask: await readMask({ image: file, alpha: opts.alphaMask, file: maskFile, width: image.width, height: image.height }) };
}

async function readPixels(file: string, resolution: number, buckets?: readonly Bucket[], captionExtensions?: readonly string[]): Promise<SourceImage> {
  try {
    let bucket: Bucket | undefined;
    if (buckets) {
      const meta = await sharp(file).metadata();
      // EXIF orientations 5–8 turn the picture a quarter.
      const [w, h] = (meta.orientation ?? 1) >= 5 ? [meta.height!, meta.width!] : [meta.width!, meta.height!];
      bucket = selectBucket(buckets, w, h);
    }
    const [tw, th] = bucket ?? [resolution, resolution];
    const { data, info } = await sharp(file, { failOn: 'truncated' })
      .rotate()
      .removeAlpha()
      .toColourspace('srgb')
      .resize({ width: tw, height: th, fit: 'outside', kernel: 'cubic' })
      .raw()
      .toBuffer({ resolveWithObject: true });
    if (info.channels !== 3) throw new Error(`unexpected ${info.channels} channels`);
    const caption = captionFor(file, captionExtensions);
    return { file, width: info.width, height: info.height, rgb: data, ...(caption !== undefined && { caption }), ...(bucket && { bucket }) };
  } catch (e) {
    throw new PainterError(`${file}: cannot read this image (${(e as Error).message.split('\n')[0]}); remove or replace it, or pass --skip-bad-images`);
  }
}

/** Crop offsets for a view: the centre of the image's crop size (cropSize). */
export function centreCrop(img: SourceImage, resolution: number): { left: number; top: number } {
  const [cw, ch] = cropSize(img, resolution);
  return { left: Math.floor((img.width - cw) / 2), top: Math.floor((img.height - ch) / 2) };
}

/** A crop of the image's crop size (square, or its bucket) as float RGB in [-1, 1], HWC; mirrored left-right when `flip`. */
export function cropToTensorData(img: SourceImage, resolution: number, left: number, top: number, flip: boolean): Float32Array {
  const [cw, ch] = cropSize(img, resolution);
  const out = new Float32Array(cw * ch * 3);
  for (let y = 0; y < ch; y++) {
    for (let x = 0; x < cw; x++) {
      const sx = flip ? left + cw - 1 - x : left + x;
      const src = ((top + y) * img.width + sx) * 3;
      const dst = (y * cw + x) * 3;
      for (let c = 0; c < 3; c++) out[dst + c] = img.rgb[src + c]! / 127.5 - 1;
    }
  }
  return out;
}

export interface ReadFolderOptions {
  /** Skip unreadable images with a warning instead of stopping (--skip-bad-images). */
  skipBad: boolean;
  warn: (message: string) => void;
  /** What the folder holds, for messages ("training images", "class images"). */
  what?: string;
  /** Read at most this many usable images (the first by name). */
  limit?: number;
  alphaMask?: boolean;
  buckets?: readonly Bucket[];
  /** Read subfolders too (default). */
  recursive?: boolean;
  captionExtensions?: readonly string[];
}

/**
 * Reads a folder's images at `resolution`: files that are not images are noted, an unreadable
 * image is an error naming it, or a warning with `skipBad`.
 */
export async function readImageFolder(dir: string, resolution: number, o: ReadFolderOptions): Promise<SourceImage[]> {
  const scan = scanImageFolder(dir, o.what, o.recursive ?? true);
  // Caption files of another extension (a dataset's caption_extension) are no stray files either.
  const captions = o.captionExtensions ?? [];
  for (const f of scan.ignored) if (!captions.includes(path.extname(f).slice(1))) o.warn(`skipping ${f}: not an image (painter reads .jpg, .jpeg, .png, .webp)`);
  const images: SourceImage[] = [];
  for (const file of scan.images) {
    if (images.length >= (o.limit ?? Infinity)) break;
    try {
      images.push(await readSourceImage(file, resolution, { alphaMask: o.alphaMask, buckets: o.buckets, captionExtensions: o.captionExtensions }));
    } catch (e) {
      if (!o.skipBad || !(e instanceof PainterError)) throw e;
      o.warn(`skipping ${e.message.replace(/; remove or replace it.*$/, '')}`);
    }
  }
  return images;
}
