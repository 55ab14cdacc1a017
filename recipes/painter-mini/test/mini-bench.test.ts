import * as path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { isPainterError } from '../../../src/errors.js';
import { backgroundLeak, BENCH_DEFAULTS, benchRows, benchSubject, downscale, SCORED_FEATURES, toClassifierSize, formatTable, parseBenchArgs, psnr, scoreSubject, subjectReading, type ConceptBenchResult, type Reading } from '../bench-concepts.js';
import { benchStrips } from '../bench-page.js';
import { subjectMask } from '../subject-masks.js';
import { evaluate, loadClassifier, renderLabelled } from '../train-classifier.js';
import { objectMask, renderScene } from '../render.js';
import { subjectScenes } from '../subject-photos.js';
import { COLOUR_RGB, FEATURE_KINDS, HELD_OUT_COMBINATIONS, isHeldOutSubject, type Subject } from '../world.js';
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

  it('counts the samples whose background has a training photo\'s colour', () => {
    const rs = [reading({ backgroundColour: 'blue' }), reading({ backgroundColour: 'red' }), reading({ backgroundColour: 'white' }), reading({ backgroundColour: 'blue' })];
    expect(backgroundLeak(rs, ['blue', 'white'])).toBe(0.75);
    expect(backgroundLeak(rs, ['green'])).toBe(0);
    expect(backgroundLeak([], ['blue'])).toBe(0);
  });

  it('masks the whole subject, accessory and outline included, and none of its background', async () => {
    const size = 64;
    const [scene] = subjectScenes(benchSubject(0), 1, 5);
    const mask = await subjectMask(scene!, size);
    expect(mask).toHaveLength(size * size);
    // The same subject on another background has the same mask: the background is never in it.
    const other = await subjectMask({ ...scene!, background: { kind: 'stripes', colour: 'red', colour2: 'green' } }, size);
    expect(Array.from(other)).toEqual(Array.from(mask));
    // Every pixel of the body (objectMask: no details, no accessory) is subject.
    const body = await objectMask(scene!, size);
    for (let i = 0; i < body.length; i++) if (body[i] === 255) expect(mask[i]).toBeGreaterThanOrEqual(250);
    // More than the body: the outline, the details and the hat.
    const count = (m: ArrayLike<number>) => Array.from(m).filter((v) => v >= 128).length;
    expect(count(mask)).toBeGreaterThan(count(body) * 1.2);
    // The hat: its colour's pixels (the scene on a black background, so no other pixel has it) are all subject.
    const hat = COLOUR_RGB[scene!.subject.features[0]!.colour];
    const onBlack = await renderScene({ ...scene!, background: { kind: 'solid', colour: 'black', colour2: null } }, size);
    const hatPixels = Array.from({ length: size * size }, (_, i) => i).filter((i) => [0, 1, 2].every((c) => Math.abs(onBlack[i * 3 + c]! - hat[c]!) < 12));
    expect(hatPixels.length).toBeGreaterThan(10);
    for (const i of hatPixels) expect(mask[i]).toBeGreaterThanOrEqual(250);
    // The corners are background.
    for (const i of [0, size - 1, size * (size - 1), size * size - 1]) expect(mask[i]).toBe(0);
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
    expect(table).not.toMatch(/pivotal|masked/);
  });

  it('prints the pivotal-tuning and masked-loss rows against Textual Inversion and DreamBooth', () => {
    const score = (likeness: number) => ({ subject: 0, combination: 0.1, object: 1, colour: likeness, pattern: likeness, feature: likeness, likeness });
    const method = (label: string, prompt: string, likeness: number, leak: number, pres?: number) => ({ label, prompt, score: score(likeness), backgroundLeak: leak, ...(pres !== undefined && { pres, classScore: score(pres) }) });
    const r: ConceptBenchResult = {
      seed: 0,
      subject: 'a green car with white stripes with a blue hat',
      backend: 'wasm',
      trainingBackgrounds: ['black', 'purple', 'yellow'],
      baseline: method('baseline', 'a photo of a car', 0.05, 0.3),
      textualInversion: method('ti', 'a photo of <car-0>', 0.4, 0.6),
      maskedTextualInversion: method('ti-masked', 'a photo of <car-0-masked>', 0.45, 0.25),
      dreamboothPrior: method('dreambooth-prior', 'a photo of ee car', 0.5, 0.5, 0.02),
      dreamboothNoPrior: method('dreambooth-no-prior', 'a photo of ee car', 0.55, 0.5, 0.4),
      pivotal: method('pivotal', 'a photo of <car-0-pivotal> car', 0.6, 0.4, 0.05),
      seconds: 3600,
    };
    const table = formatTable(r);
    expect(table).toMatch(/Textual Inversion, masked loss "a photo of <car-0-masked>" *\| 0% \(combination 10%.*likeness 45%\) *\| ≥ 3× baseline \(combination\) *\| 1\.0× MISSED/);
    expect(table).toMatch(/pivotal tuning \(LoRA \+ embedding, \+ prior\) "a photo of <car-0-pivotal> car" *\| .*likeness 60%\) *\| > TI and DreamBooth \+ prior \(likeness\) *\| TI 40%, DreamBooth \+ prior 50%: met/);
    expect(table).toMatch(/PRES, pivotal tuning *\| 5% \(DreamBooth \+ prior 2%\)/);
    expect(table).toMatch(/class-prompt samples, pivotal tuning *\| .*likeness 5%\)/);
    expect(table).toMatch(/samples on a training photo's background colour \(black, purple, yellow\) *\| baseline 30%, TI 60%, masked TI 25%, DreamBooth \+ prior 50%, DreamBooth without prior 50%, pivotal 40% *\| masked < TI *\| met/);
    // Pivotal tuning that matches DreamBooth's likeness does not beat it.
    const tie = formatTable({ ...r, pivotal: { ...r.pivotal!, score: score(0.5) } });
    expect(tie).toMatch(/pivotal tuning .*TI 40%, DreamBooth \+ prior 50%: MISSED/);
    // Without its rivals the pivotal row has no target; without masked TI the leak row has none.
    const alone = benchRows({ ...r, textualInversion: undefined, maskedTextualInversion: undefined, dreamboothPrior: undefined, dreamboothNoPrior: undefined });
    expect(alone.find((row) => row[0].startsWith('pivotal tuning'))!.slice(2)).toEqual(['', '']);
    expect(alone.find((row) => row[0].startsWith('samples on'))).toEqual([`samples on a training photo's background colour (black, purple, yellow)`, 'baseline 30%, pivotal 40%', '', '']);
    // The report page shows the new runs' grids, and the photos with their masks.
    expect(benchStrips(r).map((s) => s.file)).toEqual([
      'baseline.png',
      'textual-inversion.png',
      'dreambooth-prior.png',
      'dreambooth-prior-class-prompt.png',
      'dreambooth-no-prior.png',
      'dreambooth-no-prior-class-prompt.png',
      'pivotal.png',
      'pivotal-class-prompt.png',
      'masked-photos.png',
      'textual-inversion-masked.png',
    ]);
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
      [['--only', 'ti,gan'], /--only ti,gan: give a comma-separated list of vae, prompts, ti, dreambooth, pivotal, masked/],
      [['--pivotal-rank', '0'], /--pivotal-rank 0: give a positive whole number/],
      [['--pivotal-lr=-1'], /--pivotal-lr -1: give a positive number/],
      [['--pivotal-ti-fraction', '1'], /--pivotal-ti-fraction 1: give a fraction/],
      [['--pivotal-ti-fraction', '0'], /--pivotal-ti-fraction 0 would leave the embedding untrained/],
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
    expect(parseBenchArgs(['--model', TINY_SD_A, '--seed', '4'])).toMatchObject({ seed: 4, out: path.join('runs', 'bench-concepts-seed4'), dbMode: 'full', only: ['vae', 'prompts', 'ti', 'dreambooth', 'pivotal', 'masked'] });
    expect(parseBenchArgs(['--model', TINY_SD_A, '--only', 'pivotal,masked']).only).toEqual(['pivotal', 'masked']);
    // Pivotal tuning defaults to the DreamBooth rows' steps; its flags override one setting each.
    expect(BENCH_DEFAULTS.pivotal.steps).toBe(BENCH_DEFAULTS.dbSteps);
    expect(parseBenchArgs(['--model', TINY_SD_A]).pivotal).toEqual(BENCH_DEFAULTS.pivotal);
    const pivotal = ['--pivotal-steps', '50', '--pivotal-lr', '2e-3', '--pivotal-rank', '4', '--pivotal-ti-lr', '5e-4', '--pivotal-ti-fraction', '0.25'];
    expect(parseBenchArgs(['--model', TINY_SD_A, ...pivotal]).pivotal).toEqual({ steps: 50, lr: 2e-3, rank: 4, tiLr: 5e-4, tiFraction: 0.25 });
    expect(parseBenchArgs(['--model', TINY_SD_A, '--only', 'ti, vae']).only).toEqual(['ti', 'vae']);
    expect(parseBenchArgs(['--model', TINY_SD_A]).dbTextEncoder).toBe(true);
    expect(parseBenchArgs(['--model', TINY_SD_A, '--db-frozen-text-encoder']).dbTextEncoder).toBe(false);
  });
});
