/**
 * What `painter edit` reads: the picture (EXIF-rotated, alpha dropped, its sides brought to
 * multiples of the model's latent factor), the mask (any image, blurred if asked, binarised at
 * 50%), an outpainting margin, and a file of random draws for exact reproduction.
 */
import sharp from 'sharp';
import { PainterError, UsageError } from '../errors.js';
import type { EditDraws } from '../core/pipeline/edit.js';
import { closeSafetensors, openSafetensors, readTensor } from './safetensors.js';

export interface EditImage {
  width: number;
  height: number;
  /** RGB row-major HWC in [−1, 1], as diffusers' VaeImageProcessor.preprocess. */
  pixels: Float32Array;
  /** 1 = repaint, 0 = keep (width × height), when a mask or an outpainting margin was given. */
  mask?: Float32Array;
  /** Said to the user: a resize to fit the latent grid. */
  notes: string[];
}

export interface Margin {
  left: number;
  top: number;
  right: number;
  bottom: number;
}

/** "L,T,R,B" pixels (non-negative integers, not all zero). */
export function parseOutpaint(text: string): Margin {
  const parts = text.split(',').map((p) => p.trim());
  const values = parts.map(Number);
  if (parts.length !== 4 || values.some((v, i) => parts[i] === '' || !Number.isInteger(v) || v < 0) || values.every((v) => v === 0)) {
    throw new UsageError(`--outpaint ${text}: give four pixel counts LEFT,TOP,RIGHT,BOTTOM (non-negative integers, not all 0), e.g. 0,0,64,0`);
  }
  const [left, top, right, bottom] = values as [number, number, number, number];
  return { left, top, right, bottom };
}

/** The largest multiple of `step` not above `n` (at least `step`). */
function floorTo(n: number, step: number): number {
  return Math.max(step, Math.floor(n / step) * step);
}

async function decode(file: string, what: string, pipeline: (s: sharp.Sharp) => sharp.Sharp): Promise<{ data: Buffer; info: sharp.OutputInfo }> {
  try {
    return await pipeline(sharp(file, { failOn: 'truncated' }).rotate()).raw().toBuffer({ resolveWithObject: true });
  } catch (e) {
    throw new PainterError(`${what} ${file}: cannot read this image (${(e as Error).message.split('\n')[0]}); give a jpg, png or webp file`);
  }
}

/** The picture's size as it is displayed (EXIF orientations 5–8 swap the sides), from its header. */
async function orientedSize(file: string): Promise<{ width: number; height: number }> {
  let m: sharp.Metadata;
  try {
    m = await sharp(file).metadata();
    if (!m.width || !m.height) throw new Error('no image size in the file');
  } catch (e) {
    throw new PainterError(`IMAGE ${file}: cannot read this image (${(e as Error).message.split('\n')[0]}); give a jpg, png or webp file`);
  }
  return (m.orientation ?? 1) >= 5 ? { width: m.height, height: m.width } : { width: m.width, height: m.height };
}

/**
 * The picture and its mask at a size the model takes: each side rounded down to a multiple of
 * `factor` (said in `notes`), the mask resized to the picture, both padded by the outpainting
 * margin (the picture's edge pixels repeated, the mask white there).
 */
export async function readEditImage(file: string, factor: number, opts: { mask?: string; maskBlur?: number; outpaint?: Margin } = {}): Promise<EditImage> {
  const shown = await orientedSize(file);
  const notes: string[] = [];
  const m = opts.outpaint ?? { left: 0, top: 0, right: 0, bottom: 0 };
  // The padded canvas must be a multiple of the factor: the picture takes what the margin leaves.
  const width = floorTo(shown.width + m.left + m.right, factor) - m.left - m.right;
  const height = floorTo(shown.height + m.top + m.bottom, factor) - m.top - m.bottom;
  if (width < 1 || height < 1) throw new UsageError(`--outpaint: the margin leaves no room for ${file} at multiples of ${factor} px; use a smaller margin`);
  if (width !== shown.width || height !== shown.height) {
    notes.push(`${file} is ${shown.width}×${shown.height}; resized to ${width}×${height} so the ${m.left + m.right + m.top + m.bottom > 0 ? 'extended canvas' : 'picture'} is a multiple of the model's ${factor} px latent cell`);
  }
  const resized = await decode(file, 'IMAGE', (s) =>
    s
      .removeAlpha()
      .toColourspace('srgb')
      .resize({ width, height, fit: 'fill', kernel: 'cubic' })
      .extend({ ...m, extendWith: 'copy' }),
  );
  const W = width + m.left + m.right;
  const H = height + m.top + m.bottom;
  const pixels = Float32Array.from(resized.data, (v) => (2 * v) / 255 - 1);
  if (opts.mask === undefined && !opts.outpaint) return { width: W, height: H, pixels, notes };
  const mask = new Float32Array(W * H);
  if (opts.mask !== undefined) {
    const blur = opts.maskBlur ?? 0;
    const g = await decode(opts.mask, '--mask', (s) => {
      let out = s.removeAlpha().greyscale().resize({ width, height, fit: 'fill' });
      // PIL's GaussianBlur(radius) as diffusers' mask_processor.blur: the radius is the σ.
      if (blur > 0) out = out.blur(Math.max(0.3, blur));
      return out.extend({ ...m, background: { r: 255, g: 255, b: 255 } }).toColourspace('b-w');
    });
    if (g.info.channels !== 1) throw new PainterError(`--mask ${opts.mask}: read ${g.info.channels} channels after greyscale conversion; give a plain image`);
    for (let i = 0; i < mask.length; i++) mask[i] = g.data[i]! >= 128 ? 1 : 0;
  } else {
    for (let y = 0; y < H; y++) for (let x = 0; x < W; x++) mask[y * W + x] = x < m.left || x >= m.left + width || y < m.top || y >= m.top + height ? 1 : 0;
  }
  if (mask.every((v) => v === 0)) throw new PainterError(`--mask ${opts.mask}: the mask is black everywhere, so nothing would be repainted; paint white where the picture should change`);
  return { width: W, height: H, pixels, mask, notes };
}

const DRAW_KEYS = { posterior: 'posterior', noise: 'noise', posterior_masked: 'posteriorMasked', step_noise: 'stepNoise' } as const;

/** Random draws from a safetensors file (keys posterior, noise, posterior_masked, step_noise; NCHW). */
export function readNoiseFile(file: string): EditDraws {
  let f;
  try {
    f = openSafetensors(file);
  } catch (e) {
    throw e instanceof PainterError ? new PainterError(`--noise ${e.message}`) : e;
  }
  try {
    const draws: EditDraws = {};
    for (const name of f.entries.keys()) {
      const key = DRAW_KEYS[name as keyof typeof DRAW_KEYS];
      if (!key) throw new PainterError(`--noise ${file}: unknown tensor "${name}"; the keys are ${Object.keys(DRAW_KEYS).join(', ')}`);
      const t = readTensor(f, name);
      if (t.dtype === 'I32' || t.dtype === 'I64') throw new PainterError(`--noise ${file}: tensor "${name}" holds integers; expected floats`);
      draws[key] = t.data;
    }
    return draws;
  } finally {
    closeSafetensors(f);
  }
}
