/**
 * Caption augmentation as kohya's sd-scripts does it (train_util.py, process_caption), drawn from
 * the run's seeded generator so a resumed run draws the same:
 *  - caption dropout (--caption_dropout_rate): with probability p the whole prompt is the empty
 *    prompt, and the step trains the unconditional prediction the sampler's guidance uses;
 *  - otherwise the caption's comma-separated tags: the first N kept in place (--keep_tokens),
 *    the rest shuffled (--shuffle_caption), then each of those dropped with probability p
 *    (--caption_tag_dropout_rate), joined again with ", ".
 * painter's instance prompt (or Textual Inversion template) comes before the caption file's
 * text and always stays first, whole: keep-tokens counts the caption's own tags after it.
 */
import type { Rng } from '../core/random.js';
import { withCaption } from './steps.js';

export interface CaptionSettings {
  shuffleCaptions: boolean;
  /** Tags at the start of a caption that keep their place. */
  keepTokens: number;
  /** Probability of training a step's image on the empty prompt. */
  captionDropout: number;
  /** Probability of leaving out each (not kept) tag. */
  tagDropout: number;
}

export const PLAIN_CAPTIONS: CaptionSettings = { shuffleCaptions: false, keepTokens: 0, captionDropout: 0, tagDropout: 0 };

/** Whether the settings change prompts from step to step (and draw from the generator). */
export function captionsVary(s: CaptionSettings): boolean {
  return s.shuffleCaptions || s.captionDropout > 0 || s.tagDropout > 0;
}

/** A caption's tags after kohya's keep / shuffle / tag-dropout, joined with ", ". */
export function augmentTags(caption: string, s: CaptionSettings, rng: Rng): string {
  const tags = caption.split(',').map((t) => t.trim());
  const fixed = tags.slice(0, s.keepTokens);
  let flex = tags.slice(s.keepTokens);
  if (s.shuffleCaptions) flex = rng.shuffle(flex);
  if (s.tagDropout > 0) flex = flex.filter(() => rng.uniform() >= s.tagDropout);
  return [...fixed, ...flex].join(', ');
}

/**
 * One step's prompt for an image: "" with probability captionDropout, else `prompt` followed by
 * its caption after augmentation (withCaption's "prompt, caption"). Draws nothing when the
 * settings are plain, so runs without them keep their random stream.
 */
export function trainingPrompt(prompt: string, caption: string | undefined, s: CaptionSettings, rng: Rng): string {
  if (!captionsVary(s)) return withCaption(prompt, caption);
  if (s.captionDropout > 0 && rng.uniform() < s.captionDropout) return '';
  if (caption === undefined || (!s.shuffleCaptions && s.tagDropout === 0)) return withCaption(prompt, caption);
  const tags = augmentTags(caption, s, rng);
  return withCaption(prompt, tags === '' ? undefined : tags);
}
