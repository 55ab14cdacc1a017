/**
 * A contact sheet of world scenes for a person to look at: each tile shows the scene at 64×64
 * (enlarged 2×) beside the same scene at 32×32 (enlarged 4×), nearest-neighbour so the real
 * pixels show, with its caption underneath.
 */
import sharp from 'sharp';
import { renderScene } from './render.js';
import type { Scene } from './world.js';

export interface SheetEntry {
  scene: Scene;
  caption: string;
}

const SHOW = 128; // display side of each rendering
const GAP = 8;
const TEXT_LINES = 3;
const LINE = 13;
const CHARS_PER_LINE = 44;

function escapeXml(s: string): string {
  return s.replace(/[<>&"']/g, (ch) => ({ '<': '&lt;', '>': '&gt;', '&': '&amp;', '"': '&quot;', "'": '&apos;' })[ch]!);
}

function wrap(text: string, width: number, maxLines: number): string[] {
  const lines: string[] = [];
  let line = '';
  for (const word of text.split(' ')) {
    if (line && line.length + 1 + word.length > width) {
      lines.push(line);
      line = word;
    } else line = line ? `${line} ${word}` : word;
  }
  if (line) lines.push(line);
  return lines.slice(0, maxLines);
}

async function enlarged(scene: Scene, size: number): Promise<Buffer> {
  const raw = await renderScene(scene, size);
  return sharp(raw, { raw: { width: size, height: size, channels: 3 } })
    .resize(SHOW, SHOW, { kernel: 'nearest' })
    .png()
    .toBuffer();
}

/** PNG bytes of a sheet with `columns` tiles per row. */
export async function contactSheet(entries: readonly SheetEntry[], columns = 4): Promise<Buffer> {
  const tileW = 2 * SHOW + GAP;
  const tileH = SHOW + 4 + TEXT_LINES * LINE;
  const rows = Math.max(1, Math.ceil(entries.length / columns));
  const width = columns * tileW + (columns + 1) * GAP;
  const height = rows * tileH + (rows + 1) * GAP;
  const layers: sharp.OverlayOptions[] = [];
  const text: string[] = [];
  for (let i = 0; i < entries.length; i++) {
    const e = entries[i]!;
    const left = GAP + (i % columns) * (tileW + GAP);
    const top = GAP + Math.floor(i / columns) * (tileH + GAP);
    layers.push({ input: await enlarged(e.scene, 64), left, top });
    layers.push({ input: await enlarged(e.scene, 32), left: left + SHOW + GAP, top });
    wrap(e.caption, CHARS_PER_LINE, TEXT_LINES).forEach((line, k) => {
      text.push(`<text x="${left}" y="${top + SHOW + 2 + (k + 1) * LINE - 3}">${escapeXml(line)}</text>`);
    });
  }
  const svg = `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}"><g font-family="DejaVu Sans, sans-serif" font-size="11" fill="#222">${text.join('')}</g></svg>`;
  layers.push({ input: Buffer.from(svg), left: 0, top: 0 });
  return sharp({ create: { width, height, channels: 3, background: '#ffffff' } })
    .composite(layers)
    .png()
    .toBuffer();
}
