/**
 * painter-mini's text-encoder stage (recipes/painter-mini/text-pretrain.ts): the head targets follow what a
 * caption says, and training on captions alone teaches the states to tell the objects apart.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Rng } from '../../../src/core/random.js';
import { MINI_SIZES, miniConfigs } from '../mini-config.js';
import { buildMiniBpe, PRETRAIN_DEFAULTS, type PretrainSettings } from '../pretrain.js';
import { captionBatch, captionTargets, TEXT_HEAD_NAMES, TEXT_HEADS, trainTextEncoder } from '../text-pretrain.js';
import { writeMiniTokenizer } from '../tokenizer-files.js';
import { backgroundNoun, caption, OBJECT_KINDS, sampleScene, sceneForSubject } from '../world.js';
import { useBackend } from '../../../test/helpers.js';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'painter-text-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));
beforeAll(() => useBackend());

describe('caption targets', () => {
  it('read the canonical caption: every attribute said', () => {
    const subject = { object: 'cat', colour: 'red', pattern: 'striped', patternColour: 'white', features: [] } as const;
    const scene = sceneForSubject(subject, new Rng(1), { size: 'small', position: 'left', background: { kind: 'stripes', colour: 'blue', colour2: 'yellow' } });
    const text = caption(scene);
    expect(text).toBe('a small red cat with white stripes on a blue and yellow striped background');
    const t = captionTargets(scene, text);
    const name = (h: keyof typeof TEXT_HEADS) => TEXT_HEADS[h][t[h]];
    expect([name('object'), name('colour'), name('pattern'), name('patternColour'), name('background'), name('backgroundColour'), name('backgroundColour2'), name('size'), name('position')]).toEqual(
      ['cat', 'red', 'striped', 'white', 'stripes', 'blue', 'yellow', 'small', 'not said'],
    );
  });

  it('mark as "not said" exactly what a varied caption leaves out', () => {
    const rng = new Rng(7);
    const seen = { size: new Set<number>(), position: new Set<number>(), patternColour: new Set<number>() };
    for (let i = 0; i < 400; i++) {
      const scene = sampleScene(rng);
      const text = caption(scene, rng);
      const t = captionTargets(scene, text);
      for (const h of TEXT_HEAD_NAMES) expect(t[h], `${h} of "${text}"`).toBeGreaterThanOrEqual(0);
      expect(t.size === 0, text).toBe(!/\b(small|little|large|big)\b/.test(text));
      if (t.size > 0) expect(TEXT_HEADS.size[t.size] === 'small', text).toBe(scene.size === 'small');
      expect(t.position === 0, text).toBe(!/(left|right|middle|centre)/.test(text));
      if (t.position > 0) expect(TEXT_HEADS.position[t.position], text).toBe(scene.position);
      const pc = scene.subject.patternColour;
      const subjectPart = text.slice(0, text.indexOf(backgroundNoun(scene.background)));
      expect(t.patternColour > 0, text).toBe(pc !== null && subjectPart.includes(` ${pc} `));
      seen.size.add(t.size);
      seen.position.add(t.position);
      seen.patternColour.add(t.patternColour > 0 ? 1 : 0);
    }
    expect(seen.size.size).toBe(3);
    expect(seen.position.size).toBe(4);
    expect(seen.patternColour.size).toBe(2);
  });
});

describe('trainTextEncoder (small scale)', () => {
  it('learns to read the object from the caption: loss falls, accuracy far above chance', async () => {
    const s: PretrainSettings = { ...PRETRAIN_DEFAULTS, seed: 2, runDir: path.join(tmp, 'run'), textSteps: 100, textBatch: 32, textLr: 3e-3, warmupSteps: 0, checkpointEvery: 1000, bpeCaptions: 400, vocabSize: 600 };
    const bpe = buildMiniBpe(s);
    const tokenizer = await writeMiniTokenizer(bpe, path.join(s.runDir, 'tokenizer'));
    const sizes = { ...MINI_SIZES, textHidden: 32, textLayers: 1, textHeads: 2, textIntermediate: 64 };
    const configs = miniConfigs(sizes, { vocabSize: Object.keys(bpe.vocab).length, bosTokenId: bpe.vocab['<|startoftext|>']!, eosTokenId: bpe.vocab['<|endoftext|>']! });
    const losses: number[] = [];
    const r = await trainTextEncoder(s, configs, tokenizer, { onStep: (_, st) => void losses.push(st.loss) });
    for (const t of r.params.values()) t.dispose();
    expect(losses).toHaveLength(100);
    const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
    expect(mean(losses.slice(-10))).toBeLessThan(0.75 * mean(losses.slice(0, 10)));
    // Chance is 10% for the object and the colour.
    expect(r.summary.accuracy!.object).toBeGreaterThan(0.35);
    expect(r.summary.accuracy!.colour).toBeGreaterThan(0.35);
    expect(fs.existsSync(path.join(s.runDir, 'text', 'text_encoder', 'model.safetensors'))).toBe(true);
    // A batch's ids and targets line up: one row per caption.
    const b = captionBatch(new Rng(3), 5, tokenizer, 40);
    expect(b.ids).toHaveLength(200);
    expect(b.targets.object).toHaveLength(5);
    expect(OBJECT_KINDS.length).toBe(TEXT_HEADS.object.length);
  }, 120_000);
});
