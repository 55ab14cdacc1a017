/**
 * painter-mini's procedural captioned world: one object on a background, described by a small
 * typed scene, sampled deterministically from painter's `Rng`, captioned in varied natural
 * wording. Pure (no fs, no sharp): `render.ts` turns a scene into pixels.
 *
 * Holdout. Some subjects must never reach pretraining so that Textual Inversion and DreamBooth
 * have something new to learn: the (object, colour, pattern) triples of `HELD_OUT_COMBINATIONS`
 * (whatever the pattern colour, so the attribute classifier, which cannot read the pattern
 * colour, never sees such a subject in pretraining either) and every accessory in
 * `NEVER_SEEN_FEATURES`. `sampleScene` rejects them; `sceneForSubject` builds them on request.
 */

export const OBJECT_KINDS = ['cat', 'dog', 'bird', 'fish', 'house', 'tree', 'car', 'flower', 'cup', 'star'] as const;
import { type Rng } from '../../src/index.js';
export type ObjectKind = (typeof OBJECT_KINDS)[number];

export const COLOUR_NAMES = ['red', 'orange', 'yellow', 'green', 'blue', 'purple', 'pink', 'brown', 'white', 'black'] as const;
export type ColourName = (typeof COLOUR_NAMES)[number];
export type Rgb = readonly [number, number, number];

/** Fixed sRGB values, chosen far apart so a colour survives VAE blur and 32×32 downsampling. */
export const COLOUR_RGB: Readonly<Record<ColourName, Rgb>> = {
  red: [214, 37, 37],
  orange: [247, 136, 20],
  yellow: [246, 216, 32],
  green: [38, 158, 58],
  blue: [36, 92, 212],
  purple: [128, 48, 168],
  pink: [246, 134, 192],
  brown: [118, 70, 32],
  white: [244, 244, 244],
  black: [26, 26, 26],
};

export const PATTERNS = ['plain', 'striped', 'dotted'] as const;
export type PatternKind = (typeof PATTERNS)[number];

export const BACKGROUND_KINDS = ['solid', 'gradient', 'stripes'] as const;
export type BackgroundKind = (typeof BACKGROUND_KINDS)[number];

export const SIZES = ['small', 'medium', 'large'] as const;
export type SizeName = (typeof SIZES)[number];

export const POSITIONS = ['left', 'centre', 'right'] as const;
export type PositionName = (typeof POSITIONS)[number];

/** Accessories drawn on the object; none of them ever appears in pretraining. */
export const FEATURE_KINDS = ['collar', 'hat', 'bow', 'crown'] as const;
export type FeatureKind = (typeof FEATURE_KINDS)[number];

export interface Feature {
  kind: FeatureKind;
  colour: ColourName;
}

/** What a personalisation method learns: the object and how it looks. */
export interface Subject {
  object: ObjectKind;
  colour: ColourName;
  pattern: PatternKind;
  /** Colour of the stripes or dots; null exactly when the pattern is plain. */
  patternColour: ColourName | null;
  features: readonly Feature[];
}

export interface Background {
  kind: BackgroundKind;
  colour: ColourName;
  /** Second stripe colour of a striped background; null for solid and gradient (a gradient fades to a shade of `colour`). */
  colour2: ColourName | null;
}

export interface Scene {
  subject: Subject;
  background: Background;
  size: SizeName;
  position: PositionName;
  /** The object's figure is drawn facing right and mirrored for 'left'. */
  facing: 'left' | 'right';
  /** Small placement offset, each in [-1, 1] (scaled by the renderer); rounded to 0.01. */
  jitter: { x: number; y: number };
}

/** A held-out subject: its (object, colour, pattern) triple never appears in pretraining. */
export interface HeldOutCombination {
  object: ObjectKind;
  colour: ColourName;
  pattern: Exclude<PatternKind, 'plain'>;
  /** The pattern colour used when this subject is drawn for TI/DreamBooth tests. */
  patternColour: ColourName;
}

