/**
 * Prompt-to-Prompt local blending (LocalBlend of diffusers' community Prompt2PromptPipeline): the
 * mask from known attention maps against a hand computation, the blended latents equal to the
 * source's outside the mask at every step on tiny-sd-a, nothing changed without it, and the CLI's
 * one-line usage errors.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { disposeModel, type StableDiffusion } from '../src/core/model.js';
import { LocalBlend, localBlendLayers } from '../src/core/pipeline/local-blend.js';
import { PromptToPromptControl, wordTokenIndices } from '../src/core/pipeline/prompt-to-prompt.js';
import { denoise, encodePrompts } from '../src/core/pipeline/text-to-image.js';
import { setAttentionSliceBytes } from '../src/core/ops.js';
import { Rng } from '../src/core/random.js';
import { createScheduler } from '../src/core/schedulers/index.js';
import { loadModel } from '../src/io/load-model.js';
import { resolveConfig } from '../src/options/resolve.js';
import { FIXTURES, runCli, TINY_SD_A, useBackend } from './helpers.js';

const SOURCE = 'a photo of a cat on a green background';
const TARGET = 'a photo of a dog on a green background';
const L = 77;

let model: StableDiffusion;
let tmp: string;

beforeAll(async () => {
  await useBackend();
  model = loadModel(TINY_SD_A);
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'painter-local-blend-'));
});
afterAll(() => {
  disposeModel(model);
  fs.rmSync(tmp, { recursive: true, force: true });
});

/** The pipeline's mask by hand: maps [2][mh·mw] → 3×3 max pool → nearest ×f → ÷ max → > t → union. */
function handMask(maps: number[][], mh: number, mw: number, f: number, t: number): { mask: number[]; margin: number } {
  const h = mh * f;
  const w = mw * f;
  const mask = new Array<number>(h * w).fill(0);
  let margin = Infinity;
  for (const map of maps) {
    const pooled = map.map((_, q) => {
      const [y, x] = [Math.floor(q / mw), q % mw];
      let m = -Infinity;
      for (let dy = -1; dy <= 1; dy++) for (let dx = -1; dx <= 1; dx++) if (y + dy >= 0 && y + dy < mh && x + dx >= 0 && x + dx < mw) m = Math.max(m, map[(y + dy) * mw + x + dx]!);
      return m;
    });
    const peak = Math.max(...pooled);
    for (let y = 0; y < h; y++) {
      for (let x = 0; x < w; x++) {
        const v = pooled[Math.floor(y / f) * mw + Math.floor(x / f)]! / peak;
        margin = Math.min(margin, Math.abs(v - t));
        if (v > t) mask[y * w + x] = 1;
      }
    }
  }
  return { mask, margin };
}

