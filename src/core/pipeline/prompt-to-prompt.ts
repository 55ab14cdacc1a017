/**
 * Prompt-to-Prompt (Hertz et al. 2022): two prompts denoised together from the same noise, the
 * second one's attention maps taken from the first where the edit says so, so that the picture
 * keeps its layout and changes what the words changed. Matches diffusers' community
 * Prompt2PromptPipeline: for the first ⌊crossReplace·(steps+1)⌋ steps the edited prompt's
 * cross-attention is the source's mapped onto its tokens — a word swap (`replace`, prompts of
 * as many words), an aligned refinement (`refine`, words added or removed) — or the source's
 * reweighted per word (`reweight`, applied in those steps only, as the pipeline does); for the
 * first ⌊selfReplace·steps⌋ steps its self-attention maps of at most 16×16 positions are the
 * source's. Only the conditional branch of classifier-free guidance is edited. With a LocalBlend
 * (local-blend.ts) the control also keeps the cross-attention maps it needs and blends the latents
 * after every step.
 */
import * as tf from '@tensorflow/tfjs';
import { PainterError } from '../../errors.js';
import type { AttentionControl, AttentionSite } from '../models/attention-control.js';
import { encode, type ClipTokenizer } from '../tokenizer/clip-tokenizer.js';
import { placesOf, wordTokenIndices } from './prompt-words.js';

export { placesOf, wordTokenIndices } from './prompt-words.js';
import type { LocalBlend } from './local-blend.js';

export type PromptToPromptEdit = 'replace' | 'refine' | 'reweight';

export interface PromptToPromptSettings {
  source: string;
  target: string;
  /** Fraction of the steps whose cross-attention is controlled (default 0.4). */
  crossReplace: number;
  /** Fraction of the steps whose self-attention is the source's (default 0.4). */
  selfReplace: number;
  /** Words of the target whose attention is scaled (reweighting). */
  reweight?: { word: string; weight: number }[];
  steps: number;
  /** The token length of the encoded prompts (77). */
  length: number;
}

/** Self-attention maps with more query positions than this keep their own (the pipeline's 16²). */
const SELF_REPLACE_MAX_QUERIES = 16 * 16;

/** The word swap's token map [L, L]: source token i → target token j (split words share evenly). */
export function replacementMapper(tok: ClipTokenizer, source: string, target: string, length: number): Float32Array {
  const wx = source.split(' ');
  const wy = target.split(' ');
  if (wx.length !== wy.length) throw new PainterError(`a word swap needs prompts of as many words; "${source}" has ${wx.length}, "${target}" ${wy.length}`);
  const replaced = wy.flatMap((w, i) => (w !== wx[i] ? [i] : []));
  const src = replaced.map((i) => wordTokenIndices(tok, source, [i]));
  const dst = replaced.map((i) => wordTokenIndices(tok, target, [i]));
  const m = new Float32Array(length * length);
  let i = 0;
  let j = 0;
  let k = 0;
  while (i < length && j < length) {
    if (k < src.length && src[k]![0] === i) {
      const [s, d] = [src[k]!, dst[k]!];
      // Token to token when the words split alike; else every source token spread over the target's.
      if (s.length === d.length) s.forEach((a, n) => (m[a * length + d[n]!] = 1));
      else for (const a of s) for (const b of d) m[a * length + b] = 1 / d.length;
      k++;
      i += s.length;
      j += d.length;
    } else if (k < src.length) {
      m[i * length + j] = 1;
      i++;
      j++;
    } else {
      // The pipeline maps j to j past the last swapped word (i and j stay together from there on).
      m[j * length + j] = 1;
      i++;
      j++;
    }
  }
  return m;
}

/**
 * The refinement's alignment of the target's tokens to the source's (global alignment of the id
 * sequences: match 1, mismatch −1, gap 0, ties broken left, up, diagonal as the pipeline does):
 * `mapper[j]` the source token of target token j (−1: none), `alphas[j]` 1 where there is one.
 */
export function refinementMapper(tok: ClipTokenizer, source: string, target: string, length: number): { mapper: Int32Array; alphas: Float32Array } {
  const x = encode(tok, source, { padding: 'none', truncation: false }).ids;
  const y = encode(tok, target, { padding: 'none', truncation: false }).ids;
  const [nx, ny] = [x.length, y.length];
  const score = new Int32Array((nx + 1) * (ny + 1));
  const trace = new Int8Array((nx + 1) * (ny + 1));
  const at = (i: number, j: number) => i * (ny + 1) + j;
  for (let j = 1; j <= ny; j++) trace[at(0, j)] = 1;
  for (let i = 1; i <= nx; i++) trace[at(i, 0)] = 2;
  trace[at(0, 0)] = 4;
  for (let i = 1; i <= nx; i++) {
    for (let j = 1; j <= ny; j++) {
      const left = score[at(i, j - 1)]!;
      const up = score[at(i - 1, j)]!;
      const diag = score[at(i - 1, j - 1)]! + (x[i - 1] === y[j - 1] ? 1 : -1);
      const best = Math.max(left, up, diag);
      score[at(i, j)] = best;
      trace[at(i, j)] = best === left ? 1 : best === up ? 2 : 3;
    }
  }
  const pairs: [number, number][] = [];
  for (let i = nx, j = ny; i > 0 || j > 0; ) {
    const t = trace[at(i, j)];
    if (t === 3) pairs.push([--j, --i]);
    else if (t === 1) pairs.push([--j, -1]);
    else if (t === 2) i--;
    else break;
  }
  pairs.reverse();
  const mapper = new Int32Array(length);
  const alphas = new Float32Array(length).fill(1);
  pairs.forEach(([, i], j) => {
    mapper[j] = i;
    alphas[j] = i === -1 ? 0 : 1;
  });
  for (let j = pairs.length; j < length; j++) mapper[j] = ny + (j - pairs.length);
  return { mapper, alphas };
}