export const HELD_OUT_COMBINATIONS: readonly HeldOutCombination[] = [
  { object: 'cat', colour: 'orange', pattern: 'striped', patternColour: 'purple' },
  { object: 'dog', colour: 'blue', pattern: 'dotted', patternColour: 'yellow' },
  { object: 'bird', colour: 'pink', pattern: 'striped', patternColour: 'green' },
  { object: 'fish', colour: 'yellow', pattern: 'dotted', patternColour: 'red' },
  { object: 'car', colour: 'green', pattern: 'striped', patternColour: 'white' },
  { object: 'house', colour: 'purple', pattern: 'dotted', patternColour: 'orange' },
  { object: 'cup', colour: 'red', pattern: 'striped', patternColour: 'blue' },
  { object: 'flower', colour: 'white', pattern: 'dotted', patternColour: 'pink' },
];

export const NEVER_SEEN_FEATURES: readonly FeatureKind[] = FEATURE_KINDS;

/**
 * Subjects for DreamBooth's never-seen-feature test: an ordinary (pretraining-visible) animal
 * wearing one accessory the model has never seen.
 */
export const FEATURE_SUBJECTS: readonly Subject[] = [
  { object: 'dog', colour: 'brown', pattern: 'plain', patternColour: null, features: [{ kind: 'collar', colour: 'red' }] },
  { object: 'cat', colour: 'white', pattern: 'plain', patternColour: null, features: [{ kind: 'hat', colour: 'blue' }] },
  { object: 'bird', colour: 'yellow', pattern: 'plain', patternColour: null, features: [{ kind: 'bow', colour: 'pink' }] },
  { object: 'dog', colour: 'black', pattern: 'plain', patternColour: null, features: [{ kind: 'crown', colour: 'yellow' }] },
];

/** The subject of a held-out combination, optionally with accessories. */
export function heldOutSubject(c: HeldOutCombination, features: readonly Feature[] = []): Subject {
  return { object: c.object, colour: c.colour, pattern: c.pattern, patternColour: c.patternColour, features };
}

export function isHeldOutSubject(s: Subject): boolean {
  if (s.features.length > 0) return true;
  return HELD_OUT_COMBINATIONS.some((c) => c.object === s.object && c.colour === s.colour && c.pattern === s.pattern);
}

/** True when pretraining must not see this scene (held-out triple or any accessory). */
export function isHeldOut(scene: Scene): boolean {
  return isHeldOutSubject(scene.subject);
}

// ---------------------------------------------------------------------------------------------
// Sampling

function pick<T>(rng: Rng, items: readonly T[]): T {
  return items[rng.int(items.length)]!;
}

function pickOther(rng: Rng, avoid: readonly (ColourName | null)[]): ColourName {
  return pick(
    rng,
    COLOUR_NAMES.filter((c) => !avoid.includes(c)),
  );
}

function round2(v: number): number {
  return Math.round(v * 100) / 100;
}

/** Solid 40%, gradient 30%, stripes 30%. */
function sampleBackground(rng: Rng, subject: Subject): Background {
  const u = rng.uniform();
  const kind: BackgroundKind = u < 0.4 ? 'solid' : u < 0.7 ? 'gradient' : 'stripes';
  // The object (or an accessory) never sits on its own colour: it would vanish into the background.
  const own = [subject.colour, ...subject.features.map((f) => f.colour)];
  const colour = pickOther(rng, own);
  const colour2 = kind === 'stripes' ? pickOther(rng, [colour, ...own]) : null;
  return { kind, colour, colour2 };
}

function sampleSubject(rng: Rng): Subject {
  const object = pick(rng, OBJECT_KINDS);
  const colour = pick(rng, COLOUR_NAMES);
  const pattern = pick(rng, PATTERNS);
  const patternColour = pattern === 'plain' ? null : pickOther(rng, [colour]);
  return { object, colour, pattern, patternColour, features: [] };
}

export type SceneLayout = Omit<Scene, 'subject'>;

