/**
 * The figures of painter-mini's world, drawn in a local 100×100 frame, facing right. Each kind
 * has a silhouette (SVG elements with no fill or stroke of their own, so one `<use>` can paint
 * them in the object colour, another in the pattern, a third as the outline), details drawn on
 * top (eyes, windows, wheels), anchors where accessories sit, and the body's centre.
 *
 * Bold silhouettes that differ at 32×32: the cat sits upright with pointed ears and a raised
 * tail, the dog stands on four legs with a long snout and a floppy ear, the bird has a beak and
 * a fanned tail, the fish a forked tail fin.
 */
import type { FeatureKind, ObjectKind } from './world.js';

export interface Anchor {
  x: number;
  y: number;
  /** Width of the part the accessory wraps or sits on. */
  w: number;
  /** Rotation in degrees (a collar follows the neck). */
  angle: number;
}

export interface DetailColours {
  /** Darker shade of the object colour (doors, trunks, wings). */
  shade: string;
  /** Lighter tint (windows, highlights). */
  light: string;
  /** Eyes and noses: near black, or near white on dark objects. */
  ink: string;
}

export interface Figure {
  silhouette: string;
  details: (c: DetailColours) => string;
  /** Top of the head (hats, bows, crowns sit here). */
  head: Anchor;
  /** Where a collar goes. */
  neck: Anchor;
  /** A point in the middle of the body: patterns are phased to leave it in the object colour. */
  centre: readonly [number, number];
}

const eye = (x: number, y: number, r: number, ink: string): string => `<circle cx="${x}" cy="${y}" r="${r}" fill="${ink}"/>`;

