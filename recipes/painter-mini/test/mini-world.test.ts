import * as fs from 'node:fs';
import * as path from 'node:path';
import sharp from 'sharp';
import { describe, expect, it } from 'vitest';
import { Rng } from '../../../src/core/random.js';
import { objectMask, renderScene, renderScenePng, sceneSvg } from '../render.js';
import { photoCaption, QUICK_START_SUBJECT, quickStartScenes } from '../subject-photos.js';
import {
  BACKGROUND_KINDS,
  caption,
  COLOUR_NAMES,
  COLOUR_RGB,
  FEATURE_SUBJECTS,
  HELD_OUT_COMBINATIONS,
  heldOutSubject,
  isHeldOut,
  LABEL_CLASSES,
  labelIndices,
  NEVER_SEEN_FEATURES,
  OBJECT_KINDS,
  PATTERNS,
  sampleScene,
  sceneForSubject,
  sceneLabels,
  type ColourName,
  type Scene,
} from '../world.js';
import { FIXTURES } from '../../../test/helpers.js';

function scenes(seed: number, n: number): Scene[] {
  const rng = new Rng(seed);
  return Array.from({ length: n }, () => sampleScene(rng));
}

function nearestColour(r: number, g: number, b: number): ColourName {
  let best: ColourName = 'black';
  let bestD = Infinity;
  for (const name of COLOUR_NAMES) {
    const [cr, cg, cb] = COLOUR_RGB[name];
    const d = (r - cr) ** 2 + (g - cg) ** 2 + (b - cb) ** 2;
    if (d < bestD) [best, bestD] = [name, d];
  }
  return best;
}

/** Palette-colour counts of the pixels fully inside the object's silhouette. */
async function objectColours(pixels: Buffer, scene: Scene, size: number): Promise<Map<ColourName, number>> {
  const mask = await objectMask(scene, size);
  const counts = new Map<ColourName, number>();
  for (let p = 0; p < size * size; p++) {
    if (mask[p] !== 255) continue;
    const c = nearestColour(pixels[3 * p]!, pixels[3 * p + 1]!, pixels[3 * p + 2]!);
    counts.set(c, (counts.get(c) ?? 0) + 1);
  }
  return counts;
}

function dominant(counts: Map<ColourName, number>): ColourName | undefined {
  return [...counts.entries()].sort((a, b) => b[1] - a[1])[0]?.[0];
}

describe('world vocabulary', () => {
  it('has at least 8 object kinds (cat and dog among them) and 8 distinct named colours', () => {
    expect(OBJECT_KINDS.length).toBeGreaterThanOrEqual(8);
    expect(OBJECT_KINDS).toContain('cat');
    expect(OBJECT_KINDS).toContain('dog');
    expect(COLOUR_NAMES.length).toBeGreaterThanOrEqual(8);
    expect(new Set(COLOUR_NAMES.map((c) => COLOUR_RGB[c].join(','))).size).toBe(COLOUR_NAMES.length);
    expect([...PATTERNS]).toEqual(['plain', 'striped', 'dotted']);
    expect([...BACKGROUND_KINDS]).toEqual(['solid', 'gradient', 'stripes']);
  });

  it('samples every kind, colour, pattern and background kind', () => {
    const all = scenes(3, 2000);
    expect(new Set(all.map((s) => s.subject.object)).size).toBe(OBJECT_KINDS.length);
    expect(new Set(all.map((s) => s.subject.colour)).size).toBe(COLOUR_NAMES.length);
    expect(new Set(all.map((s) => s.subject.pattern)).size).toBe(PATTERNS.length);
    expect(new Set(all.map((s) => s.background.kind)).size).toBe(BACKGROUND_KINDS.length);
    for (const s of all) {
      expect(s.background.colour).not.toBe(s.subject.colour);
      expect(s.subject.patternColour === null).toBe(s.subject.pattern === 'plain');
      expect(s.subject.patternColour).not.toBe(s.subject.colour);
      expect(s.background.colour2 === null).toBe(s.background.kind !== 'stripes');
    }
  });
});

