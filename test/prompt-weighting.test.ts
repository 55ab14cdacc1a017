/**
 * Weighted and long prompts against diffusers' community long-prompt-weighting pipeline
 * (fixtures/tiny-sd-a/reference/editing.* `lpw.*`: A1111's emphasis parsed, chunks of 75 tokens,
 * the "Original" mean restore, then a 10-step DDIM generation), and the layouts and schedules
 * painter adds where that pipeline has none (BREAK, A1111's comma backtrack and per-chunk mean,
 * prompt editing in the loop).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { disposeModel, type StableDiffusion } from '../src/core/model.js';
import { clipTextForward } from '../src/core/models/clip-text.js';
import { applyEmbeddings } from '../src/core/embeddings.js';
import { unetForward } from '../src/core/models/unet.js';
import { decodeLatents, denoise, denoiseAll } from '../src/core/pipeline/text-to-image.js';
import { promptChunks } from '../src/core/prompt/chunks.js';
import { disposeConditioning, embedsAt, encodeRunConditioning } from '../src/core/prompt/conditioning.js';
import { chunkPrompts, encodePromptSet, promptIdRows } from '../src/core/prompt/encode.js';
import { createScheduler } from '../src/core/schedulers/index.js';
import { parsePythonJson } from '../src/io/load-weights.js';
import { loadModel } from '../src/io/load-model.js';
import { loadReference, nchwToNhwc, nhwcToNchw, ref, relError, TINY_SD_A, useBackend } from './helpers.js';

interface LpwCase {
  prompt: string;
  negative_prompt: string;
  chunks: number;
}
const EDITING = parsePythonJson(fs.readFileSync(path.join(TINY_SD_A, 'reference', 'editing.json'), 'utf8')) as { cases: Record<string, LpwCase> };

let model: StableDiffusion;
let R: Map<string, tf.Tensor>;

beforeAll(async () => {
  await useBackend();
  model = loadModel(TINY_SD_A);
  R = loadReference('editing.safetensors');
});
afterAll(() => {
  disposeModel(model);
  tf.dispose([...R.values()]);
});

const ints = (key: string) => Array.from(ref(R, key).dataSync(), Number);
const floats = (key: string) => Array.from(ref(R, key).dataSync());

/** lpw's padded ids [BOS, tokens, pads, EOS] (75k + 2) cut into its k chunks of 77. */
function lpwChunks(ids: number[], k: number, bos: number, eos: number): number[][] {
  return Array.from({ length: k }, (_, j) => {
    const c = ids.slice(75 * j, 75 * j + 77);
    c[0] = bos;
    c[76] = eos;
    return c;
  });
}