export const FIGURES: Readonly<Record<ObjectKind, Figure>> = {
  cat: {
    silhouette: [
      '<path d="M30 93 C20 93 20 72 28 60 C34 50 42 44 52 44 C63 45 69 57 71 70 C73 83 69 93 61 93 Z"/>',
      '<circle cx="54" cy="30" r="17"/>',
      '<path d="M38 26 L39 3 L54 15 Z"/>',
      '<path d="M55 15 L70 3 L71 26 Z"/>',
      '<path d="M62 93 C88 95 96 72 88 52 L80 55 C86 71 81 85 62 85 Z"/>',
    ].join(''),
    details: (c) =>
      [
        `<path d="M41 20 L41 9 L49 15 Z" fill="${c.shade}"/>`,
        `<path d="M60 15 L68 9 L68 20 Z" fill="${c.shade}"/>`,
        eye(47, 28, 2.6, c.ink),
        eye(61, 28, 2.6, c.ink),
        `<path d="M51 34 L57 34 L54 37.5 Z" fill="${c.ink}"/>`,
        `<path d="M45 36 L33 34 M45 38 L33 40 M63 36 L75 34 M63 38 L75 40" stroke="${c.ink}" stroke-width="1" fill="none"/>`,
        `<path d="M45 93 L45 82 M57 93 L57 82" stroke="${c.shade}" stroke-width="1.6" fill="none"/>`,
      ].join(''),
    head: { x: 54, y: 14, w: 24, angle: 0 },
    neck: { x: 54, y: 46, w: 26, angle: 0 },
    centre: [46, 72],
  },
  dog: {
    silhouette: [
      '<rect x="16" y="42" width="56" height="25" rx="12"/>',
      '<rect x="20" y="58" width="9" height="33" rx="3"/>',
      '<rect x="32" y="58" width="9" height="33" rx="3"/>',
      '<rect x="52" y="58" width="9" height="33" rx="3"/>',
      '<rect x="63" y="58" width="9" height="33" rx="3"/>',
      '<path d="M56 50 L66 28 L82 34 L74 56 Z"/>',
      '<circle cx="75" cy="29" r="13"/>',
      '<rect x="78" y="27" width="20" height="15" rx="6"/>',
      '<path d="M66 20 C56 22 56 44 62 50 C69 49 72 32 71 20 Z"/>',
      '<path d="M20 50 C10 42 6 30 9 18 L16 19 C14 30 18 39 26 45 Z"/>',
    ].join(''),
    details: (c) =>
      [
        `<path d="M66 20 C56 22 56 44 62 50 C69 49 72 32 71 20 Z" fill="${c.shade}"/>`,
        eye(78, 25, 2.6, c.ink),
        eye(96, 30.5, 3.6, c.ink),
        `<path d="M84 39 L96 38" stroke="${c.ink}" stroke-width="1.2" fill="none"/>`,
      ].join(''),
    head: { x: 75, y: 16, w: 22, angle: 0 },
    neck: { x: 69, y: 44, w: 21, angle: 22 },
    centre: [44, 54],
  },
  bird: {
    silhouette: [
      '<ellipse cx="46" cy="57" rx="29" ry="21"/>',
      '<circle cx="71" cy="36" r="14"/>',
      '<path d="M24 50 L2 36 L7 53 L2 70 L24 64 Z"/>',
    ].join(''),
    details: (c) =>
      [
        `<path d="M83 31 L98 37 L83 43 Z" fill="${c.ink}"/>`,
        eye(74, 32, 2.8, c.ink),
        `<path d="M28 52 C38 38 58 42 62 56 C54 68 38 68 28 52 Z" fill="none" stroke="${c.shade}" stroke-width="2.4"/>`,
        `<path d="M40 76 L40 93 L34 96 M40 93 L46 96 M54 76 L54 93 L48 96 M54 93 L60 96" stroke="${c.ink}" stroke-width="2.2" fill="none"/>`,
      ].join(''),
    head: { x: 71, y: 22, w: 18, angle: 0 },
    neck: { x: 64, y: 48, w: 16, angle: 55 },
    centre: [46, 58],
  },
  fish: {
    silhouette: [
      '<path d="M18 50 C34 25 70 22 94 50 C70 78 34 75 18 50 Z"/>',
      '<path d="M24 50 L3 28 L10 50 L3 72 Z"/>',
      '<path d="M40 33 C46 16 62 14 70 30 Z"/>',
      '<path d="M46 68 C50 80 60 82 64 70 Z"/>',
    ].join(''),
    details: (c) =>
      [
        `<circle cx="79" cy="45" r="5" fill="${c.light}"/>`,
        eye(80, 45, 2.8, c.ink),
        `<path d="M68 36 C73 44 73 56 68 64" stroke="${c.shade}" stroke-width="2" fill="none"/>`,
        `<path d="M88 55 L93 53" stroke="${c.ink}" stroke-width="1.2" fill="none"/>`,
      ].join(''),
    head: { x: 74, y: 31, w: 16, angle: 0 },
    neck: { x: 64, y: 50, w: 26, angle: 90 },
    centre: [50, 50],
  },
  house: {
    silhouette: [
      '<rect x="18" y="44" width="64" height="48"/>',
      '<path d="M8 50 L50 12 L92 50 Z"/>',
      '<rect x="63" y="16" width="11" height="22"/>',
    ].join(''),
    details: (c) =>
      [
        `<rect x="43" y="64" width="14" height="28" fill="${c.shade}"/>`,
        `<rect x="24" y="53" width="14" height="13" fill="${c.light}" stroke="${c.shade}" stroke-width="1.5"/>`,
        `<rect x="62" y="53" width="14" height="13" fill="${c.light}" stroke="${c.shade}" stroke-width="1.5"/>`,
        `<path d="M8 50 L50 12 L92 50" stroke="${c.shade}" stroke-width="2.5" fill="none"/>`,
      ].join(''),
    head: { x: 50, y: 13, w: 20, angle: 0 },
    neck: { x: 50, y: 48, w: 68, angle: 0 },
    centre: [31, 78],
  },
  tree: {
    silhouette: [
      '<rect x="43" y="50" width="14" height="44"/>',
      '<circle cx="50" cy="27" r="21"/>',
      '<circle cx="30" cy="38" r="16"/>',
      '<circle cx="70" cy="38" r="16"/>',
      '<circle cx="37" cy="55" r="14"/>',
      '<circle cx="63" cy="55" r="14"/>',
      '<circle cx="50" cy="46" r="18"/>',
    ].join(''),
    details: (c) =>
      [
        `<rect x="43" y="68" width="14" height="26" fill="${c.shade}"/>`,
        `<path d="M38 94 L43 88 M62 94 L57 88" stroke="${c.shade}" stroke-width="3" fill="none"/>`,
      ].join(''),
    head: { x: 50, y: 7, w: 22, angle: 0 },
    neck: { x: 50, y: 80, w: 16, angle: 0 },
    centre: [50, 34],
  },
  car: {
    silhouette: [
      '<path d="M5 68 L5 54 C5 49 9 46 15 46 L27 46 L37 28 L69 28 L81 46 L89 47 C94 48 96 53 96 58 L96 68 Z"/>',
    ].join(''),
    details: (c) =>
      [
        `<path d="M31 46 L40 33 L52 33 L52 46 Z" fill="${c.light}"/>`,
        `<path d="M56 33 L67 33 L76 46 L56 46 Z" fill="${c.light}"/>`,
        `<circle cx="26" cy="69" r="11" fill="#222"/>`,
        `<circle cx="26" cy="69" r="4.5" fill="#bbb"/>`,
        `<circle cx="75" cy="69" r="11" fill="#222"/>`,
        `<circle cx="75" cy="69" r="4.5" fill="#bbb"/>`,
        `<rect x="90" y="51" width="6" height="5" rx="1.5" fill="#fff3a0"/>`,
      ].join(''),
    head: { x: 53, y: 28, w: 28, angle: 0 },
    neck: { x: 54, y: 52, w: 84, angle: 0 },
    centre: [46, 56],
  },
  flower: {
    silhouette: [
      ...[0, 60, 120, 180, 240, 300].map((a) => {
        const r = (a - 90) * (Math.PI / 180);
        return `<circle cx="${(50 + 15 * Math.cos(r)).toFixed(2)}" cy="${(34 + 15 * Math.sin(r)).toFixed(2)}" r="12.5"/>`;
      }),
      '<rect x="47" y="50" width="6" height="45"/>',
      '<path d="M50 78 C58 64 72 64 76 68 C70 78 58 82 50 78 Z"/>',
      '<path d="M50 86 C42 72 28 72 24 76 C30 86 42 90 50 86 Z"/>',
    ].join(''),
    details: (c) =>
      [
        `<rect x="47" y="50" width="6" height="45" fill="${c.shade}"/>`,
        `<path d="M50 78 C58 64 72 64 76 68 C70 78 58 82 50 78 Z" fill="${c.shade}"/>`,
        `<path d="M50 86 C42 72 28 72 24 76 C30 86 42 90 50 86 Z" fill="${c.shade}"/>`,
        `<circle cx="50" cy="34" r="7.5" fill="${c.shade}"/>`,
      ].join(''),
    head: { x: 50, y: 8, w: 20, angle: 0 },
    neck: { x: 50, y: 58, w: 10, angle: 0 },
    centre: [50, 19],
  },
  cup: {
    silhouette: [
      '<path d="M18 32 L72 32 L68 84 C67 89 63 92 58 92 L32 92 C27 92 23 89 22 84 Z"/>',
      '<path d="M69 40 C94 37 96 76 66 76 L67 67 C85 67 85 48 69 49 Z"/>',
    ].join(''),
    details: (c) =>
      [
        `<ellipse cx="45" cy="32" rx="27" ry="4" fill="${c.shade}"/>`,
        `<path d="M34 24 C30 18 38 14 34 6 M46 24 C42 18 50 14 46 6 M58 24 C54 18 62 14 58 6" stroke="#9a9a9a" stroke-width="2.2" fill="none"/>`,
      ].join(''),
    head: { x: 45, y: 29, w: 30, angle: 0 },
    neck: { x: 45, y: 58, w: 50, angle: 0 },
    centre: [45, 60],
  },
  star: {
    silhouette: '<path d="M50 4 L61.5 38 L97 38 L68 59 L79 94 L50 72 L21 94 L32 59 L3 38 L38.5 38 Z"/>',
    details: () => '',
    head: { x: 50, y: 6, w: 14, angle: 0 },
    neck: { x: 50, y: 60, w: 40, angle: 0 },
    centre: [50, 52],
  },
};

