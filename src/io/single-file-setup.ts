/**
 * The configs and tokenizer a single-file checkpoint loads with, in order of precedence:
 *
 * 1. `--config DIR`: a diffusers folder the user names (configs and tokenizer from it);
 * 2. the file's own: painter stores the pipeline's configs (and a tokenizer other than CLIP's)
 *    in the `__metadata__` of the single files it writes, as nanoGPT stores its model config;
 * 3. inferred: the family from the keys and shapes, the sizes from the tensors, the rest from
 *    the configs painter ships (single-file-infer.ts, fixtures/sd-configs/). What cannot be told is one
 *    error naming the file and asking for `--config`.
 */
import * as path from 'node:path';
import type { ClipTokenizer } from '../core/tokenizer/clip-tokenizer.js';
import { createClipTokenizer } from '../core/tokenizer/clip-tokenizer.js';
import { PainterError } from '../errors.js';
import { bundledClipVocabulary, bundledConfigJson, bundledTokenizer, SD_FAMILIES, type SdFamily } from './bundled-configs.js';
import { loadClipTokenizer } from './load-tokenizer.js';
import { openWeightSource } from './open-weights.js';
import { CONFIG_FILES, parseModelConfigs, readConfigs, type ModelConfigs } from './pipeline-configs.js';
import { configFileJson } from './save-model.js';
import { tokenizerFiles } from './save-tokenizer.js';
import { inferConfigJson, inferFamily, type PredictionType } from './single-file-infer.js';
import { archOfKeys } from './single-file.js';
import { CLIP_PREFIX, OPENCLIP_PREFIX, type Arch } from './single-file-keys.js';

/** `__metadata__` keys of the single files painter writes. */
export const PIPELINE_METADATA_KEY = 'painter_pipeline';
export const TOKENIZER_METADATA_KEY = 'painter_tokenizer';

export interface SingleFileSetup {
  configs: ModelConfigs;
  tokenizer: ClipTokenizer;
  /** The text encoder's layout in the file (undefined: it holds none, which loading reports). */
  arch: Arch | undefined;
  /** The family told from keys and shapes (undefined without a text encoder). */
  family: SdFamily | undefined;
  /** Where the configs came from. */
  from: 'config' | 'file' | 'inferred';
}

export interface SingleFileSetupOptions {
  /** A diffusers folder whose configs and tokenizer describe the checkpoint. */
  config?: string;
  /** Decides SD 2.x's family (512 ε or 768 v) when inferred. */
  predictionType?: PredictionType;
}

const CONFIG_HINT = 'pass --config DIR with a diffusers folder of the same architecture (its configs and tokenizer are used)';

function fromMetadata(file: string, metadata: Readonly<Record<string, string>>): Pick<SingleFileSetup, 'configs' | 'tokenizer'> | undefined {
  const pipeline = metadata[PIPELINE_METADATA_KEY];
  if (pipeline === undefined) return undefined;
  const where = `${file} (${PIPELINE_METADATA_KEY} metadata)`;
  let json: Record<keyof ModelConfigs, unknown>;
  let tok: { vocab?: Record<string, number>; merges?: string; tokenizerConfig: unknown; specialTokensMap?: unknown };
  try {
    json = JSON.parse(pipeline) as Record<keyof ModelConfigs, unknown>;
    tok = JSON.parse(metadata[TOKENIZER_METADATA_KEY] ?? 'null') as typeof tok;
  } catch (e) {
    throw new PainterError(`${where}: not valid JSON (${(e as Error).message}); ${CONFIG_HINT}`);
  }
  if (typeof json !== 'object' || json === null || typeof tok !== 'object' || tok === null) {
    throw new PainterError(`${where}: expected the pipeline's configs and tokenizer; ${CONFIG_HINT}`);
  }
  const configs = parseModelConfigs(json, (part) => `${where}, ${CONFIG_FILES[part]}`);
  const vocabulary = tok.vocab !== undefined && tok.merges !== undefined ? { vocab: tok.vocab, merges: tok.merges } : bundledClipVocabulary();
  return { configs, tokenizer: createClipTokenizer({ ...vocabulary, tokenizerConfig: tok.tokenizerConfig, specialTokensMap: tok.specialTokensMap }) };
}

/** The configs and tokenizer `file` loads with (see the file comment for the order). */
export function singleFileSetup(file: string, opts: SingleFileSetupOptions = {}): SingleFileSetup {
  const src = openWeightSource(file);
  try {
    const arch = archOfKeys(src.entries.keys());
    const family = inferFamily(src.entries, src.globalStep, opts.predictionType);
    if (opts.config !== undefined) {
      return { configs: readConfigs(opts.config), tokenizer: loadClipTokenizer(path.join(opts.config, 'tokenizer')), arch, family, from: 'config' };
    }
    const own = fromMetadata(file, src.metadata ?? {});
    if (own) return { ...own, arch, family, from: 'file' };
    if (!family) {
      throw new PainterError(`${file}: no text encoder found (no ${CLIP_PREFIX} or ${OPENCLIP_PREFIX} keys), so painter cannot tell its architecture; is this a Stable Diffusion checkpoint? Else ${CONFIG_HINT}`);
    }
    const base = bundledConfigJson(family);
    const inferred = inferConfigJson(src.entries, family, base);
    const label = SD_FAMILIES[family].label;
    if (inferred.problems.length > 0) {
      throw new PainterError(`${file}: looks like ${label}, but painter cannot tell ${inferred.problems.join('; nor ')} from the checkpoint; ${CONFIG_HINT}`);
    }
    const configs = parseModelConfigs({ ...inferred, scheduler: base.scheduler }, (part) => `${file} (${label} inferred from its shapes; ${CONFIG_HINT}), ${CONFIG_FILES[part]}`);
    return { configs, tokenizer: bundledTokenizer(family), arch, family, from: 'inferred' };
  } finally {
    src.close();
  }
}

/** Whether a tokenizer's vocabulary and merges are CLIP's, which painter ships. */
function isClipVocabulary(files: { vocab: Record<string, number>; merges: string }): boolean {
  const clip = bundledClipVocabulary();
  if (files.merges !== clip.merges) return false;
  const entries = Object.entries(files.vocab);
  return entries.length === Object.keys(clip.vocab).length && entries.every(([token, id]) => clip.vocab[token] === id);
}

/**
 * The `__metadata__` that makes a single file stand alone: its configs, and its tokenizer's
 * settings (with the vocabulary only when it is not CLIP's).
 */
export function singleFileMetadata(configs: ModelConfigs, tokenizer: ClipTokenizer): Record<string, string> {
  const files = tokenizerFiles(tokenizer);
  const tok = isClipVocabulary(files) ? { tokenizerConfig: files.tokenizerConfig, specialTokensMap: files.specialTokensMap } : files;
  return { [PIPELINE_METADATA_KEY]: JSON.stringify(configFileJson(configs)), [TOKENIZER_METADATA_KEY]: JSON.stringify(tok) };
}