describe('long-prompt weighting matches diffusers (lpw_stable_diffusion)', () => {
  it.each(['lpw.weighted', 'lpw.long'])('%s: token ids and weights per chunk', (name) => {
    const info = EDITING.cases[name]!;
    const [p, n] = chunkPrompts(model, [info.prompt, info.negative_prompt], 'lpw');
    const { bosTokenId: bos, eosTokenId: eos } = model.tokenizer;
    expect(p!.ids).toEqual(lpwChunks(ints(`${name}.input_ids`), info.chunks, bos, eos));
    expect(n!.ids).toEqual(lpwChunks(ints(`${name}.negative_input_ids`), info.chunks, bos, eos));
    const close = (a: number[], b: number[]) => a.forEach((v, i) => expect(v).toBeCloseTo(b[i]!, 6));
    close(p!.weights.flat(), floats(`${name}.weights`));
    close(n!.weights.flat(), floats(`${name}.negative_weights`));
  });

  it.each(['lpw.weighted', 'lpw.long'])('%s: embeddings before and after emphasis within 1e-4', (name) => {
    const info = EDITING.cases[name]!;
    const [p, n] = chunkPrompts(model, [info.prompt, info.negative_prompt], 'lpw');
    const unweighted = (rows: number[][]) => tf.tidy(() => clipTextForward(model.textEncoder.params, model.textEncoder.config, rows).lastHiddenState.reshape([1, -1, 32]));
    const [up, un] = [unweighted(p!.ids), unweighted(n!.ids)];
    expect(relError(up, ref(R, `${name}.prompt_embeds_unweighted`))).toBeLessThan(1e-4);
    expect(relError(un, ref(R, `${name}.negative_prompt_embeds_unweighted`))).toBeLessThan(1e-4);
    const [ep, en] = encodePromptSet(model, [info.prompt, info.negative_prompt]);
    expect(ep!.shape).toEqual([1, 77 * info.chunks, 32]);
    expect(relError(ep!, ref(R, `${name}.prompt_embeds`))).toBeLessThan(1e-4);
    expect(relError(en!, ref(R, `${name}.negative_prompt_embeds`))).toBeLessThan(1e-4);
    tf.dispose([up, un, ep!, en!]);
  });

  it.each(['lpw.weighted', 'lpw.long'])('%s: the 10-step DDIM generation, latents 1e-3 per step, image 2/255', (name) => {
    const info = EDITING.cases[name]!;
    const conditioning = encodeRunConditioning(model, info.prompt, info.negative_prompt, 10);
    const scheduler = createScheduler('ddim', model.scheduler, 10);
    const latents = nchwToNhwc(ref(R, 'input.latents'));
    const perStep = R.get(`${name}.latents_per_step`);
    const loop = denoise(model, { scheduler, conditioning, guidance: 7.5, latents });
    let r = loop.next();
    while (!r.done) {
      if (perStep) {
        const step = r.value.step;
        const err = tf.tidy(() => relError(nhwcToNchw(r.value.latents), perStep.slice([step], [1]).reshape(perStep.shape.slice(1))));
        expect(err, `step ${step}`).toBeLessThan(1e-3);
      }
      r = loop.next();
    }
    const image = decodeLatents(model, r.value);
    expect(relError(nhwcToNchw(r.value), ref(R, `${name}.final_latents`))).toBeLessThan(1e-3);
    const diff = tf.tidy(() => tf.max(tf.abs(tf.sub(nhwcToNchw(image), ref(R, `${name}.image`)))).dataSync()[0]! * 255);
    expect(diff).toBeLessThan(2);
    tf.dispose([image, r.value, latents]);
    scheduler.dispose();
    disposeConditioning(conditioning);
  });

  it('plain prompts of up to 75 tokens keep the plain encoding, bit for bit', () => {
    const prompts = ['a cute cat sitting on a red chair', 'blurry, low quality'];
    const [p, n] = encodePromptSet(model, prompts);
    const plain = tf.tidy(() => clipTextForward(model.textEncoder.params, model.textEncoder.config, promptIdRows(model, prompts)).lastHiddenState);
    expect(Array.from(tf.concat([p!, n!], 0).dataSync())).toEqual(Array.from(plain.dataSync()));
    expect(relError(p!, ref(R, 'text.edit.prompt_embeds'))).toBeLessThan(1e-4);
    expect(relError(n!, ref(R, 'text.edit.negative_prompt_embeds'))).toBeLessThan(1e-4);
    tf.dispose([p!, n!, plain]);
  });
});

