/**
 * painter-mini's tokenizer folder: a trained byte-level BPE (bpe-train.ts) turned into a
 * diffusers `tokenizer/` folder (vocab.json, merges.txt with its "#version: 0.2" header,
 * tokenizer_config.json, special_tokens_map.json) by building painter's CLIP tokenizer from it
 * and saving that with the same writer Textual Inversion uses, so what is written is what
 * painter (and transformers' CLIPTokenizer) reads back.
 */
import { createClipTokenizer, type ClipTokenizer } from '../core/tokenizer/clip-tokenizer.js';
import { saveTokenizer } from '../io/save-tokenizer.js';
import { BOS_TOKEN, EOS_TOKEN, type TrainedBpe } from './bpe-train.js';

/**
 * painter-mini's model_max_length (and so the text encoder's max_position_embeddings): CLIP's 77.
 * Pretraining captions are at most 22 tokens with BOS/EOS, but words outside the corpus fall
 * apart into characters ("collar" is 5 tokens, "sunglasses" 10), so held-out captions already
 * reach 34 and a user's prompt more; 32 would truncate them. 77 is also what every SD pipeline
 * and prompt tool assumes, and a tiny text encoder costs little at 77 positions.
 */
export const MINI_MODEL_MAX_LENGTH = 77;

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
