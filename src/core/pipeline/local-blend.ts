/**
 * Prompt-to-Prompt's local editing (Hertz et al. 2022, §3.2 and appendix), as diffusers'
 * community Prompt2PromptPipeline does it (`LocalBlend`, `local_blend_words`): after every
 * scheduler step, the cross-attention maps of chosen words — the source prompt's words in the
 * source's maps, the target's in the target's — summed over the steps so far and averaged over the
 * heads of the down/up-block cross-attention layers of about 16×16 cells (localBlendLayers), are
 * max-pooled (3×3), brought to the latent size (nearest), divided by their maximum and thresholded (0.3) into a mask M, the union
 * of both prompts'; the edited latents outside it are the source's:
 *
 *   x_t ← x_t^src + M ⊙ (x_t − x_t^src)
 *
 * The maps are the ones the values are weighted with — during the cross-replace steps the edited
 * prompt's are the source's mapped onto its tokens — as the pipeline stores them. It blends from
 * the first step, as the pipeline does (the authors' later notebook starts after 20% of the steps).
 */
import * as tf from '@tensorflow/tfjs';
import { PainterError } from '../../errors.js';
import type { AttentionSite } from '../models/attention-control.js';
import type { UNetConfig } from '../models/unet.js';
import type { ClipTokenizer } from '../tokenizer/clip-tokenizer.js';
import { placesOf, wordTokenIndices } from './prompt-words.js';

/** The pipeline's threshold of the max-normalised map. */
export const LOCAL_BLEND_THRESHOLD = 0.3;

/** The pipeline's max-pool radius k = 1: a 3×3 window, stride 1. */
const POOL_RADIUS = 1;

export interface LocalBlendSettings {
  source: string;
  target: string;
  /** Words of the source and/or the target prompt (split at spaces) whose attention marks the edited region. */
  words: readonly string[];
  /** In [0, 1]: where the normalised map exceeds it, the edit keeps its own latents. */
  threshold: number;
  /** The token length of the encoded prompts (77). */
  length: number;
}

/** The one line a local-blend word list is refused with, or undefined when every word is in a prompt. */
export function localBlendProblem(source: string, target: string, words: readonly string[]): string | undefined {
  if (words.length === 0) return '--local-blend: give the words of the object to edit, e.g. --local-blend cat,dog';
  const missing = words.filter((w) => placesOf(source, w).length === 0 && placesOf(target, w).length === 0);
  if (missing.length === 0) return undefined;
  return `--local-blend ${missing.join(',')}: not a word of the source prompt "${source}" or of the target "${target}" (words are split at spaces)`;
}

/** The pipeline's map size: it reads the 16×16 layers of SD at 512² (64×64 latents). */
const MAP_CELLS = 16 * 16;

/** The side of a feature map after a Downsample2D (3×3 conv, stride 2; padding 0 pads one row/column after). */
const downsampled = (side: number, padding: number): number => Math.floor((side + (padding === 0 ? 1 : 2 * padding) - 3) / 2) + 1;

/**
 * The attention layers local blending reads: the cross-attention (attn2) of the down and up blocks
 * (never the mid block) at the level whose maps are nearest to the pipeline's 16×16 for latents of
 * [height, width] — on SD 1.x/2.x at 512² the 16×16 ones, down_blocks.2 and up_blocks.1, as the
 * pipeline's attention_store["down_cross"][2:4] + ["up_cross"][:3] (the same blocks at 768²); on
 * painter-mini's 16×16 latents the full-resolution ones, down_blocks.0 and up_blocks.2 (its 8×8
 * maps hardly follow the object). Of two levels as near, the coarser.
 */
export function localBlendLayers(config: UNetConfig, height: number, width: number): (layer: string) => boolean {
  const levels = config.block_out_channels.length;
  const down = config.down_block_types.flatMap((t, i) => (t === 'CrossAttnDownBlock2D' ? [i] : []));
  const up = config.up_block_types.flatMap((t, j) => (t === 'CrossAttnUpBlock2D' ? [levels - 1 - j] : []));
  const sizes = [[height, width]];
  for (let l = 1; l < levels; l++) sizes.push(sizes[l - 1]!.map((s) => downsampled(s, config.downsample_padding)));
  const distance = (l: number) => Math.abs(Math.log(sizes[l]![0]! * sizes[l]![1]! / MAP_CELLS));
  const candidates = [...new Set([...down, ...up])].sort((a, b) => distance(a) - distance(b) || b - a);
  const level = candidates[0];
  if (level === undefined) throw new PainterError('--local-blend reads the cross-attention of the down and up blocks, which this UNet does not have');
  const prefixes = [...(down.includes(level) ? [`down_blocks.${level}.`] : []), ...(up.includes(level) ? [`up_blocks.${levels - 1 - level}.`] : [])];
  return (layer) => layer.endsWith('.attn2') && prefixes.some((p) => layer.startsWith(p));
}

/**
 * The blend mask [1, h, w, 1] from word maps [2, mh, mw, 1] (source, target): max-pooled,
 * upsampled to the latents' [h, w] (nearest, as F.interpolate), divided by each map's maximum,
 * thresholded, the union of the two.
 */