function sampleLayout(rng: Rng, subject: Subject): SceneLayout {
  const background = sampleBackground(rng, subject);
  const size = pick(rng, SIZES);
  const position = pick(rng, POSITIONS);
  const facing = rng.uniform() < 0.5 ? 'left' : 'right';
  const jitter = { x: round2(rng.uniform() * 2 - 1), y: round2(rng.uniform() * 2 - 1) };
  return { background, size, position, facing, jitter };
}

/** How often `includeHeldOut` scenes wear an accessory: often enough for the classifier's feature head to learn all four. */
export const FEATURE_RATE = 0.3;

export interface SampleOptions {
  /**
   * Also draw held-out combinations and, with probability `FEATURE_RATE`, one accessory (for
   * the attribute classifier, which must read any subject). Never set this for pretraining data.
   */
  includeHeldOut?: boolean;
}

/**
 * One random scene. By default this is the pretraining sampler: held-out combinations and
 * accessories are rejected and redrawn, so they never occur.
 */
export function sampleScene(rng: Rng, options: SampleOptions = {}): Scene {
  for (;;) {
    const subject = sampleSubject(rng);
    if (options.includeHeldOut) {
      if (rng.uniform() < FEATURE_RATE) subject.features = [{ kind: pick(rng, FEATURE_KINDS), colour: pickOther(rng, [subject.colour]) }];
      return { subject, ...sampleLayout(rng, subject) };
    }
    if (!isHeldOutSubject(subject)) return { subject, ...sampleLayout(rng, subject) };
  }
}

/**
 * A scene of a given subject (held out or not) with a random background, size, position and
 * facing; `overrides` fixes any of those. For TI/DreamBooth images and benchmark references.
 */
export function sceneForSubject(subject: Subject, rng: Rng, overrides: Partial<SceneLayout> = {}): Scene {
  if ((subject.pattern === 'plain') !== (subject.patternColour === null)) {
    throw new Error(`sceneForSubject: patternColour must be null exactly when the pattern is plain (got ${subject.pattern}/${subject.patternColour})`);
  }
  return { subject, ...sampleLayout(rng, subject), ...overrides };
}

// ---------------------------------------------------------------------------------------------
// Captions

function article(phrase: string): string {
  return /^[aeiou]/.test(phrase) ? `an ${phrase}` : `a ${phrase}`;
}

/** Which of a subject's attributes a caption names (a partial caption leaves some out). */
interface Named {
  colour: boolean;
  pattern: boolean;
}

function patternedPhrase(s: Subject, choose: <T>(o: readonly T[]) => T, named: Named = { colour: true, pattern: true }): string {
  const { colour, object, pattern, patternColour } = s;
  if (pattern === 'plain' || patternColour === null || !named.pattern) return named.colour ? `${colour} ${object}` : object;
  const adjective = pattern === 'striped' ? 'striped' : 'dotted';
  const noun = pattern === 'striped' ? 'stripes' : 'dots';
  if (!named.colour) return choose([`${object} with ${patternColour} ${noun}`, `${adjective} ${object}`]);
  return choose([
    `${colour} ${object} with ${patternColour} ${noun}`,
    `${colour} and ${patternColour} ${adjective} ${object}`,
    `${colour} ${object} with ${patternColour} ${noun}`,
    `${colour} ${adjective} ${object}`,
  ]);
}

function featurePhrase(f: Feature, choose: <T>(o: readonly T[]) => T): string {
  return `${choose(['wearing', 'with'])} ${article(`${f.colour} ${f.kind}`)}`;
}

/** The background as the world's captions name it, e.g. "blue gradient background". */
export function backgroundNoun(b: Background): string {
  switch (b.kind) {
    case 'solid':
      return `${b.colour} background`;
    case 'gradient':
      return `${b.colour} gradient background`;
    case 'stripes':
      return `${b.colour} and ${b.colour2 ?? 'white'} striped background`;
  }
}

