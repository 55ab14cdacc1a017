/**
 * Scenes of painter-mini's world as pixels: `sceneSvg` writes the SVG (pure), `renderScene`
 * rasterises it with sharp (librsvg) to raw RGB, `renderScenePng` to PNG. The SVG's user space is
 * 0..100 on both axes whatever the pixel size, so one scene renders alike at 32 and at 64.
 *
 * Stripe and dot periods are fixed in image units, not object units, so a small object still
 * shows stripes that survive 32×32 (4 px per stripe period there).
 */
import sharp from 'sharp';
import { drawFeature, featureRise, FIGURES } from './shapes.js';
import { COLOUR_RGB, type ColourName, type Rgb, type Scene, type SizeName } from './world.js';

/** Side of the object's 100-unit frame, as a fraction of the image side. */
export const SIZE_SCALE: Readonly<Record<SizeName, number>> = { small: 0.44, medium: 0.62, large: 0.8 };

const JITTER = 3; // image units (of 100) per unit of scene.jitter
const MARGIN = 2;
const STRIPE_PERIOD = 13; // image units
const STRIPE_DUTY = 1 / 3; // the object colour keeps two thirds of the body
const DOT_PERIOD = 16;
const OUTLINE = 2.2; // visible outline width, image units

export interface ObjectLayout {
  /** Centre of the object's frame, image units (0..100). */
  cx: number;
  cy: number;
  /** Image units per local unit. */
  scale: number;
  mirrored: boolean;
}

/** Where the object's local frame lands in the image; accessories above the head shrink it to fit. */
export function objectLayout(scene: Scene): ObjectLayout {
  const figure = FIGURES[scene.subject.object];
  const rise = Math.max(0, ...scene.subject.features.map((f) => featureRise(f.kind, figure.head) - figure.head.y));
  const extent = 100 + rise; // local units of height to fit
  const side = SIZE_SCALE[scene.size] * 100;
  const scale = side / extent;
  const span = 50 - side / 2 - MARGIN;
  const p = scene.position === 'left' ? -1 : scene.position === 'right' ? 1 : 0;
  const cx = 50 + p * span * 0.9 + scene.jitter.x * JITTER;
  // The frame's centre sits below the image centre by half the rise, so a hat stays in view.
  const cy = 50 + (rise * scale) / 2 + scene.jitter.y * JITTER;
  return { cx, cy, scale, mirrored: scene.facing === 'left' };
}

function hex(c: Rgb): string {
  return '#' + c.map((v) => Math.round(Math.min(255, Math.max(0, v))).toString(16).padStart(2, '0')).join('');
}

function mix(c: Rgb, to: Rgb, t: number): Rgb {
  return [c[0] + (to[0] - c[0]) * t, c[1] + (to[1] - c[1]) * t, c[2] + (to[2] - c[2]) * t];
}

/** Relative luminance, roughly (sRGB weights on gamma values: enough to pick light or dark). */
function luma(c: Rgb): number {
  return (0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2]) / 255;
}

const BLACK: Rgb = [0, 0, 0];
const WHITE: Rgb = [255, 255, 255];

/** A darker shade, or a lighter one for very dark colours, so details stay visible. */
function shade(c: Rgb): Rgb {
  return luma(c) < 0.2 ? mix(c, WHITE, 0.3) : mix(c, BLACK, 0.4);
}

function gradientEnd(c: Rgb): Rgb {
  return luma(c) > 0.7 ? mix(c, BLACK, 0.35) : mix(c, WHITE, 0.55);
}

const rgb = (name: ColourName): Rgb => COLOUR_RGB[name];

function backgroundSvg(scene: Scene): { defs: string; fill: string } {
  const b = scene.background;
  const c = rgb(b.colour);
  switch (b.kind) {
    case 'solid':
      return { defs: '', fill: hex(c) };
    case 'gradient':
      return {
        defs: `<linearGradient id="bg" x1="0" y1="0" x2="0" y2="1"><stop offset="0" stop-color="${hex(c)}"/><stop offset="1" stop-color="${hex(gradientEnd(c))}"/></linearGradient>`,
        fill: 'url(#bg)',
      };
    case 'stripes': {
      const c2 = rgb(b.colour2 ?? 'white');
      return {
        defs:
          `<pattern id="bg" patternUnits="userSpaceOnUse" width="20" height="20" patternTransform="rotate(45)">` +
          `<rect width="20" height="20" fill="${hex(c)}"/><rect width="10" height="20" fill="${hex(c2)}"/></pattern>`,
        fill: 'url(#bg)',
      };
    }
  }
}

/**
 * The object's pattern as an SVG pattern in local units (periods fixed in image units), phased so
 * the body's centre falls between stripes or dots: even a small body keeps its own colour dominant.
 */
