/**
 * Prompt-to-Prompt against diffusers' community Prompt2PromptPipeline
 * (fixtures/tiny-sd-a/reference/editing.*, cases p2p.replace / p2p.refine / p2p.reweight): the
 * word positions, the word-swap and refinement maps, the reweighting vector and the step
 * schedule, then the two images from the same noise — latents per step within 1e-3, images
 * within 2/255.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { disposeModel, type StableDiffusion } from '../src/core/model.js';
import { equalizer, PromptToPromptControl, refinementMapper, replacementMapper, wordTokenIndices, type PromptToPromptSettings } from '../src/core/pipeline/prompt-to-prompt.js';
import { decodeLatents, denoise, encodePrompts } from '../src/core/pipeline/text-to-image.js';
import { createScheduler } from '../src/core/schedulers/index.js';
import { PainterError } from '../src/errors.js';
import { loadModel } from '../src/io/load-model.js';
import { parsePythonJson } from '../src/io/load-weights.js';
import { writeSafetensors } from '../src/io/safetensors.js';
import { loadReference, runCli, nchwToNhwc, nhwcToNchw, ref, relError, TINY_SD_A, useBackend } from './helpers.js';

interface P2PCase {
  prompts: [string, string];
  cross_attention_kwargs: { equalizer_words?: string[]; equalizer_strengths?: number[] };
  word_token_indices: Record<string, [number[], number[]]>;
}
const CASES = (parsePythonJson(fs.readFileSync(path.join(TINY_SD_A, 'reference', 'editing.json'), 'utf8')) as { cases: Record<string, P2PCase> }).cases;

let model: StableDiffusion;
let refs: Map<string, tf.Tensor>;

beforeAll(async () => {
  await useBackend();
  model = loadModel(TINY_SD_A);
  refs = loadReference('editing.safetensors');
});
afterAll(() => {
  disposeModel(model);
  tf.dispose([...refs.values()]);
});

const values = (key: string) => Array.from(ref(refs, key).dataSync());
const reweightOf = (c: P2PCase) => (c.cross_attention_kwargs.equalizer_words ?? []).map((word, i) => ({ word, weight: c.cross_attention_kwargs.equalizer_strengths![i]! }));

describe('Prompt-to-Prompt maps', () => {
  it('find the token positions of every word as get_word_inds does', () => {
    for (const name of ['p2p.replace', 'p2p.refine']) {
      const c = CASES[name]!;
      for (const [word, perPrompt] of Object.entries(c.word_token_indices)) {
        c.prompts.forEach((prompt, p) => {
          const places = prompt.split(' ').flatMap((w, i) => (w === word ? [i] : []));
          expect(wordTokenIndices(model.tokenizer, prompt, places), `${name} "${word}" in prompt ${p}`).toEqual(perPrompt[p]);
        });
      }
    }
  });

  it('map a word swap, align a refinement and weight words as the pipeline does', () => {
    const [rs, rt] = CASES['p2p.replace']!.prompts;
    expect(Array.from(replacementMapper(model.tokenizer, rs, rt, 77))).toEqual(values('p2p.replace.mapper'));
    const [fs_, ft] = CASES['p2p.refine']!.prompts;
    const r = refinementMapper(model.tokenizer, fs_, ft, 77);
    expect(Array.from(r.mapper)).toEqual(values('p2p.refine.mapper'));
    expect(Array.from(r.alphas)).toEqual(values('p2p.refine.alphas'));
    const w = CASES['p2p.reweight']!;
    expect(Array.from(equalizer(model.tokenizer, w.prompts[1], reweightOf(w), 77))).toEqual(values('p2p.reweight.equalizer'));
    // cross_replace_alpha: the first ⌊0.4·11⌋ = 4 steps are controlled, for every token.
    const alpha = values('p2p.replace.cross_replace_alpha');
    for (let s = 0; s < 11; s++) expect(new Set(alpha.slice(s * 77, (s + 1) * 77))).toEqual(new Set([s < 4 ? 1 : 0]));
  });

  it('refuses prompts it cannot edit, naming the flag', () => {
    const base: PromptToPromptSettings = { source: 'a cat', target: 'a cat', crossReplace: 0.4, selfReplace: 0.4, steps: 10, length: 77 };
    expect(() => new PromptToPromptControl(model.tokenizer, base, true)).toThrow(PainterError);
    expect(() => new PromptToPromptControl(model.tokenizer, { ...base, target: 'a dog', crossReplace: 1.5 }, true)).toThrow(/--cross-replace must be a fraction/);
    expect(() => new PromptToPromptControl(model.tokenizer, { ...base, reweight: [{ word: 'dog', weight: 2 }] }, true)).toThrow(/--reweight dog: "dog" is not a word of the prompt/);
  });
});

describe('Prompt-to-Prompt generation matches diffusers', () => {
  it.each(['p2p.replace', 'p2p.refine', 'p2p.reweight'])('%s: latents 1e-3, images 2/255', (name) => {
    const c = CASES[name]!;
    const control = new PromptToPromptControl(
      model.tokenizer,
      { source: c.prompts[0], target: c.prompts[1], crossReplace: 0.4, selfReplace: 0.4, reweight: reweightOf(c), steps: 10, length: 77 },
      true,
    );
    const promptEmbeds = encodePrompts(model, [...c.prompts]);
    const negativeEmbeds = encodePrompts(model, ['', '']);
    const perStep = refs.get(`${name}.latents_per_step`);
    const loop = denoise(model, {
      scheduler: createScheduler('ddim', model.scheduler, 10),
      promptEmbeds,
      negativeEmbeds,
      guidance: 7.5,
      latents: nchwToNhwc(ref(refs, `${name}.init_latents`)),
      attentionControl: control,
    });
    let r = loop.next();
    while (!r.done) {
      if (perStep) {
        const i = r.value.step;
        const err = tf.tidy(() => relError(nhwcToNchw(r.value.latents), perStep.slice([i], [1]).reshape(perStep.shape.slice(1))));
        expect(err, `step ${i}`).toBeLessThan(1e-3);
      }
      r = loop.next();
    }
    const final = r.value;
    expect(relError(nhwcToNchw(final), ref(refs, `${name}.final_latents`))).toBeLessThan(1e-3);
    const image = decodeLatents(model, final);
    const err = tf.tidy(() => tf.max(tf.abs(tf.sub(nhwcToNchw(image), ref(refs, `${name}.image`)))).dataSync()[0]! * 255);
    expect(err).toBeLessThan(2);
    control.dispose();
    tf.dispose([promptEmbeds, negativeEmbeds, final, image]);
  });
});

describe('painter generate --p2p', () => {
  let tmp: string;
  beforeAll(() => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'painter-p2p-'));
  });
  afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

  it.each([
    ['p2p.replace', []],
    ['p2p.reweight', ['--reweight', 'cat=2']],
  ] as const)("writes the source and the edited image of diffusers' %s (2/255)", async (name, extra) => {
    const c = CASES[name]!;
    const init = ref(refs, `${name}.init_latents`).slice([0], [1]);
    const latents = path.join(tmp, `${name}.safetensors`);
    await writeSafetensors(latents, { latents: { shape: init.shape, data: init.dataSync() as Float32Array } });
    init.dispose();
    const args = ['generate', c.prompts[0], '--model', TINY_SD_A, '--latents', latents, '--scheduler', 'ddim', '--steps', '10', '--out', path.join(tmp, name), '--json', ...extra];
    if (c.prompts[1] !== c.prompts[0]) args.push('--p2p', c.prompts[1]);
    const r = await runCli(args);
    expect(r.code, r.stderr).toBe(0);
    const files = (JSON.parse(r.stdout) as { files: { file: string; prompt: string }[] }).files;
    expect(files.map((f) => f.prompt)).toEqual(c.prompts);
    for (let i = 0; i < 2; i++) {
      const { data } = await sharp(files[i]!.file).raw().toBuffer({ resolveWithObject: true });
      const err = tf.tidy(() => {
        const expected = tf.mul(nchwToNhwc(ref(refs, `${name}.image`).slice([i], [1])), 255);
        return tf.max(tf.abs(tf.sub(tf.tensor4d(Float32Array.from(data), [1, 64, 64, 3]), expected))).dataSync()[0]!;
      });
      expect(err, `image ${i}`).toBeLessThanOrEqual(2);
    }
    const info = await runCli(['info', files[1]!.file]);
    expect(info.stdout).toContain(`Prompt-to-Prompt: "source \\"${c.prompts[0]}\\" cross 0.4 self 0.4`);
  });

  it('refuses what it cannot do with one line', async () => {
    for (const [args, message, code] of [
      [['--reweight', 'cat'], /--reweight cat: give WORD=FACTOR/, 2],
      [['--p2p', 'a photo of a cat'], /--p2p: the target prompt is the source prompt/, 1],
      [['--p2p', 'a photo of a dog', '--cross-replace', '2'], /cross-replace/, 2],
    ] as const) {
      const r = await runCli(['generate', 'a photo of a cat', '--model', TINY_SD_A, '--steps', '2', '--out', path.join(tmp, 'bad'), ...args]);
      expect(r.code, r.stderr).toBe(code);
      expect(r.stderr.trim().split('\n')).toHaveLength(1);
      expect(r.stderr).toMatch(message);
    }
  });
});
