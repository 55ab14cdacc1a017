/**
 * Writes a CLIP tokenizer folder (vocab.json, merges.txt, tokenizer_config.json,
 * special_tokens_map.json) from painter's tokenizer, in the layout transformers'
 * CLIPTokenizer.save_pretrained writes; tokens added for Textual Inversion / DreamBooth are
 * listed in added_tokens_decoder so every tool sees them.
 */
import * as path from 'node:path';
import type { ClipTokenizer, ClipTokenizerFiles } from '../core/tokenizer/clip-tokenizer.js';
import { writeBytesAtomic } from './atomic.js';

/** The contents of the tokenizer's files (what createClipTokenizer reads back). */
export function tokenizerFiles(tok: ClipTokenizer): Required<ClipTokenizerFiles> {
  const vocab: Record<string, number> = {};
  for (const [token, id] of [...tok.encoder.entries()].sort((a, b) => a[1] - b[1])) vocab[token] = id;
  const merges = [...tok.bpeRanks.entries()].sort((a, b) => a[1] - b[1]).map(([pair]) => pair);
  const addedTokensDecoder: Record<string, unknown> = {};
  for (const [id, spec] of [...tok.addedDecoder.entries()].sort((a, b) => a[0] - b[0])) {
    addedTokensDecoder[String(id)] = {
      content: spec.content,
      lstrip: spec.lstrip,
      normalized: spec.normalized,
      rstrip: spec.rstrip,
      single_word: spec.singleWord,
      special: spec.special,
    };
  }
  const special = {
    bos_token: tok.bosToken,
    eos_token: tok.eosToken,
    pad_token: tok.padToken,
    unk_token: tok.unkToken,
  };
  const config = {
    add_prefix_space: false,
    added_tokens_decoder: addedTokensDecoder,
    ...special,
    additional_special_tokens: [...tok.additionalSpecialTokens],
    clean_up_tokenization_spaces: tok.cleanUpTokenizationSpaces,
    do_lower_case: true,
    errors: 'replace',
    model_max_length: Number.isFinite(tok.modelMaxLength) ? tok.modelMaxLength : 1e30,
    tokenizer_class: 'CLIPTokenizer',
  };
  return { vocab, merges: ['#version: 0.2', ...merges].join('\n') + '\n', tokenizerConfig: config, specialTokensMap: special };
}

export async function saveTokenizer(tok: ClipTokenizer, dir: string): Promise<void> {
  const files = tokenizerFiles(tok);
  await writeBytesAtomic(path.join(dir, 'vocab.json'), JSON.stringify(files.vocab, null, 2) + '\n');
  await writeBytesAtomic(path.join(dir, 'merges.txt'), files.merges);
  await writeBytesAtomic(path.join(dir, 'tokenizer_config.json'), JSON.stringify(files.tokenizerConfig, null, 2) + '\n');
  await writeBytesAtomic(path.join(dir, 'special_tokens_map.json'), JSON.stringify(files.specialTokensMap, null, 2) + '\n');
}
