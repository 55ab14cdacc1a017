/**
 * Reads a diffusers `tokenizer/` folder (vocab.json, merges.txt, tokenizer_config.json, optional
 * special_tokens_map.json) and builds the CLIP tokenizer from it.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { PainterError } from '../errors.js';
import { createClipTokenizer, type ClipTokenizer } from '../core/tokenizer/clip-tokenizer.js';

export const TOKENIZER_FILES = {
  vocab: 'vocab.json',
  merges: 'merges.txt',
  config: 'tokenizer_config.json',
  specialTokensMap: 'special_tokens_map.json',
} as const;

const FIX = "copy the tokenizer/ folder (vocab.json, merges.txt, tokenizer_config.json) from the base model";

// undefined when an optional file is absent
function readText(dir: string, name: string, required: boolean): string | undefined {
  const file = path.join(dir, name);
  try {
    return fs.readFileSync(file, 'utf8');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' && !required) return undefined;
    const why = code === 'ENOENT' ? 'not found' : `cannot read (${code ?? String(e)})`;
    throw new PainterError(`${file}: ${why}; ${FIX}`);
  }
}

function parseJson(dir: string, name: string, text: string): unknown {
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new PainterError(`${path.join(dir, name)}: not valid JSON (${(e as Error).message}); ${FIX}`);
  }
}

/** Load the CLIP tokenizer of a diffusers tokenizer folder, e.g. `<model>/tokenizer`. */
export function loadClipTokenizer(dir: string): ClipTokenizer {
  if (!fs.existsSync(dir) || !fs.statSync(dir).isDirectory()) {
    throw new PainterError(`${dir}: tokenizer folder not found; ${FIX}`);
  }
  const vocabText = readText(dir, TOKENIZER_FILES.vocab, true)!;
  const merges = readText(dir, TOKENIZER_FILES.merges, true)!;
  const configText = readText(dir, TOKENIZER_FILES.config, true)!;
  const mapText = readText(dir, TOKENIZER_FILES.specialTokensMap, false);
  const files = {
    vocab: parseJson(dir, TOKENIZER_FILES.vocab, vocabText) as Record<string, number>,
    merges,
    tokenizerConfig: parseJson(dir, TOKENIZER_FILES.config, configText),
    specialTokensMap: mapText === undefined ? undefined : parseJson(dir, TOKENIZER_FILES.specialTokensMap, mapText),
  };
  try {
    return createClipTokenizer(files);
  } catch (e) {
    if (e instanceof PainterError) throw new PainterError(`${dir}: ${e.message}; ${FIX}`);
    throw e;
  }
}