/** Height an accessory reaches above its head anchor, in local units (for the layout to fit it). */
export function featureRise(kind: FeatureKind, head: Anchor): number {
  switch (kind) {
    case 'hat':
      return head.w * 1.35 + 3;
    case 'crown':
      return head.w * 0.6;
    case 'bow':
      return head.w * 0.45;
    case 'collar':
      return 0;
  }
}

/** An accessory in local coordinates, filled with `fill` and outlined with `edge`. */
export function drawFeature(kind: FeatureKind, f: Figure, fill: string, edge: string): string {
  const stroke = `stroke="${edge}" stroke-width="1.5" stroke-linejoin="round"`;
  switch (kind) {
    case 'collar': {
      const { x, y, w, angle } = f.neck;
      return (
        `<g transform="translate(${x} ${y}) rotate(${angle})">` +
        `<rect x="${-w / 2 - 1}" y="-4.5" width="${w + 2}" height="9" rx="3" fill="${fill}" ${stroke}/>` +
        `<circle cx="0" cy="7" r="4" fill="#f0c419" stroke="${edge}" stroke-width="1"/></g>`
      );
    }
    case 'hat': {
      const { x, y, w } = f.head;
      const h = w * 1.35;
      return (
        `<path d="M${x - w / 2} ${y + 2} L${x} ${y + 2 - h} L${x + w / 2} ${y + 2} Z" fill="${fill}" ${stroke}/>` +
        `<circle cx="${x}" cy="${y + 1 - h}" r="3.5" fill="#ffffff" ${stroke}/>`
      );
    }
    case 'bow': {
      const { x, y, w } = f.head;
      const s = w * 0.45;
      const cx = x + w * 0.1;
      return (
        `<path d="M${cx} ${y} L${cx - 2 * s} ${y - s} L${cx - 2 * s} ${y + s} Z M${cx} ${y} L${cx + 2 * s} ${y - s} L${cx + 2 * s} ${y + s} Z" fill="${fill}" ${stroke}/>` +
        `<circle cx="${cx}" cy="${y}" r="${s * 0.45}" fill="${fill}" ${stroke}/>`
      );
    }
    case 'crown': {
      const { x, y, w } = f.head;
      const h = w * 0.6;
      const l = x - w / 2;
      const pts = [
        [l, y + 2],
        [l, y - h],
        [l + w * 0.25, y - h * 0.45],
        [x, y - h],
        [l + w * 0.75, y - h * 0.45],
        [l + w, y - h],
        [l + w, y + 2],
      ];
      return `<path d="M${pts.map(([px, py]) => `${px} ${py}`).join(' L')} Z" fill="${fill}" ${stroke}/>`;
    }
  }
}
