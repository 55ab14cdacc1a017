/**
 * Sets of images of one subject, as a personalisation method gets them: the same object, colour,
 * pattern and accessories in varied sizes, positions, facings and backgrounds. Used for the
 * quick-start fixture (`fixtures/cat-photos/`) and by benchmarks that need a subject's photos.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { renderScenePng } from './render.js';
import { backgroundNoun, HELD_OUT_COMBINATIONS, heldOutSubject, POSITIONS, sceneForSubject, type Background, type Scene, type SizeName, type Subject } from './world.js';
import { Rng } from '../../src/index.js';

/** Sizes cycle through medium, large, small so every set shows the subject at all three. */
const SIZE_CYCLE: readonly SizeName[] = ['medium', 'large', 'small'];

/**
 * `n` scenes of `subject`, deterministic from `seed`; positions and sizes cycle, backgrounds are
 * drawn unless given (cycled), facing and jitter are drawn.
 */
export function subjectScenes(subject: Subject, n: number, seed: number, backgrounds: readonly Background[] = []): Scene[] {
  const rng = new Rng(seed);
  const scenes: Scene[] = [];
  for (let i = 0; i < n; i++) {
    const scene = sceneForSubject(subject, rng, { size: SIZE_CYCLE[i % SIZE_CYCLE.length]!, position: POSITIONS[(i * 2 + 1) % POSITIONS.length]! });
    scenes.push(backgrounds.length > 0 ? { ...scene, background: backgrounds[i % backgrounds.length]! } : scene);
  }
  return scenes;
}

/** The quick start's subject: the first held-out combination, an orange cat with purple stripes. */
export const QUICK_START_SUBJECT: Subject = heldOutSubject(HELD_OUT_COMBINATIONS[0]!);
export const QUICK_START_SEED = 7;
export const QUICK_START_COUNT = 5;
export const QUICK_START_SIZE = 64;

/**
 * The quick start's backgrounds, chosen rather than drawn: none is green (the README asks for
 * the cat "on a green background", so a green result shows composition, not a copy) and none is
 * the stripe colour purple.
 */
const QUICK_START_BACKGROUNDS: readonly Background[] = [
  { kind: 'solid', colour: 'blue', colour2: null },
  { kind: 'gradient', colour: 'yellow', colour2: null },
  { kind: 'solid', colour: 'pink', colour2: null },
  { kind: 'stripes', colour: 'white', colour2: 'blue' },
  { kind: 'solid', colour: 'white', colour2: null },
];

export function quickStartScenes(): Scene[] {
  return subjectScenes(QUICK_START_SUBJECT, QUICK_START_COUNT, QUICK_START_SEED, QUICK_START_BACKGROUNDS);
}

/**
 * What a subject photo's caption file says: what is not the subject, i.e. its background ("blue
 * gradient background"), so Textual Inversion's token has only the subject left to learn.
 */
export function photoCaption(scene: Scene): string {
  return backgroundNoun(scene.background);
}

/**
 * Writes `scenes` as `<stem>-<i>.png` (1-based) in `dir`, each with its caption file
 * `<stem>-<i>.txt` (`photoCaption`); returns the image paths.
 */
export async function writeScenePngs(dir: string, stem: string, scenes: readonly Scene[], size: number): Promise<string[]> {
  fs.mkdirSync(dir, { recursive: true });
  const files: string[] = [];
  for (let i = 0; i < scenes.length; i++) {
    const file = path.join(dir, `${stem}-${i + 1}.png`);
    fs.writeFileSync(file, await renderScenePng(scenes[i]!, size));
    fs.writeFileSync(path.join(dir, `${stem}-${i + 1}.txt`), photoCaption(scenes[i]!) + '\n');
    files.push(file);
  }
  return files;
}
