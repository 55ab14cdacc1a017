import * as path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { isPainterError } from '../../../src/errors.js';
import { benchSubject, downscale, SCORED_FEATURES, toClassifierSize, formatTable, parseBenchArgs, psnr, scoreSubject, subjectReading, type ConceptBenchResult, type Reading } from '../bench-concepts.js';
import { evaluate, loadClassifier, renderLabelled } from '../train-classifier.js';
import { renderScene } from '../render.js';
import { subjectScenes } from '../subject-photos.js';
import { FEATURE_KINDS, HELD_OUT_COMBINATIONS, isHeldOutSubject, type Subject } from '../world.js';
import { FIXTURES, TINY_SD_A, useBackend } from '../../../test/helpers.js';

beforeAll(async () => {
  await useBackend();
});

const reading = (s: Partial<Reading>): Reading => ({ object: 'cat', colour: 'red', pattern: 'plain', background: 'solid', backgroundColour: 'blue', feature: 'none', ...s });

describe('bench:concepts measures', () => {
  it('picks a held-out subject with a never-seen accessory, deterministically from the seed', () => {
    const seen = new Set<string>();
    for (let seed = 0; seed < 40; seed++) {
      const s = benchSubject(seed);
      expect(benchSubject(seed)).toEqual(s);
      expect(isHeldOutSubject(s)).toBe(true);
      expect(HELD_OUT_COMBINATIONS.some((c) => c.object === s.object && c.colour === s.colour && c.pattern === s.pattern)).toBe(true);
      expect(s.features).toHaveLength(1);
      expect(SCORED_FEATURES).toContain(s.features[0]!.kind);
      expect(FEATURE_KINDS).toContain(s.features[0]!.kind);
      expect([s.colour, s.patternColour]).not.toContain(s.features[0]!.colour);
      seen.add(JSON.stringify(s));
    }
    expect(seen.size).toBeGreaterThan(8);
  });

  it('scores subject fidelity attribute by attribute', () => {
    const subject: Subject = { object: 'dog', colour: 'blue', pattern: 'dotted', patternColour: 'yellow', features: [{ kind: 'hat', colour: 'red' }] };
    expect(subjectReading(subject)).toEqual({ object: 'dog', colour: 'blue', pattern: 'dotted', feature: 'hat' });
    const full = reading({ object: 'dog', colour: 'blue', pattern: 'dotted', feature: 'hat' });
    const score = scoreSubject([full, { ...full, feature: 'none' }, { ...full, colour: 'red' }, reading({})], subject);
    expect(score).toEqual({ subject: 0.25, combination: 0.5, object: 0.75, colour: 0.5, pattern: 0.75, feature: 0.5, likeness: (0.5 + 0.75 + 0.5) / 3 });
    expect(scoreSubject([], subject).subject).toBe(0);
  });

  it('computes PSNR of 8-bit images', () => {
    const a = new Uint8Array(300).fill(100);
    expect(psnr(a, a)).toBe(99);
    const b = a.map((v, i) => (i % 2 === 0 ? v + 10 : v - 10));
    expect(psnr(a, b)).toBeCloseTo(10 * Math.log10((255 * 255) / 100), 10);
    expect(() => psnr(a, new Uint8Array(3))).toThrow(/differ in size/);
  });

  it('scales to the classifier\'s size: box averaging down (close to rendering at the small size), repeating up', async () => {
    const px = new Uint8Array(4 * 4 * 3);
    for (let i = 0; i < 16; i++) px.fill(i * 10, i * 3, i * 3 + 3);
    // Top-left 2×2 block holds pixels 0, 1, 4, 5 → mean 25.
    const small = downscale(px, 4, 2);
    expect(Array.from(small.subarray(0, 3))).toEqual([25, 25, 25]);
    expect(small.length).toBe(12);
    expect(downscale(px, 4, 1)).toBe(px);
    expect(() => downscale(px, 4, 3)).toThrow(/not a multiple/);
    // To a larger classifier: each pixel repeated.
    const up = toClassifierSize(px, 4, 8);
    expect([up[0], up[3], up[8 * 3], up[(8 + 1) * 3]]).toEqual([px[0], px[0], px[0], px[0]]);
    expect(up[2 * 3]).toBe(px[3]);
    expect(up[2 * 8 * 3]).toBe(px[4 * 3]);
    expect(toClassifierSize(px, 4, 2)).toEqual(small);
    expect(() => toClassifierSize(px, 4, 6)).toThrow(/the classifier reads 6px images; 4px samples do not scale to it/);
    const scene = subjectScenes(benchSubject(0), 1, 3)[0]!;
    const down = downscale(await renderScene(scene, 64), 64, 2);
    expect(psnr(down, await renderScene(scene, 32))).toBeGreaterThan(20);
  });

  it('the shipped classifier reads photos of the benchmark subjects, accessory included', async () => {
    const { params, config } = loadClassifier(path.join(FIXTURES, 'mini-classifier'));
    const scenes = [0, 1, 2, 3, 4, 5].flatMap((seed) => subjectScenes(benchSubject(seed), 8, seed));
    const acc = evaluate(params, config, await renderLabelled(scenes, config.imageSize));
    expect(acc.object).toBeGreaterThan(0.8);
    expect(acc.colour).toBeGreaterThan(0.8);
    expect(acc.feature).toBeGreaterThan(0.8);
    expect(acc.pattern).toBeGreaterThan(0.9);
    for (const t of params.values()) t.dispose();
  });

  it('prints every measure with its target and whether it was met', () => {
    const score = (x: number) => ({ subject: x, combination: x, object: 1, colour: 1, pattern: 1, feature: x, likeness: x });
    const r: ConceptBenchResult = {
      seed: 3,
      subject: 'an orange striped cat with a blue hat',
      backend: 'wasm',
      psnr: { scenes: 64, mean: 27.2, min: 21 },
      promptFidelity: { prompts: 60, object: 0.75, colour: 0.7, background: 0.9 },
      reference: score(0.9),
      baseline: { label: 'baseline', prompt: 'a photo of a cat', score: score(0.05) },
      textualInversion: { label: 'ti', prompt: 'a photo of <cat-3>', score: score(0.2) },
      dreamboothPrior: { label: 'p', prompt: 'a photo of zq cat', score: score(0.5), pres: 0.1, classScore: { ...score(0.1), colour: 0.25 } },
      dreamboothNoPrior: { label: 'n', prompt: 'a photo of zq cat', score: score(0.55), pres: 0.6 },
      seconds: 600,
    };
    const table = formatTable(r);
    expect(table).toMatch(/seed 3, subject "an orange striped cat with a blue hat"/);
    expect(table).toMatch(/VAE reconstruction PSNR\s*\| 27\.2 dB .*\| ≥ 25 dB\s*\| met/);
    expect(table).toMatch(/prompt fidelity: colour\s*\| 70%\s*\| ≥ 80%\s*\| MISSED/);
    expect(table).toMatch(/Textual Inversion .*\| 4\.0× met/);
    expect(table).toMatch(/PRES \(class samples' likeness to the subject\) *\| 10% with prior, 60% without .*83% cut met/);
    expect(table).toMatch(/DreamBooth without prior *\| 55% \(combination 55%; obj 100% col 100% pat 100% acc 55%; likeness 55%\) *\| within 10 points of \+ prior \(subject, likeness\) *\| met/);
    // A prior that keeps the exact score but loses the likeness costs the subject.
    const lost = formatTable({ ...r, dreamboothPrior: { ...r.dreamboothPrior!, score: { ...score(0.5), likeness: 0.3 } } });
    expect(lost).toMatch(/DreamBooth without prior .*\| MISSED/);
    // The class samples' full readings are printed only when both runs have them.
    expect(table).not.toMatch(/class-prompt samples/);
    r.dreamboothNoPrior!.classScore = { ...score(0.6), colour: 0.75 };
    const withClass = formatTable(r);
    expect(withClass).toMatch(/class-prompt samples, with prior\s*\| 10% \(combination 10%; obj 100% col 25%.*likeness 10%\)/);
    expect(withClass).toMatch(/class-prompt samples, without prior\s*\| 60% \(combination 60%; obj 100% col 75%/);
    // Parts left out with --only leave no rows.
    const vaeOnly = formatTable({ seed: 3, subject: r.subject, backend: 'wasm', psnr: r.psnr, seconds: 10 });
    expect(vaeOnly.split('\n')).toHaveLength(4);
    expect(vaeOnly).not.toMatch(/Textual Inversion|DreamBooth|prompt fidelity/);
  });

  it('rejects bad arguments with one line naming the flag', () => {
    const cases: [string[], RegExp][] = [
      [['--seed=-1'], /--seed -1: give a whole number/],
      [['--seed', '1.5'], /--seed 1\.5: give a whole number/],
      [['--db-mode', 'half'], /--db-mode half: choose full or lora/],
      [['--samples', '0'], /--samples 0: give a positive whole number/],
      [['--backend', 'gpu'], /--backend gpu: choose one of/],
      [['--model', path.join(FIXTURES, 'nope')], /--model .*nope: no model_index\.json/],
      [['--model', TINY_SD_A, '--classifier', FIXTURES], /--classifier .*fixtures: no config\.json/],
      [['--bogus'], /bogus/],
      [['--only', 'ti,gan'], /--only ti,gan: give a comma-separated list of vae, prompts, ti, dreambooth/],
    ];
    for (const [argv, re] of cases) {
      let err: unknown;
      try {
        parseBenchArgs(argv);
      } catch (e) {
        err = e;
      }
      expect(isPainterError(err), argv.join(' ')).toBe(true);
      expect((err as Error).message).toMatch(re);
    }
    expect(parseBenchArgs(['--model', TINY_SD_A, '--seed', '4'])).toMatchObject({ seed: 4, out: path.join('runs', 'bench-concepts-seed4'), dbMode: 'full', only: ['vae', 'prompts', 'ti', 'dreambooth'] });
    expect(parseBenchArgs(['--model', TINY_SD_A, '--only', 'ti, vae']).only).toEqual(['ti', 'vae']);
    expect(parseBenchArgs(['--model', TINY_SD_A]).dbTextEncoder).toBe(true);
    expect(parseBenchArgs(['--model', TINY_SD_A, '--db-frozen-text-encoder']).dbTextEncoder).toBe(false);
  });
});