/** Per-token weights of the target: each reweighted word's tokens get its weight, the rest 1. */
export function equalizer(tok: ClipTokenizer, text: string, words: readonly { word: string; weight: number }[], length: number): Float32Array {
  const e = new Float32Array(length).fill(1);
  for (const { word, weight } of words) {
    const inds = wordTokenIndices(tok, text, placesOf(text, word));
    if (inds.length === 0) throw new PainterError(`--reweight ${word}: "${word}" is not a word of the prompt "${text}" (words are split at spaces)`);
    for (const i of inds) e[i] = weight;
  }
  return e;
}

/** The edit two prompts ask for: a word swap for as many words, else a refinement; the same prompt reweights. */
export function chooseEdit(source: string, target: string, reweight: boolean): PromptToPromptEdit {
  if (source === target) {
    if (!reweight) throw new PainterError('--p2p: the target prompt is the source prompt; change a word, add words, or give --reweight WORD=F');
    return 'reweight';
  }
  return source.split(' ').length === target.split(' ').length ? 'replace' : 'refine';
}

/** The attention hook of one Prompt-to-Prompt generation: set `step` before each UNet call. */
export class PromptToPromptControl implements AttentionControl {
  readonly editType: PromptToPromptEdit;
  step = 0;
  /** Local blending after each scheduler step, when the control has it. */
  readonly afterStep?: (latents: tf.Tensor4D) => tf.Tensor4D;
  private readonly crossSteps: number;
  private readonly selfSteps: number;
  private readonly replaceMap?: tf.Tensor2D;
  private readonly refineMap?: { index: tf.Tensor1D; alphas: tf.Tensor1D };
  private readonly weights?: tf.Tensor1D;

  constructor(
    tok: ClipTokenizer,
    s: PromptToPromptSettings,
    /** Whether the UNet batch is [uncond…, cond…] (classifier-free guidance). */
    private readonly guided: boolean,
    /** Local blending (owned: disposed with the control); without it the latents are not touched. */
    private readonly blend?: LocalBlend,
  ) {
    for (const [flag, v] of [
      ['--cross-replace', s.crossReplace],
      ['--self-replace', s.selfReplace],
    ] as const) {
      if (!(v >= 0 && v <= 1)) throw new PainterError(`${flag} must be a fraction of the steps in [0, 1]; got ${v}`);
    }
    const reweight = (s.reweight ?? []).length > 0;
    this.editType = chooseEdit(s.source, s.target, reweight);
    // The pipeline's cross_replace_alpha has steps + 1 rows; self-replacement counts steps.
    this.crossSteps = Math.floor(s.crossReplace * (s.steps + 1));
    this.selfSteps = Math.floor(s.selfReplace * s.steps);
    const L = s.length;
    if (this.editType === 'replace') this.replaceMap = tf.tensor2d(replacementMapper(tok, s.source, s.target, L), [L, L]);
    if (this.editType === 'refine') {
      const r = refinementMapper(tok, s.source, s.target, L);
      // A missing source token (−1) reads the last position, as torch's negative index; its alpha is 0.
      this.refineMap = { index: tf.tensor1d(Int32Array.from(r.mapper, (i) => (i < 0 ? L + i : i)), 'int32'), alphas: tf.tensor1d(r.alphas) };
    }
    if (reweight) this.weights = tf.tensor1d(equalizer(tok, s.target, s.reweight!, L));
    if (blend) this.afterStep = (latents) => blend.apply(latents, this.step);
  }

  /** The source's cross-attention carried onto the target's tokens (before the time mix). */
  private carried(base: tf.Tensor, own: tf.Tensor): tf.Tensor {
    let r = base;
    if (this.replaceMap) r = tf.matMul(base, this.replaceMap);
    if (this.refineMap) r = tf.add(tf.mul(tf.gather(base, this.refineMap.index, 3), this.refineMap.alphas), tf.mul(own, tf.sub(1, this.refineMap.alphas)));
    if (this.weights) r = tf.mul(r, this.weights);
    return r;
  }

  edit(probs: tf.Tensor, site: AttentionSite): tf.Tensor {
    const selfTurn = site.kind === 'self' && this.step < this.selfSteps && site.height * site.width <= SELF_REPLACE_MAX_QUERIES;
    const crossTurn = site.kind === 'cross';
    if (!selfTurn && !crossTurn) return probs;
    return tf.tidy(() => {
      const b = probs.shape[0]!;
      const half = this.guided ? b / 2 : 0;
      const cond = half ? probs.slice([half], [-1]) : probs;
      if (cond.shape[0] !== 2) throw new Error(`Prompt-to-Prompt: ${cond.shape[0]} conditional rows; it edits a pair of prompts`);
      const base = cond.slice([0], [1]);
      const own = cond.slice([1], [1]);
      let next: tf.Tensor;
      if (selfTurn) next = base;
      else if (this.step < this.crossSteps) next = this.carried(base, own);
      else next = own;
      const edited = tf.concat([base, next], 0);
      if (crossTurn) this.blend?.record(edited, site);
      return half ? tf.concat([probs.slice([0], [half]), edited], 0) : edited;
    });
  }

  dispose(): void {
    tf.dispose([this.replaceMap ?? [], this.refineMap?.index ?? [], this.refineMap?.alphas ?? [], this.weights ?? []].flat());
    this.blend?.dispose();
  }
}