describe('chunk layouts', () => {
  const tok = () => model.tokenizer;
  const words = (n: number, sep = ' ') => Array.from({ length: n }, () => 'cat').join(sep);

  it('BREAK closes the chunk in progress; a prompt of 76 tokens takes two chunks', () => {
    const c = promptChunks(tok(), 'a cat BREAK a dog', 77, 'lpw');
    expect(c.ids).toHaveLength(2);
    const cat = c.ids[0]![2]!;
    expect(c.ids[0]!.slice(0, 4)).toEqual([tok().bosTokenId, c.ids[1]![1], cat, tok().padTokenId]);
    expect(c.ids.every((row) => row.length === 77 && row[76] === tok().eosTokenId)).toBe(true);
    expect(promptChunks(tok(), words(75), 77, 'lpw').ids).toHaveLength(1);
    expect(promptChunks(tok(), words(76), 77, 'lpw').ids).toHaveLength(2);
    // 'none' reads BREAK and brackets as words.
    expect(promptChunks(tok(), 'a cat BREAK a dog', 77, 'none').ids).toHaveLength(1);
  });

  it("a1111 moves the words after the last comma into the next chunk; lpw cuts at 75", () => {
    const prompt = `${words(70)}, ${words(10)}`;
    const lpw = promptChunks(tok(), prompt, 77, 'lpw');
    const a1111 = promptChunks(tok(), prompt, 77, 'a1111');
    const comma = a1111.ids[0]![71];
    expect(lpw.ids[0]!.slice(1, 76).filter((id) => id !== tok().padTokenId)).toHaveLength(75);
    // A1111: 70 cats and the comma, then padding; the 10 cats start the next chunk.
    expect(a1111.ids[0]!.slice(72, 76)).toEqual([tok().padTokenId, tok().padTokenId, tok().padTokenId, tok().padTokenId]);
    expect(a1111.ids[1]!.slice(1, 11)).toEqual(new Array(10).fill(a1111.ids[0]![1]));
    expect(lpw.ids[0]![71]).toBe(comma);
  });

  it('weights apply per token; the mean is restored over the prompt (lpw) or per chunk (a1111)', () => {
    const prompt = `(cat:1.5) ${words(80)}`;
    const [lpw] = encodePromptSet(model, [prompt], { emphasis: 'lpw' });
    const [a1111] = encodePromptSet(model, [prompt], { emphasis: 'a1111' });
    const [plain] = encodePromptSet(model, [`cat ${words(80)}`], { emphasis: 'lpw' });
    const means = (t: tf.Tensor) => tf.tidy(() => Array.from(t.reshape([2, 77 * 32]).mean(1).dataSync()));
    const [pm, lm, am] = [means(plain!), means(lpw!), means(a1111!)];
    // Per chunk the a1111 means equal the unweighted ones; lpw only keeps the overall mean.
    am.forEach((m, i) => expect(m).toBeCloseTo(pm[i]!, 5));
    expect((lm[0]! + lm[1]!) / 2).toBeCloseTo((pm[0]! + pm[1]!) / 2, 5);
    expect(Math.abs(lm[1]! - pm[1]!)).toBeGreaterThan(1e-6);
    tf.dispose([lpw!, a1111!, plain!]);
  });

  it('a multi-vector embedding inside a weighted span: every vector takes the weight', () => {
    const vectors = Float32Array.from({ length: 3 * 32 }, (_, i) => Math.sin(i));
    const applied = applyEmbeddings(model, [{ token: '<trio>', vectors, shape: [3, 32] }]);
    try {
      const ids = applied.tokens[0]!.ids;
      const c = promptChunks(applied.model.tokenizer, 'a photo of (<trio>:1.4), red', 77, 'lpw');
      const at = c.ids[0]!.indexOf(ids[0]!);
      expect(c.ids[0]!.slice(at, at + 3)).toEqual(ids);
      expect(c.weights[0]!.slice(at - 1, at + 4)).toEqual([1, 1.4, 1.4, 1.4, 1]);
      const [weighted, plain] = encodePromptSet(applied.model, ['a photo of (<trio>:1.4), red', 'a photo of <trio>, red']);
      expect(relError(weighted!, plain!)).toBeGreaterThan(1e-3);
      tf.dispose([weighted!, plain!]);
    } finally {
      applied.dispose();
    }
  });

  it('a negative prompt is padded to the prompt\'s chunk count', () => {
    const [p, n] = encodePromptSet(model, [words(100), 'blurry']);
    expect(p!.shape).toEqual([1, 154, 32]);
    expect(n!.shape).toEqual([1, 154, 32]);
    tf.dispose([p!, n!]);
  });
});

describe('prompt editing in the denoising loop', () => {
  it('[cat:dog:2] conditions evaluations 0–2 on "cat" and 3 on "dog", as A1111 picks them', () => {
    const steps = 4;
    const c = encodeRunConditioning(model, 'a [cat:dog:2]', 'blurry', steps);
    expect(c.prompt.map((e) => [e.endAtStep, e.text])).toEqual([
      [2, 'a cat'],
      [4, 'a dog'],
    ]);
    expect(embedsAt(c.prompt, 2)).toBe(c.prompt[0]!.embeds);
    expect(embedsAt(c.prompt, 3)).toBe(c.prompt[1]!.embeds);
    const latents = nchwToNhwc(ref(R, 'input.latents'));
    const viaLoop = denoiseAll(model, { scheduler: createScheduler('ddim', model.scheduler, steps), conditioning: c, guidance: 7.5, latents });
    // The same run written out by hand, switching the prompt after evaluation 2.
    const scheduler = createScheduler('ddim', model.scheduler, steps);
    let x = tf.clone(latents) as tf.Tensor4D;
    scheduler.timesteps.forEach((t, i) => {
      const next = tf.tidy(() => {
        const context = tf.concat([c.negative![0]!.embeds, i <= 2 ? c.prompt[0]!.embeds : c.prompt[1]!.embeds], 0) as tf.Tensor3D;
        const pred = unetForward(model.unet.params, model.unet.config, scheduler.scaleModelInput(tf.concat([x, x], 0), t) as tf.Tensor4D, t, context);
        const [u, cc] = tf.split(pred, 2, 0);
        return scheduler.step(tf.add(u!, tf.mul(tf.sub(cc!, u!), 7.5)), t, x).prevSample as tf.Tensor4D;
      });
      x.dispose();
      x = next;
    });
    expect(relError(viaLoop, x)).toBeLessThan(1e-6);
    tf.dispose([viaLoop, x, latents]);
    disposeConditioning(c);
  });
});