describe('determinism', () => {
  it('gives the same scenes and captions for the same seed, different ones for another', () => {
    const captions = (seed: number): string[] => {
      const rng = new Rng(seed);
      return Array.from({ length: 50 }, () => caption(sampleScene(rng), rng));
    };
    expect(scenes(11, 50)).toEqual(scenes(11, 50));
    expect(captions(11)).toEqual(captions(11));
    expect(captions(12)).not.toEqual(captions(11));
  });

  it('renders the same pixels for the same scene', async () => {
    for (const scene of scenes(5, 3)) {
      expect((await renderScene(scene, 32)).equals(await renderScene(structuredClone(scene), 32))).toBe(true);
    }
  });
});

describe('captions', () => {
  it('always name object, colour, pattern and background', () => {
    const rng = new Rng(21);
    for (let i = 0; i < 1000; i++) {
      const s = sampleScene(rng);
      const text = caption(s, rng);
      expect(text).toContain(s.subject.object);
      expect(text).toMatch(new RegExp(`\\b${s.subject.colour}\\b`));
      if (s.subject.pattern === 'striped') expect(text).toMatch(/striped|stripes/);
      if (s.subject.pattern === 'dotted') expect(text).toMatch(/dotted|dots/);
      expect(text).toMatch(new RegExp(`\\b${s.background.colour}\\b`));
      expect(text).toContain('background');
      if (s.background.kind === 'gradient') expect(text).toContain(`${s.background.colour} gradient background`);
      if (s.background.kind === 'stripes') expect(text).toContain(`${s.background.colour} and ${s.background.colour2} striped background`);
      expect(text).not.toMatch(/ {2}|\ba [aeiou]/);
    }
  });

  it('has a canonical form and varies its wording with an rng', () => {
    const scene: Scene = {
      subject: { object: 'cat', colour: 'red', pattern: 'striped', patternColour: 'white', features: [] },
      background: { kind: 'solid', colour: 'blue', colour2: null },
      size: 'small',
      position: 'left',
      facing: 'right',
      jitter: { x: 0, y: 0 },
    };
    expect(caption(scene)).toBe('a small red cat with white stripes on a blue background');
    const rng = new Rng(1);
    const variants = new Set(Array.from({ length: 200 }, () => caption(scene, rng)));
    expect(variants.size).toBeGreaterThan(20);
    expect([...variants].some((v) => v.startsWith('a photo of '))).toBe(true);
    expect([...variants].some((v) => v.includes('on the left'))).toBe(true);
  });

  it('leaves out colour, pattern and background independently with omit, the wording otherwise alike', () => {
    // The wording drawn from a seed is the recipe's training data: pinned (painter-mini was trained on these).
    const pinned = new Rng(5);
    expect(Array.from({ length: 6 }, () => caption(sampleScene(pinned), pinned))).toEqual([
      'a photo of a pink and white striped cup against a green and orange striped background',
      'a photo of a big blue dog, purple background',
      'a photo of a green dog with pink dots against a purple background',
      'a photo of a little brown and orange striped fish against a red gradient background',
      'an image of a large brown dog with orange dots on a white background',
      'a picture of a black dotted tree on a brown background',
    ]);
    // omit 0 draws nothing more: the same captions as without it.
    const [a, b] = [new Rng(5), new Rng(5)];
    for (let i = 0; i < 50; i++) {
      const s = sampleScene(a);
      sampleScene(b);
      expect(caption(s, b, 0)).toBe(caption(s, a));
    }
    const rng = new Rng(22);
    const omit = 0.3;
    let n = 0;
    let noBackground = 0;
    let noColour = 0;
    let patterned = 0;
    let noPattern = 0;
    const bare: string[] = [];
    for (let i = 0; i < 4000; i++) {
      const s = sampleScene(rng);
      const text = caption(s, rng, omit);
      n++;
      expect(text).toMatch(new RegExp(`\\b${s.subject.object}\\b`));
      expect(text).not.toMatch(/ {2}|\ba [aeiou]|^ | $/);
      if (!text.includes('background')) noBackground++;
      // The subject's colour word comes right before the object, a pattern word or "and".
      if (!new RegExp(`\\b${s.subject.colour} (${s.subject.object}|striped|dotted|and)\\b`).test(text)) noColour++;
      if (s.subject.pattern !== 'plain') {
        patterned++;
        if (!/striped|stripes|dotted|dots/.test(text.replace(/striped background/, ''))) noPattern++;
      }
      if (/^(a photo of |a picture of |an image of |a drawing of )?an? ((small|little|large|big) )?\w+( on the left| on the right| in the middle| in the centre)?$/.test(text)) bare.push(text);
    }
    for (const [count, total] of [[noBackground, n], [noColour, n], [noPattern, patterned]] as const) expect(Math.abs(count / total - omit)).toBeLessThan(0.04);
    // "a photo of a dog": the class prompt DreamBooth samples its prior from.
    expect(bare.length).toBeGreaterThan(0);
    expect(bare.some((t) => /^a photo of an? \w+$/.test(t))).toBe(true);
  });

  it('names accessories', () => {
    const scene = sceneForSubject(FEATURE_SUBJECTS[0]!, new Rng(2));
    expect(caption(scene)).toMatch(/brown dog (wearing|with) a red collar/);
  });
});

