/**
 * Looks at the world: writes a contact sheet of random scenes with their captions, or
 * regenerates the quick-start fixture. Run through `scripts/world-sample.mjs` after a build:
 *
 *   node scripts/world-sample.mjs [--out DIR] [--n 24] [--seed 0] [--held-out] [--columns 4]
 *   node scripts/world-sample.mjs --cat-photos [--out fixtures/cat-photos]
 *
 * `--held-out` shows the subjects pretraining never sees (held-out combinations and accessories)
 * instead of pretraining samples.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import { contactSheet, type SheetEntry } from './contact-sheet.js';
import { QUICK_START_SIZE, quickStartScenes, subjectScenes, writeScenePngs } from './subject-photos.js';
import { caption, FEATURE_SUBJECTS, HELD_OUT_COMBINATIONS, heldOutSubject, sampleScene, type Scene } from './world.js';
import { Rng, UsageError } from '../../src/index.js';

function intOption(value: string | undefined, name: string, fallback: number): number {
  if (value === undefined) return fallback;
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0) throw new UsageError(`--${name} must be a non-negative integer (got "${value}")`);
  return n;
}

/** `n` scenes cycling through the held-out and accessory subjects, each set in varied layouts. */
function heldOutScenes(n: number, seed: number): Scene[] {
  const subjects = [...HELD_OUT_COMBINATIONS.map((c) => heldOutSubject(c)), ...FEATURE_SUBJECTS];
  const rounds = Math.ceil(n / subjects.length);
  const sets = subjects.map((s, i) => subjectScenes(s, rounds, seed * 1000 + i));
  return Array.from({ length: n }, (_, k) => sets[k % subjects.length]![Math.floor(k / subjects.length)]!);
}

const OPTIONS = {
  out: { type: 'string' },
  n: { type: 'string' },
  seed: { type: 'string' },
  columns: { type: 'string' },
  'held-out': { type: 'boolean' },
  'cat-photos': { type: 'boolean' },
} as const;

function parse(argv: string[]) {
  try {
    return parseArgs({ args: argv, options: OPTIONS, strict: true }).values;
  } catch (e) {
    throw new UsageError(`${(e as Error).message.split('\n')[0]} (options: --out DIR --n N --seed N --columns N --held-out --cat-photos)`);
  }
}

/** Runs the tool; returns a one-line summary of what it wrote. */
export async function main(argv: string[]): Promise<string> {
  const values = parse(argv);
  if (values['cat-photos']) {
    const dir = values.out ?? path.join('fixtures', 'cat-photos');
    const files = await writeScenePngs(dir, 'cat', quickStartScenes(), QUICK_START_SIZE);
    return `wrote ${files.length} images to ${dir}`;
  }
  const n = intOption(values.n, 'n', 24);
  const seed = intOption(values.seed, 'seed', 0);
  const columns = Math.max(1, intOption(values.columns, 'columns', 4));
  const dir = values.out ?? 'world-sample';
  const rng = new Rng(seed);
  const scenes = values['held-out'] ? heldOutScenes(n, seed) : Array.from({ length: n }, () => sampleScene(rng));
  const entries: SheetEntry[] = scenes.map((scene) => ({ scene, caption: caption(scene, rng) }));
  fs.mkdirSync(dir, { recursive: true });
  const sheet = path.join(dir, 'contact-sheet.png');
  fs.writeFileSync(sheet, await contactSheet(entries, columns));
  fs.writeFileSync(path.join(dir, 'captions.txt'), entries.map((e, i) => `${i + 1}\t${e.caption}`).join('\n') + '\n');
  return `wrote ${sheet} and captions.txt (${entries.length} scenes, seed ${seed})`;
}