describe('local blend mask', () => {
  it('matches a hand computation from known attention maps, summed over steps and averaged over layers and heads', () => {
    const [mh, mw, heads, f, threshold] = [6, 6, 2, 2, 0.5];
    const layers = ['down_blocks.1.attentions.0.transformer_blocks.0.attn2', 'up_blocks.0.attentions.1.transformer_blocks.0.attn2'];
    const blend = new LocalBlend(model.tokenizer, { source: SOURCE, target: TARGET, words: ['cat', 'dog'], threshold, length: L }, (l) => layers.includes(l));
    const tokens = [wordTokenIndices(model.tokenizer, SOURCE, [4]), wordTokenIndices(model.tokenizer, TARGET, [4])];
    expect(tokens[0]!.length).toBeGreaterThan(0);
    const rng = new Rng(7);
    const q = mh * mw;
    // Σ over steps and (layer, head) of the chosen tokens' probabilities, per prompt and query.
    const sums = [new Array<number>(q).fill(0), new Array<number>(q).fill(0)];
    const latents = tf.tensor4d(rng.normals(2 * mh * f * mw * f * 4), [2, mh * f, mw * f, 4]);
    for (let step = 0; step < 2; step++) {
      for (const layer of layers) {
        // Noise, and a peak where each prompt's object is: the source's top left (moving right at
        // step 1, so that the sum over steps differs from the last step), the target's bottom right.
        const probs = Float32Array.from(rng.normals(2 * heads * q * L), (v, i) => {
          const [p, r] = [Math.floor(i / (heads * q * L)), Math.floor(i / L) % q];
          const peak = p === 0 ? (step === 0 ? r === 0 || r === 1 : r === 4) : r === q - 1;
          return 0.1 * Math.abs(v) + (peak ? 1 : 0);
        });
        for (let p = 0; p < 2; p++) {
          for (let hd = 0; hd < heads; hd++) for (let r = 0; r < q; r++) for (const k of tokens[p]!) sums[p]![r] += probs[((p * heads + hd) * q + r) * L + k]! / (layers.length * heads);
        }
        // The first layer arrives in two slices of query rows (sliced attention), the self-attention and others are ignored.
        const all = tf.tensor4d(probs, [2, heads, q, L]);
        const site = { kind: 'cross' as const, layer, height: mh, width: mw, rowStart: 0 };
        if (layer === layers[0]) {
          blend.record(all.slice([0, 0, 0, 0], [-1, -1, 20, -1]), site);
          blend.record(all.slice([0, 0, 20, 0], [-1, -1, -1, -1]), { ...site, rowStart: 20 });
        } else blend.record(all, site);
        blend.record(all, { ...site, layer: 'mid_block.attentions.0.transformer_blocks.0.attn2' });
        blend.record(all, { ...site, kind: 'self' });
        all.dispose();
      }
      const out = blend.apply(latents, step);
      const { mask, margin } = handMask(sums, mh, mw, f, threshold);
      expect(margin, 'no value at the threshold').toBeGreaterThan(1e-4);
      expect(new Set(mask), 'a mask with both kinds of cells').toEqual(new Set([0, 1]));
      expect(Array.from(blend.mask!.dataSync()), `step ${step}`).toEqual(mask);
      // x_t = x_src + M·(x_t − x_src): the source row unchanged, the edit the source's outside M.
      const [x, y] = [latents.arraySync(), out.arraySync()];
      expect(y[0]).toEqual(x[0]);
      for (let i = 0; i < mh * f; i++) {
        for (let j = 0; j < mw * f; j++) {
          if (mask[i * mw * f + j]) y[1]![i]![j]!.forEach((v, c) => expect(v).toBeCloseTo(x[1]![i]![j]![c]!, 5));
          else expect(y[1]![i]![j]).toEqual(x[0]![i]![j]);
        }
      }
      out.dispose();
    }
    latents.dispose();
    blend.dispose();
  });

  it('reads the down/up-block cross-attention nearest to 16×16, as the pipeline its 16×16 layers of SD at 512²', () => {
    const blocks = (reads: (l: string) => boolean, names: string[]) => names.filter((b) => reads(`${b}.attentions.0.transformer_blocks.0.attn2`));
    // tiny-sd-a (32×32 latents): cross-attention only in down_blocks.1 and up_blocks.0, at 16×16; never the mid block or attn1.
    const tiny = localBlendLayers(model.unet.config, 32, 32);
    expect(blocks(tiny, ['down_blocks.0', 'down_blocks.1', 'up_blocks.0', 'up_blocks.1', 'mid_block'])).toEqual(['down_blocks.1', 'up_blocks.0']);
    expect(tiny('up_blocks.0.attentions.2.transformer_blocks.0.attn1')).toBe(false);
    // SD 1.x's block layout: down_blocks.2 and up_blocks.1 at 512², 768² and 1024², as attention_store["down_cross"][2:4] + ["up_cross"][:3].
    const sd = {
      ...model.unet.config,
      block_out_channels: [320, 640, 1280, 1280],
      down_block_types: ['CrossAttnDownBlock2D', 'CrossAttnDownBlock2D', 'CrossAttnDownBlock2D', 'DownBlock2D'],
      up_block_types: ['UpBlock2D', 'CrossAttnUpBlock2D', 'CrossAttnUpBlock2D', 'CrossAttnUpBlock2D'],
    } as typeof model.unet.config;
    const names = ['down_blocks.0', 'down_blocks.1', 'down_blocks.2', 'up_blocks.1', 'up_blocks.2', 'up_blocks.3', 'mid_block'];
    for (const side of [64, 96, 128]) expect(blocks(localBlendLayers(sd, side, side), names), `${side}×${side} latents`).toEqual(['down_blocks.2', 'up_blocks.1']);
  });
});