describe('holdout', () => {
  it('holds out at least 6 combinations and 3 never-seen features', () => {
    expect(HELD_OUT_COMBINATIONS.length).toBeGreaterThanOrEqual(6);
    expect(NEVER_SEEN_FEATURES.length).toBeGreaterThanOrEqual(3);
    expect(HELD_OUT_COMBINATIONS[0]).toEqual({ object: 'cat', colour: 'orange', pattern: 'striped', patternColour: 'purple' });
  });

  it('the pretraining sampler never yields a held-out combination or an accessory', () => {
    const rng = new Rng(99);
    for (let i = 0; i < 20000; i++) {
      const s = sampleScene(rng);
      expect(s.subject.features).toHaveLength(0);
      const held = HELD_OUT_COMBINATIONS.some((c) => c.object === s.subject.object && c.colour === s.subject.colour && c.pattern === s.subject.pattern);
      expect(held).toBe(false);
      expect(isHeldOut(s)).toBe(false);
    }
  });

  it('makes held-out scenes on request, and the classifier sampler includes them', () => {
    for (const [i, c] of HELD_OUT_COMBINATIONS.entries()) {
      const s = sceneForSubject(heldOutSubject(c), new Rng(i));
      expect(isHeldOut(s)).toBe(true);
      expect(s.background.colour).not.toBe(c.colour);
    }
    for (const subject of FEATURE_SUBJECTS) {
      expect(isHeldOut(sceneForSubject(subject, new Rng(0)))).toBe(true);
      expect(NEVER_SEEN_FEATURES).toContain(subject.features[0]!.kind);
    }
    const rng = new Rng(4);
    const any = Array.from({ length: 3000 }, () => sampleScene(rng, { includeHeldOut: true }));
    expect(any.some((s) => s.subject.features.length > 0)).toBe(true);
    expect(any.some((s) => s.subject.features.length === 0 && isHeldOut(s))).toBe(true);
  });
});

describe('labels', () => {
  it('derives class indices of object, colour, pattern and background', () => {
    for (const s of scenes(8, 200)) {
      const labels = sceneLabels(s);
      const idx = labelIndices(labels);
      expect(LABEL_CLASSES.object[idx.object]).toBe(s.subject.object);
      expect(LABEL_CLASSES.colour[idx.colour]).toBe(s.subject.colour);
      expect(LABEL_CLASSES.pattern[idx.pattern]).toBe(s.subject.pattern);
      expect(LABEL_CLASSES.background[idx.background]).toBe(s.background.kind);
      expect(LABEL_CLASSES.backgroundColour[idx.backgroundColour]).toBe(s.background.colour);
    }
  });
});