/**
 * A caption that names the object, its colour, its pattern (when not plain) and the background
 * (kind and colour). Without `rng` it is the canonical form, e.g. "a small red cat with white
 * stripes on a blue background"; with `rng` the wording, the prefix ("a photo of"), and whether
 * size and position are mentioned vary, and with `omit` > 0 each of the colour, the pattern and
 * the background is left out with that probability, as people caption photos partially ("a
 * photo of a dog"): a model that never saw such captions has no class prior to sample from.
 */
export function caption(scene: Scene, rng?: Rng, omit = 0): string {
  const choose = <T>(options: readonly T[]): T => (rng ? options[rng.int(options.length)]! : options[0]!);
  const chance = (p: number, canonical: boolean): boolean => (rng ? rng.uniform() < p : canonical);
  const named = (): boolean => !(rng && omit > 0 && rng.uniform() < omit);
  const s = scene.subject;
  const subject = { colour: named(), pattern: named() };
  const withBackground = named();

  const words: string[] = [];
  if (scene.size !== 'medium' && chance(0.6, true)) words.push(scene.size === 'small' ? choose(['small', 'little']) : choose(['large', 'big']));
  words.push(patternedPhrase(s, choose, subject));
  let phrase = words.join(' ');
  if (s.features.length > 0) phrase += ' ' + s.features.map((f) => featurePhrase(f, choose)).join(' and ');

  const withPosition = chance(0.35, false);
  if (withPosition) {
    phrase += scene.position === 'left' ? ' on the left' : scene.position === 'right' ? ' on the right' : choose([' in the middle', ' in the centre']);
  }
  let join = '';
  if (withBackground) {
    const bg = backgroundNoun(scene.background);
    // "… on the left on a blue background" reads badly, so a position takes the other two joins.
    join = withPosition ? choose([` against ${article(bg)}`, `, ${bg}`]) : choose([` on ${article(bg)}`, ` against ${article(bg)}`, `, ${bg}`]);
  }
  // Drawn after the join, as always: full captions stay those painter-mini was trained on.
  const prefix = choose(['', 'a photo of ', 'a picture of ', 'an image of ', 'a drawing of ']);
  return `${prefix}${article(phrase)}${join}`;
}

/** Short description of a subject, e.g. "orange cat with purple stripes" (for prompts and reports). */
export function subjectPhrase(s: Subject): string {
  let phrase = patternedPhrase(s, (o) => o[0]!);
  if (s.features.length > 0) phrase += ' ' + s.features.map((f) => `with ${article(`${f.colour} ${f.kind}`)}`).join(' and ');
  return phrase;
}

// ---------------------------------------------------------------------------------------------
// Labels for the attribute classifier

export const LABEL_CLASSES = {
  object: OBJECT_KINDS,
  colour: COLOUR_NAMES,
  pattern: PATTERNS,
  background: BACKGROUND_KINDS,
  backgroundColour: COLOUR_NAMES,
  /** The (first) accessory, or none. */
  feature: ['none', ...FEATURE_KINDS],
} as const;
export type LabelName = keyof typeof LABEL_CLASSES;
export const LABEL_NAMES = Object.keys(LABEL_CLASSES) as LabelName[];

export interface SceneLabels {
  object: ObjectKind;
  colour: ColourName;
  pattern: PatternKind;
  background: BackgroundKind;
  backgroundColour: ColourName;
  feature: FeatureKind | 'none';
}

export function sceneLabels(scene: Scene): SceneLabels {
  return {
    object: scene.subject.object,
    colour: scene.subject.colour,
    pattern: scene.subject.pattern,
    background: scene.background.kind,
    backgroundColour: scene.background.colour,
    feature: scene.subject.features[0]?.kind ?? 'none',
  };
}

/** Class index of every label (position in its `LABEL_CLASSES` list). */
export function labelIndices(labels: SceneLabels): Record<LabelName, number> {
  const out = {} as Record<LabelName, number>;
  for (const name of LABEL_NAMES) out[name] = (LABEL_CLASSES[name] as readonly string[]).indexOf(labels[name]);
  return out;
}
