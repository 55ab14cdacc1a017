/** A PNG grid of same-sized RGB images (row-major HWC bytes), left to right, top to bottom. */
import sharp from 'sharp';

export async function imageGrid(tiles: readonly Uint8Array[], width: number, height: number, cols: number): Promise<Buffer> {
  const c = Math.max(1, Math.min(cols, tiles.length));
  const rows = Math.max(1, Math.ceil(tiles.length / c));
  return sharp({ create: { width: c * width, height: rows * height, channels: 3, background: '#000' } })
    .composite(
      tiles.map((t, i) => ({
        input: Buffer.from(t.buffer, t.byteOffset, t.byteLength),
        raw: { width, height, channels: 3 as const },
        left: (i % c) * width,
        top: Math.floor(i / c) * height,
      })),
    )
    .png()
    .toBuffer();
}