function patternDef(scene: Scene, scale: number): string {
  const { object, pattern, patternColour } = scene.subject;
  if (pattern === 'plain' || patternColour === null) return '';
  const pc = hex(rgb(patternColour));
  const [cx, cy] = FIGURES[object].centre;
  if (pattern === 'striped') {
    const p = STRIPE_PERIOD / scale;
    // Tile origin such that cx is mid-gap: the stripe covers [0, duty·p) of each tile.
    const x0 = cx - (p * (1 + STRIPE_DUTY)) / 2;
    return `<pattern id="pat" patternUnits="userSpaceOnUse" x="${f(x0)}" y="0" width="${f(p)}" height="${f(p)}" patternTransform="rotate(15 ${cx} ${cy})"><rect width="${f(p * STRIPE_DUTY)}" height="${f(p)}" fill="${pc}"/></pattern>`;
  }
  const p = DOT_PERIOD / scale;
  const r = p * 0.2;
  // Dots at (p/4, p/4) and (3p/4, 3p/4) of each tile; (3p/4, p/4) is farthest from both.
  return (
    `<pattern id="pat" patternUnits="userSpaceOnUse" x="${f(cx - (3 * p) / 4)}" y="${f(cy - p / 4)}" width="${f(p)}" height="${f(p)}">` +
    `<circle cx="${f(p / 4)}" cy="${f(p / 4)}" r="${f(r)}" fill="${pc}"/><circle cx="${f((3 * p) / 4)}" cy="${f((3 * p) / 4)}" r="${f(r)}" fill="${pc}"/></pattern>`
  );
}

function f(v: number): string {
  return String(Math.round(v * 1000) / 1000);
}

/** The scene as an SVG document of `size`×`size` pixels. */
export function sceneSvg(scene: Scene, size: number): string {
  const s = scene.subject;
  const figure = FIGURES[s.object];
  const layout = objectLayout(scene);
  const colour = rgb(s.colour);
  const outline = luma(colour) < 0.2 ? mix(colour, WHITE, 0.45) : mix(colour, BLACK, 0.6);
  const details = figure.details({
    shade: hex(shade(colour)),
    light: hex(mix(colour, WHITE, 0.65)),
    ink: hex(luma(colour) < 0.3 ? [235, 235, 235] : [20, 20, 20]),
  });
  const bg = backgroundSvg(scene);
  const pat = patternDef(scene, layout.scale);
  const sx = layout.mirrored ? -layout.scale : layout.scale;
  const transform = `translate(${f(layout.cx)} ${f(layout.cy)}) scale(${f(sx)} ${f(layout.scale)}) translate(-50 -50)`;
  const features = s.features.map((ft) => {
    const c = rgb(ft.colour);
    return drawFeature(ft.kind, figure, hex(c), hex(luma(c) < 0.2 ? mix(c, WHITE, 0.45) : mix(c, BLACK, 0.6)));
  });
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${size}" height="${size}" viewBox="0 0 100 100">`,
    `<defs>${bg.defs}${pat}<g id="sil">${figure.silhouette}</g></defs>`,
    `<rect width="100" height="100" fill="${bg.fill}"/>`,
    `<g transform="${transform}">`,
    // Outline under the fill: the fill covers the inner half of the stroke.
    `<use href="#sil" fill="none" stroke="${hex(outline)}" stroke-width="${f((2 * OUTLINE) / layout.scale)}" stroke-linejoin="round"/>`,
    `<use href="#sil" fill="${hex(colour)}"/>`,
    pat ? `<use href="#sil" fill="url(#pat)"/>` : '',
    details,
    ...features,
    `</g></svg>`,
  ].join('');
}

/** The scene as raw RGB bytes, HWC, `size`×`size`. */
export async function renderScene(scene: Scene, size: number): Promise<Buffer> {
  const { data, info } = await sharp(Buffer.from(sceneSvg(scene, size)))
    .removeAlpha()
    .toColourspace('srgb')
    .raw()
    .toBuffer({ resolveWithObject: true });
  if (info.width !== size || info.height !== size || info.channels !== 3) {
    throw new Error(`renderScene: librsvg gave ${info.width}×${info.height}×${info.channels}, expected ${size}×${size}×3`);
  }
  return data;
}

/**
 * Coverage of the object's body, one byte per pixel, 255 fully inside: the silhouette less its
 * outline, details (eyes, windows, wheels) and accessories, i.e. the pixels painted in the
 * object colour or its pattern. Where to read the object's colour.
 */
export async function objectMask(scene: Scene, size: number): Promise<Buffer> {
  const figure = FIGURES[scene.subject.object];
  const l = objectLayout(scene);
  const sx = l.mirrored ? -l.scale : l.scale;
  const black = '#000000';
  const cut = [figure.details({ shade: black, light: black, ink: black }), ...scene.subject.features.map((ft) => drawFeature(ft.kind, figure, black, black))]
    .join('')
    .replace(/(fill|stroke)="#[0-9a-fA-F]+"/g, `$1="${black}"`);
  const svg =
    `<svg xmlns="http://www.w3.org/2000/svg" width="${size}" height="${size}" viewBox="0 0 100 100">` +
    `<rect width="100" height="100" fill="#000"/>` +
    `<g transform="translate(${f(l.cx)} ${f(l.cy)}) scale(${f(sx)} ${f(l.scale)}) translate(-50 -50)"><g fill="#fff">${figure.silhouette}</g>${cut}</g></svg>`;
  const { data, info } = await sharp(Buffer.from(svg)).extractChannel(0).raw().toBuffer({ resolveWithObject: true });
  if (info.width !== size || info.height !== size || info.channels !== 1) throw new Error(`objectMask: unexpected ${info.width}×${info.height}×${info.channels}`);
  return data;
}

/** The scene as a PNG file's bytes. */
export async function renderScenePng(scene: Scene, size: number): Promise<Buffer> {
  const rgbData = await renderScene(scene, size);
  return sharp(rgbData, { raw: { width: size, height: size, channels: 3 } }).png({ compressionLevel: 9 }).toBuffer();
}