describe('rendering', () => {
  it('draws images of the requested size, the object in its colour on its background', async () => {
    const all = scenes(13, 80);
    for (const [i, scene] of all.entries()) {
      const size = i % 2 === 0 ? 64 : 32;
      const pixels = await renderScene(scene, size);
      expect(pixels.length).toBe(size * size * 3);
      const counts = await objectColours(pixels, scene, size);
      expect(dominant(counts), `${caption(scene)} at ${size}`).toBe(scene.subject.colour);
      const total = [...counts.values()].reduce((a, b) => a + b, 0);
      expect(total).toBeGreaterThan(size === 64 ? 30 : 5);
      if (scene.subject.pattern === 'plain') expect((counts.get(scene.subject.colour) ?? 0) / total).toBeGreaterThan(0.6);
      else expect(counts.get(scene.subject.patternColour!) ?? 0, `${caption(scene)}: pattern visible`).toBeGreaterThan(0);
      if (scene.background.kind === 'solid') {
        expect(nearestColour(pixels[0]!, pixels[1]!, pixels[2]!)).toBe(scene.background.colour);
        const last = (size * size - 1) * 3;
        expect(nearestColour(pixels[last]!, pixels[last + 1]!, pixels[last + 2]!)).toBe(scene.background.colour);
      }
    }
  });

  it('draws the object where the scene puts it, mirrored when facing left', async () => {
    const base = sceneForSubject({ object: 'dog', colour: 'red', pattern: 'plain', patternColour: null, features: [] }, new Rng(1), {
      background: { kind: 'solid', colour: 'white', colour2: null },
      size: 'small',
      jitter: { x: 0, y: 0 },
      facing: 'right',
    });
    const redColumnsMean = async (s: Scene): Promise<number> => {
      const px = await renderScene(s, 64);
      let sum = 0;
      let n = 0;
      for (let i = 0; i < px.length; i += 3) {
        if (nearestColour(px[i]!, px[i + 1]!, px[i + 2]!) === 'red') {
          sum += (i / 3) % 64;
          n++;
        }
      }
      return sum / n;
    };
    const left = await redColumnsMean({ ...base, position: 'left' });
    const right = await redColumnsMean({ ...base, position: 'right' });
    expect(left).toBeLessThan(26);
    expect(right).toBeGreaterThan(38);
    const a = await renderScene({ ...base, position: 'centre' }, 64);
    const b = await renderScene({ ...base, position: 'centre', facing: 'left' }, 64);
    expect(a.equals(b)).toBe(false);
  });

  it('draws patterns as SVG patterns and accessories on the object', async () => {
    const rng = new Rng(6);
    const striped = sceneForSubject(heldOutSubject(HELD_OUT_COMBINATIONS[0]!), rng, { background: { kind: 'solid', colour: 'blue', colour2: null } });
    expect(sceneSvg(striped, 64)).toContain('<pattern id="pat"');
    const collared = { ...striped, subject: { ...striped.subject, features: [{ kind: 'collar' as const, colour: 'green' as const }] } };
    const plainPx = await renderScene(striped, 64);
    const collarPx = await renderScene(collared, 64);
    expect(plainPx.equals(collarPx)).toBe(false);
    let green = 0;
    for (let i = 0; i < collarPx.length; i += 3) if (nearestColour(collarPx[i]!, collarPx[i + 1]!, collarPx[i + 2]!) === 'green') green++;
    expect(green).toBeGreaterThan(10);
  });

  it('writes PNGs that decode to the rendered pixels', async () => {
    const scene = scenes(2, 1)[0]!;
    const { data, info } = await sharp(await renderScenePng(scene, 64)).raw().toBuffer({ resolveWithObject: true });
    expect([info.width, info.height, info.channels]).toEqual([64, 64, 3]);
    expect(data.equals(await renderScene(scene, 64))).toBe(true);
  });
});

describe('quick-start fixture', () => {
  it('holds the renderer\'s images of one held-out subject (regenerate: node scripts/world-sample.mjs --cat-photos)', async () => {
    const list = quickStartScenes();
    expect(list).toHaveLength(5);
    for (const [i, scene] of list.entries()) {
      expect(scene.subject).toEqual(QUICK_START_SUBJECT);
      expect(isHeldOut(scene)).toBe(true);
      expect(scene.background.colour).not.toBe('green');
      const { data, info } = await sharp(path.join(FIXTURES, 'cat-photos', `cat-${i + 1}.png`)).removeAlpha().raw().toBuffer({ resolveWithObject: true });
      expect([info.width, info.height]).toEqual([64, 64]);
      expect(data.equals(await renderScene(scene, 64)), `cat-${i + 1}.png differs from the renderer`).toBe(true);
      // Its caption file names what is not the subject, the background, for invert's prompts.
      expect(fs.readFileSync(path.join(FIXTURES, 'cat-photos', `cat-${i + 1}.txt`), 'utf8')).toBe(`${photoCaption(scene)}\n`);
    }
  });
});