export function localBlendMask(maps: tf.Tensor4D, size: readonly [number, number], threshold: number): tf.Tensor4D {
  return tf.tidy(() => {
    const pooled = tf.maxPool(maps, 2 * POOL_RADIUS + 1, 1, 'same');
    const up = tf.image.resizeNearestNeighbor(pooled, [size[0], size[1]]);
    const normalised = tf.div(up, tf.max(up, [1, 2], true));
    return tf.cast(tf.any(tf.greater(normalised, threshold), 0, true), 'float32') as tf.Tensor4D;
  });
}

/** The source's latents (row 0) outside the mask, in every row: x^src + M ⊙ (x − x^src). */
export function blendLatents(latents: tf.Tensor4D, mask: tf.Tensor4D): tf.Tensor4D {
  return tf.tidy(() => {
    const source = latents.slice([0], [1]);
    return tf.add(source, tf.mul(mask, tf.sub(latents, source))) as tf.Tensor4D;
  });
}

/** One slice of one layer's word map, [2, rows]: the chosen tokens' probabilities summed over them and the heads. */
interface Recorded {
  layer: string;
  rowStart: number;
  heads: number;
  height: number;
  width: number;
  map: tf.Tensor2D;
}

/** Keeps the word maps of a generation and blends its latents after every step. */
export class LocalBlend {
  /** The mask of the latest step, [1, h, w, 1]: 1 where the edited latents are their own (owned; replaced each step). */
  mask?: tf.Tensor4D;
  private readonly alphas: tf.Tensor4D;
  private readonly threshold: number;
  private recorded: Recorded[] = [];
  /** Σ over the steps so far of the head-averaged word maps [2, mh, mw, 1]. */
  private sum?: tf.Tensor4D;

  constructor(
    tok: ClipTokenizer,
    s: LocalBlendSettings,
    /** Whether a layer's maps are read (localBlendLayers). */
    private readonly reads: (layer: string) => boolean,
  ) {
    const problem = localBlendProblem(s.source, s.target, s.words);
    if (problem) throw new PainterError(problem);
    if (!(s.threshold >= 0 && s.threshold <= 1)) throw new PainterError(`--blend-threshold must be in [0, 1]; got ${s.threshold}`);
    this.threshold = s.threshold;
    // alpha_layers: per prompt, 1 at the tokens of the chosen words it has.
    const alphas = new Float32Array(2 * s.length);
    [s.source, s.target].forEach((text, p) => {
      for (const w of s.words) for (const i of wordTokenIndices(tok, text, placesOf(text, w))) alphas[p * s.length + i] = 1;
    });
    this.alphas = tf.tensor4d(alphas, [2, 1, 1, s.length]);
  }

  /** Conditional rows [2, H, rows, L] of a layer's cross-attention (source, target), as the values see them. */
  record(probs: tf.Tensor, site: AttentionSite): void {
    if (site.kind !== 'cross' || !this.reads(site.layer)) return;
    if (probs.shape[0] !== 2 || probs.shape[3] !== this.alphas.shape[3]) throw new Error(`local blend: attention of shape [${probs.shape}], expected [2, H, rows, ${this.alphas.shape[3]}]`);
    const map = tf.tidy(() => tf.sum(tf.mul(probs, this.alphas), [1, 3]) as tf.Tensor2D);
    this.recorded.push({ layer: site.layer, rowStart: site.rowStart, heads: probs.shape[1]!, height: site.height, width: site.width, map: tf.keep(map) });
  }

  /**
   * After a scheduler step (`step` 0 starts a new image): this step's maps join the sum, the mask
   * is made from it, and the latents [2, h, w, C] are blended. Runs inside the step's tf.tidy.
   */
  apply(latents: tf.Tensor4D, step: number): tf.Tensor4D {
    const recorded = this.recorded;
    this.recorded = [];
    try {
      if (recorded.length === 0) throw new Error('local blend: no cross-attention maps of the blended layers were recorded in this step');
      const { height, width } = recorded[0]!;
      if (recorded.some((r) => r.height !== height || r.width !== width)) throw new Error('local blend: the blended layers have maps of different sizes');
      // Every layer's rows in order (slices of sliced attention), then the mean over all its heads.
      const layers = [...new Set(recorded.map((r) => r.layer))];
      const rows = layers.map((l) => tf.concat(recorded.filter((r) => r.layer === l).sort((a, b) => a.rowStart - b.rowStart).map((r) => r.map), 1));
      const heads = layers.reduce((n, l) => n + recorded.find((r) => r.layer === l)!.heads, 0);
      const mean = tf.div(tf.addN(rows), heads).reshape([2, height, width, 1]) as tf.Tensor4D;
      const sum = step === 0 || !this.sum ? mean : (tf.add(this.sum, mean) as tf.Tensor4D);
      this.sum?.dispose();
      this.sum = tf.keep(sum);
      this.mask?.dispose();
      this.mask = tf.keep(localBlendMask(sum, [latents.shape[1], latents.shape[2]], this.threshold));
      return blendLatents(latents, this.mask);
    } finally {
      tf.dispose(recorded.map((r) => r.map));
    }
  }

  dispose(): void {
    tf.dispose([this.alphas, this.sum ?? [], this.mask ?? [], ...this.recorded.map((r) => r.map)].flat());
    this.sum = undefined;
    this.mask = undefined;
    this.recorded = [];
  }
}
