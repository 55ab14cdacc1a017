/** Training images: EXIF orientation, alpha, resizing, crops and flips. */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import sharp from 'sharp';
import { captionFor, centreCrop, cropToTensorData, readSourceImage, scanImageFolder } from '../src/io/dataset.js';
import { inversionPrompt } from '../src/train/textual-inversion.js';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'painter-data-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

describe('training images', () => {
  it('applies EXIF orientation before resizing (a portrait photo stored sideways stays portrait)', async () => {
    // Stored 80 wide × 40 high with orientation 6 (rotate 90° clockwise to display): shown as 40 × 80.
    const file = path.join(tmp, 'sideways.jpg');
    await sharp({ create: { width: 80, height: 40, channels: 3, background: '#f00' } }).jpeg().withMetadata({ orientation: 6 }).toFile(file);
    const img = await readSourceImage(file, 20);
    expect([img.width, img.height]).toEqual([20, 40]);
  });

  it('drops alpha, finds images by extension in any case, and crops/flips exactly', async () => {
    const dir = path.join(tmp, 'folder');
    fs.mkdirSync(path.join(dir, 'sub'), { recursive: true });
    // A left-half-black, right-half-white RGBA PNG.
    const w = 8;
    const h = 4;
    const px = Buffer.alloc(w * h * 4);
    for (let i = 0; i < w * h; i++) {
      const value = i % w < w / 2 ? 0 : 255;
      px.fill(value, i * 4, i * 4 + 3);
      px[i * 4 + 3] = 255;
    }
    await sharp(px, { raw: { width: w, height: h, channels: 4 } }).png().toFile(path.join(dir, 'sub', 'HALF.PNG'));
    fs.writeFileSync(path.join(dir, 'readme.md'), 'not an image');
    fs.writeFileSync(path.join(dir, 'sub', 'HALF.txt'), 'a caption');
    fs.writeFileSync(path.join(dir, 'layers.psd'), 'not an image painter reads');
    const scan = scanImageFolder(dir);
    expect(scan.images.map((f) => path.relative(dir, f))).toEqual([path.join('sub', 'HALF.PNG')]);
    // Captions and notes are expected beside images; anything else is reported.
    expect(scan.ignored.map((f) => path.basename(f))).toEqual(['layers.psd']);
    const img = await readSourceImage(scan.images[0]!, 4);
    expect([img.width, img.height]).toEqual([8, 4]);
    expect(img.caption).toBe('a caption');
    const { left, top } = centreCrop(img, 4);
    expect([left, top]).toEqual([2, 0]);
    const plain = cropToTensorData(img, 4, left, top, false);
    const flipped = cropToTensorData(img, 4, left, top, true);
    // Row 0: two black then two white pixels; mirrored: white first. Values in [-1, 1].
    expect([plain[0], plain[3 * 3]]).toEqual([-1, 1]);
    expect([flipped[0], flipped[3 * 3]]).toEqual([1, -1]);
  });

  it('reads an image\'s caption from <name>.txt, else <name>.caption (whitespace collapsed)', () => {
    const dir = path.join(tmp, 'captions');
    fs.mkdirSync(dir, { recursive: true });
    const img = (name: string) => path.join(dir, name);
    fs.writeFileSync(img('a.txt'), '  blue\n background \n');
    fs.writeFileSync(img('a.caption'), 'ignored: the .txt comes first');
    fs.writeFileSync(img('b.caption'), 'striped background');
    fs.writeFileSync(img('c.txt'), ' \n ');
    expect(captionFor(img('a.png'))).toBe('blue background');
    expect(captionFor(img('b.jpeg'))).toBe('striped background');
    expect(captionFor(img('c.webp'))).toBeUndefined();
    expect(captionFor(img('d.png'))).toBeUndefined();
  });

  it('puts a caption after the Textual Inversion template, as A1111\'s "[name], [filewords]"', () => {
    expect(inversionPrompt('a photo of a {}', '<cat>', 'blue background')).toBe('a photo of a <cat>, blue background');
    expect(inversionPrompt('a rendition of the {}', '<cat>')).toBe('a rendition of the <cat>');
  });
});
