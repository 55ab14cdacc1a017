/**
 * The configs and tokenizers painter ships for the standard Stable Diffusion families
 * (fixtures/sd-configs/ in the package; its README.md says where each comes from), so a single-file
 * checkpoint loads without `--config`. CLIP's vocabulary is built once from OpenAI's merge file.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as zlib from 'node:zlib';
import { clipVocabulary, type ClipVocabulary } from '../core/tokenizer/clip-bpe-vocab.js';
import { createClipTokenizer, type ClipTokenizer } from '../core/tokenizer/clip-tokenizer.js';
import { readJson } from './load-weights.js';
import { packageRoot } from './paths.js';
import { readConfigJson, type ModelConfigs } from './pipeline-configs.js';

export type SdFamily = 'sd1' | 'sd1-inpaint' | 'sd2' | 'sd2-v' | 'sd2-inpaint';

/** Each family: how users name it, and which text encoder layout its single files carry. */
export const SD_FAMILIES: Record<SdFamily, { label: string; textEncoder: 'sd1' | 'sd2' }> = {
  sd1: { label: 'SD 1.x', textEncoder: 'sd1' },
  'sd1-inpaint': { label: 'SD 1.x inpainting', textEncoder: 'sd1' },
  sd2: { label: 'SD 2.x 512 (epsilon)', textEncoder: 'sd2' },
  'sd2-v': { label: 'SD 2.x 768 (v-prediction)', textEncoder: 'sd2' },
  'sd2-inpaint': { label: 'SD 2.x inpainting', textEncoder: 'sd2' },
};

export function bundledConfigsDir(): string {
  return path.join(packageRoot(), 'fixtures', 'sd-configs');
}

/** A family's config JSON as shipped (the starting point that shapes then override). */
export function bundledConfigJson(family: SdFamily): Record<keyof ModelConfigs, Record<string, unknown>> {
  return readConfigJson(path.join(bundledConfigsDir(), family)) as Record<keyof ModelConfigs, Record<string, unknown>>;
}

let vocabulary: ClipVocabulary | undefined;

/** CLIP's 49408-token vocabulary and merges, from fixtures/sd-configs/clip/bpe_simple_vocab_16e6.txt.gz. */
export function bundledClipVocabulary(): ClipVocabulary {
  vocabulary ??= clipVocabulary(zlib.gunzipSync(fs.readFileSync(path.join(bundledConfigsDir(), 'clip', 'bpe_simple_vocab_16e6.txt.gz'))).toString('utf8'));
  return vocabulary;
}

/** The tokenizer settings files of a family (tokenizer_config.json, special_tokens_map.json). */
export function bundledTokenizerSettings(family: SdFamily): { tokenizerConfig: unknown; specialTokensMap: unknown } {
  const dir = path.join(bundledConfigsDir(), family, 'tokenizer');
  return { tokenizerConfig: readJson(path.join(dir, 'tokenizer_config.json')), specialTokensMap: readJson(path.join(dir, 'special_tokens_map.json')) };
}

/** The family's CLIP tokenizer: CLIP's vocabulary with the family's special tokens (SD 2.x pads with "!"). */
export function bundledTokenizer(family: SdFamily): ClipTokenizer {
  return createClipTokenizer({ ...bundledClipVocabulary(), ...bundledTokenizerSettings(family) });
}
