/**
 * Loss masks of subject photos (masked loss: `NAME.mask.png` beside `NAME.png`, white = learn):
 * the whole subject — body, outline, details and accessories — white, its background black.
 */
import * as fs from 'node:fs';
import sharp from 'sharp';
import { renderScene } from './render.js';
import { COLOUR_RGB, type Scene } from './world.js';

/**
 * The subject's coverage, one byte per pixel (255 = all subject), found by rendering the scene on
 * a white and on a black background: a pixel the subject covers by c shows
 * c·subject + (1 − c)·background, so the two renders differ by (1 − c)·(white − black) — exact
 * coverage, antialiased edges included, with no second description of the figure to keep in step.
 */
export async function subjectMask(scene: Scene, size: number): Promise<Uint8Array> {
  const onWhite = await renderScene({ ...scene, background: { kind: 'solid', colour: 'white', colour2: null } }, size);
  const onBlack = await renderScene({ ...scene, background: { kind: 'solid', colour: 'black', colour2: null } }, size);
  const spread = COLOUR_RGB.white.map((w, c) => w - COLOUR_RGB.black[c]!);
  const mask = new Uint8Array(size * size);
  for (let i = 0; i < mask.length; i++) {
    let uncovered = 0;
    for (let c = 0; c < 3; c++) uncovered += (onWhite[i * 3 + c]! - onBlack[i * 3 + c]!) / spread[c]! / 3;
    mask[i] = Math.round(255 * Math.min(1, Math.max(0, 1 - uncovered)));
  }
  return mask;
}

/** Writes each image's mask beside it (`photo-1.png` → `photo-1.mask.png`), in the order of `scenes`. */
export async function writeSubjectMasks(images: readonly string[], scenes: readonly Scene[], size: number): Promise<Uint8Array[]> {
  const masks: Uint8Array[] = [];
  for (const [i, file] of images.entries()) {
    const mask = await subjectMask(scenes[i]!, size);
    fs.writeFileSync(file.replace(/\.png$/, '.mask.png'), await sharp(mask, { raw: { width: size, height: size, channels: 1 } }).png({ compressionLevel: 9 }).toBuffer());
    masks.push(mask);
  }
  return masks;
}
