/**
 * painter-mini's tokenizer folder: a trained byte-level BPE (bpe-train.ts) turned into a
 * diffusers `tokenizer/` folder (vocab.json, merges.txt with its "#version: 0.2" header,
 * tokenizer_config.json, special_tokens_map.json) by building painter's CLIP tokenizer from it
 * and saving that with the same writer Textual Inversion uses, so what is written is what
 * painter (and transformers' CLIPTokenizer) reads back.
 */
import { BOS_TOKEN, EOS_TOKEN, type TrainedBpe } from './bpe-train.js';
import { createClipTokenizer, saveTokenizer, type ClipTokenizer } from '../../src/index.js';

/**
 * painter-mini's model_max_length (and so the text encoder's max_position_embeddings): 40, not
 * CLIP's 77. Pretraining captions are at most 22 tokens with BOS/EOS and held-out captions (which
 * spell never-seen words like "collar" in pieces) reach the low 30s. Padded to 77, three quarters
 * of every context were identical end-of-text tokens: with a text encoder learnt from scratch the
 * UNet's cross-attention averaged the caption away, and two runs of the diffusion stage at 77
 * ignored their captions (ε error equal within 1% for the right, a wrong and an empty caption).
 */
export const MINI_MODEL_MAX_LENGTH = 40;

export interface MiniTokenizerOptions {
  /** default MINI_MODEL_MAX_LENGTH */
  modelMaxLength?: number;
}

/** painter's CLIP tokenizer over a trained vocabulary, configured like SD 1.x's (EOS pads). */
export function miniClipTokenizer(bpe: TrainedBpe, opts: MiniTokenizerOptions = {}): ClipTokenizer {
  return createClipTokenizer({
    vocab: bpe.vocab,
    merges: ['#version: 0.2', ...bpe.merges].join('\n') + '\n',
    tokenizerConfig: {
      bos_token: BOS_TOKEN,
      eos_token: EOS_TOKEN,
      unk_token: EOS_TOKEN,
      pad_token: EOS_TOKEN,
      model_max_length: opts.modelMaxLength ?? MINI_MODEL_MAX_LENGTH,
      clean_up_tokenization_spaces: true,
    },
  });
}

/** Write the tokenizer folder of a trained vocabulary to `dir` (created if missing). */
export async function writeMiniTokenizer(bpe: TrainedBpe, dir: string, opts: MiniTokenizerOptions = {}): Promise<ClipTokenizer> {
  const tok = miniClipTokenizer(bpe, opts);
  await saveTokenizer(tok, dir);
  return tok;
}