describe('local blend in the denoising loop (tiny-sd-a, DDIM 10 steps)', () => {
  /** The pair's latents [2, h, w, C] after every step, and the blend masks, with or without local blending. */
  function run(threshold?: number): { steps: Float32Array[]; masks: Float32Array[]; tensors: number[] } {
    const blend = threshold === undefined ? undefined : new LocalBlend(model.tokenizer, { source: SOURCE, target: TARGET, words: ['cat', 'dog'], threshold, length: L }, localBlendLayers(model.unet.config, 32, 32));
    const control = new PromptToPromptControl(model.tokenizer, { source: SOURCE, target: TARGET, crossReplace: 0.4, selfReplace: 0.4, steps: 10, length: L }, true, blend);
    const promptEmbeds = encodePrompts(model, [SOURCE, TARGET]);
    const negativeEmbeds = encodePrompts(model, ['', '']);
    const latents = tf.tile(tf.tensor4d(new Rng(3).normals(32 * 32 * 4), [1, 32, 32, 4]), [2, 1, 1, 1]) as tf.Tensor4D;
    const out = { steps: [] as Float32Array[], masks: [] as Float32Array[], tensors: [] as number[] };
    const loop = denoise(model, { scheduler: createScheduler('ddim', model.scheduler, 10), promptEmbeds, negativeEmbeds, guidance: 7.5, latents, attentionControl: control });
    let r = loop.next();
    while (!r.done) {
      out.steps.push(r.value.latents.dataSync() as Float32Array);
      if (blend) out.masks.push(blend.mask!.dataSync() as Float32Array);
      out.tensors.push(tf.memory().numTensors);
      r = loop.next();
    }
    control.dispose();
    tf.dispose([r.value, promptEmbeds, negativeEmbeds, latents]);
    return out;
  }
  const once = new Map<number | undefined, ReturnType<typeof run>>();
  /** run(threshold), computed once for the tests that share it (attention unsliced). */
  const cached = (threshold?: number) => once.get(threshold) ?? once.set(threshold, run(threshold)).get(threshold)!;

  it('keeps the source latents outside the mask exactly at every step, the source row bit for bit, and no tensor more per step', () => {
    const plain = cached();
    // tiny-sd-a's random weights attend almost evenly: at the pipeline's 0.3 the mask is every cell.
    const blended = cached(0.8);
    const cells = 32 * 32;
    let edited = 0;
    blended.steps.forEach((x, s) => {
      const mask = blended.masks[s]!;
      for (let p = 0; p < cells; p++) {
        for (let c = 0; c < 4; c++) {
          const [src, tgt] = [x[p * 4 + c]!, x[cells * 4 + p * 4 + c]!];
          if (!mask[p]) expect(tgt, `step ${s} cell ${p}`).toBe(src);
          else if (tgt !== src) edited++;
        }
      }
      // The source is never blended: it is the source of the run without local blending.
      expect(x.subarray(0, cells * 4)).toEqual(plain.steps[s]!.subarray(0, cells * 4));
    });
    const shares = blended.masks.map((m) => m.reduce((a, b) => a + b, 0) / cells);
    expect(Math.min(...shares), 'some cells are the source').toBeLessThan(1);
    expect(edited, 'inside the mask the edit is its own').toBeGreaterThan(0);
    expect(new Set(blended.tensors.slice(1)).size, `tensors per step ${blended.tensors}`).toBe(1);
  });

  it('makes the same masks with attention sliced into rows', () => {
    const whole = cached(0.8);
    // 64 query rows of [4 images, 8 heads, 77 tokens] per slice: every cross-attention map (256 rows) arrives in 4 slices.
    setAttentionSliceBytes(64 * 4 * 8 * 77 * 4);
    let sliced: ReturnType<typeof run>;
    try {
      sliced = run(0.8);
    } finally {
      setAttentionSliceBytes(undefined);
    }
    expect(sliced.masks).toEqual(whole.masks);
    sliced.steps.forEach((x, s) => x.forEach((v, i) => expect(Math.abs(v - whole.steps[s]![i]!), `step ${s}`).toBeLessThan(1e-4)));
  });

  it('is off by default: no option, no blend hook', () => {
    const o = resolveConfig('generate', {});
    expect(o.localBlend).toBeUndefined();
    expect(o.blendThreshold).toBe(0.3);
    expect(resolveConfig('edit', {}).localBlend).toBeUndefined();
    const control = new PromptToPromptControl(model.tokenizer, { source: SOURCE, target: TARGET, crossReplace: 0.4, selfReplace: 0.4, steps: 10, length: L }, true);
    expect(control.afterStep).toBeUndefined();
    control.dispose();
  });
});

describe('painter generate --p2p --local-blend', () => {
  it('writes the pair and records the blend in the edited image', async () => {
    const out = path.join(tmp, 'ok');
    const r = await runCli(['generate', SOURCE, '--p2p', TARGET, '--local-blend', 'cat', '--local-blend', 'dog', '--blend-threshold', '0.5', '--model', TINY_SD_A, '--steps', '2', '--out', out, '--json']);
    expect(r.code, r.stderr).toBe(0);
    const files = (JSON.parse(r.stdout) as { files: { file: string }[] }).files;
    expect(files).toHaveLength(2);
    const info = await runCli(['info', files[1]!.file]);
    expect(info.stdout).toContain('local-blend cat,dog threshold 0.5');
  });

  it('refuses words of neither prompt, and --local-blend without an edit, with one line (exit 2)', async () => {
    const photo = path.join(FIXTURES, 'photos', 'cat', 'chelsea-1.jpg');
    for (const [args, message] of [
      [['generate', SOURCE, '--p2p', TARGET, '--local-blend', 'cat,horse'], /--local-blend horse: not a word of the source prompt "a photo of a cat on a green background" or of the target/],
      [['generate', SOURCE, '--local-blend', 'cat'], /--local-blend blends a Prompt-to-Prompt edit; give --p2p/],
      [['edit', photo, TARGET, '--source', SOURCE, '--local-blend', 'horse'], /--local-blend horse: not a word/],
      [['edit', photo, TARGET, '--local-blend', 'dog'], /give --source/],
    ] as const) {
      const r = await runCli([...args, '--model', TINY_SD_A, '--steps', '2', '--out', path.join(tmp, 'bad')]);
      expect(r.code, r.stderr).toBe(2);
      expect(r.stderr.trim().split('\n')).toHaveLength(1);
      expect(r.stderr).toMatch(message);
    }
  });
});
