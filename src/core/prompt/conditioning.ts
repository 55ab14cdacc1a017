/**
 * The conditioning of a whole sampling run: AUTOMATIC1111's prompt editing `[from:to:when]` and
 * alternation `[a|b]` make the prompt a schedule of texts over the steps. Each distinct text is
 * encoded once (with the negative prompt's texts, in one set, so they share a chunk count), and
 * the loop picks the entry in effect at each model evaluation as A1111's
 * reconstruct_cond_batch does: the first entry whose end step is ≥ the 0-based step.
 */
import * as tf from '@tensorflow/tfjs';
import type { StableDiffusion } from '../model.js';
import { encodePromptSet, type PromptEncodingOptions } from './encode.js';
import { entryAt, promptSchedule } from './schedule.js';
import { parsePromptAttention } from './attention.js';
import type { EmphasisMode } from './chunks.js';

export interface ScheduledEmbeds {
  /** The last step (A1111's end_at_step) this entry is used for. */
  endAtStep: number;
  text: string;
  /** [B, L·k, C] */
  embeds: tf.Tensor3D;
}

export interface RunConditioning {
  prompt: ScheduledEmbeds[];
  /** Present when guidance > 1. */
  negative?: ScheduledEmbeds[];
}

/** The entry in effect at 0-based model evaluation `step`. */
export function embedsAt(schedule: readonly ScheduledEmbeds[], step: number): tf.Tensor3D {
  return entryAt(schedule, step).embeds;
}

/**
 * Prompt (and negative prompt, when given) encoded with their edit schedules over `steps`
 * sampling steps. The caller disposes the result with disposeConditioning.
 */
export function encodeRunConditioning(
  model: StableDiffusion,
  prompt: string,
  negative: string | undefined,
  steps: number,
  opts: PromptEncodingOptions = {},
): RunConditioning {
  const literal = opts.emphasis === 'none';
  const schedule = (p: string) => (literal ? [{ endAtStep: steps, text: p }] : promptSchedule(p, steps));
  const positive = schedule(prompt);
  const negatives = negative === undefined ? undefined : schedule(negative);
  const texts = [...new Set([...positive, ...(negatives ?? [])].map((e) => e.text))];
  const states = encodePromptSet(model, texts, opts);
  const byText = new Map(texts.map((t, i) => [t, states[i]!]));
  const entries = (s: { endAtStep: number; text: string }[]) => s.map((e) => ({ endAtStep: e.endAtStep, text: e.text, embeds: byText.get(e.text)! }));
  return negatives ? { prompt: entries(positive), negative: entries(negatives) } : { prompt: entries(positive) };
}

/** Embeddings that stay the same for the whole run (the tensors stay the caller's). */
export function fixedConditioning(prompt: tf.Tensor3D, negative?: tf.Tensor3D): RunConditioning {
  const entry = (embeds: tf.Tensor3D) => [{ endAtStep: Infinity, text: '', embeds }];
  return negative ? { prompt: entry(prompt), negative: entry(negative) } : { prompt: entry(prompt) };
}

/**
 * Parses prompts as encodeRunConditioning will (edits, then emphasis in each text), so a syntax
 * error is reported before any work starts.
 */
export function checkPromptSyntax(prompts: readonly string[], steps: number, emphasis: EmphasisMode = 'lpw'): void {
  if (emphasis === 'none') return;
  for (const p of prompts) for (const e of promptSchedule(p, steps)) parsePromptAttention(e.text);
}

/** Every entry repeated `n` times along the batch (one image per row); new tensors. */
export function tileConditioning(c: RunConditioning, n: number): RunConditioning {
  const cache = new Map<tf.Tensor3D, tf.Tensor3D>();
  const tile = (s: ScheduledEmbeds[]) =>
    s.map((e) => {
      let t = cache.get(e.embeds);
      if (!t) {
        t = tf.tidy(() => tf.tile(e.embeds, [n, 1, 1]) as tf.Tensor3D);
        cache.set(e.embeds, t);
      }
      return { ...e, embeds: t };
    });
  return c.negative ? { prompt: tile(c.prompt), negative: tile(c.negative) } : { prompt: tile(c.prompt) };
}

/** Frees the distinct tensors of a conditioning (entries may share one). */
export function disposeConditioning(c: RunConditioning): void {
  tf.dispose([...new Set([...c.prompt, ...(c.negative ?? [])].map((e) => e.embeds))]);
}
