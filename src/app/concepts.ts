/**
 * Learned concepts a generation uses: Textual Inversion embeddings (given files, and those of the
 * embeddings folder whose trigger word a prompt uses, as AUTOMATIC1111) and LoRA adapters
 * (FILE[:SCALE]), applied to a loaded model as diffusers applies them.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { applyEmbeddings, multiVectorTokens } from '../core/embeddings.js';
import type { Embedding } from '../core/embeddings.js';
import { applyLora, disposeLora, PIVOTAL_EMBEDDING_KEY, PIVOTAL_TOKEN_KEY, type LoraWeights } from '../core/lora.js';
import type { StableDiffusion } from '../core/model.js';
import { extractLoraTags } from '../core/prompt/extra-networks.js';
import type { PipelinePart } from '../core/pipeline/generate.js';
import { tokenId } from '../core/tokenizer/clip-tokenizer.js';
import { PainterError, UsageError } from '../errors.js';
import { embeddingsDir, findEmbeddings } from '../io/embedding-library.js';
import { readEmbeddingFile } from '../io/embeddings.js';
import { shortHash } from '../io/file-hash.js';
import { readLoraFile } from '../io/lora-files.js';

export interface ConceptRequest {
  embeddings: string[];
  token?: string;
  /** Embeddings found in the embeddings folder (each file's own token). */
  library?: string[];
  loras: string[];
}

export interface LoadedConcepts {
  /** The model with concepts applied (shares unchanged weights with the base). */
  model: StableDiffusion;
  tiHashes: Record<string, string>;
  loraHashes: Record<string, string>;
  /** Each LoRA's scale, by file stem. */
  loraScales: Record<string, number>;
  /** Frees tensors created for the concepts (not the base model's). */
  dispose(): void;
}

/**
 * "file.safetensors:0.7" → file and scale; a plain path (a Windows drive letter included) keeps
 * scale 1. A scale that is not a finite number is a usage error, not a missing file.
 */
export function parseLoraArg(arg: string): { file: string; scale: number } {
  if (fs.existsSync(arg)) return { file: arg, scale: 1 };
  const m = /^(.+):([^:\\/]*)$/.exec(arg);
  if (!m || (m[1]!.length === 1 && /^[A-Za-z]$/.test(m[1]!))) return { file: arg, scale: 1 };
  const scale = Number(m[2]);
  if (m[2]!.trim() === '' || !Number.isFinite(scale)) throw new UsageError(`--lora ${arg}: the scale after ":" must be a number, e.g. ${m[1]}:0.7`);
  return { file: m[1]!, scale };
}

function stem(file: string): string {
  return path.basename(file).replace(/\.(safetensors|pt|bin)$/i, '');
}

/** The LoRA folder: --lora-dir, else $PAINTER_LORAS, else ./loras. */
export function loraDir(flag?: string, env: NodeJS.ProcessEnv = process.env): string {
  if (flag) return path.resolve(flag);
  const fromEnv = env['PAINTER_LORAS'];
  return path.resolve(fromEnv ? fromEnv : 'loras');
}

/**
 * A prompt's `<lora:NAME:SCALE>` tags (AUTOMATIC1111's syntax) taken out of its text and turned
 * into `--lora FILE:SCALE` arguments: a `--lora` file of that name wins, else NAME.safetensors in
 * the LoRA folder; a tag with neither is an error naming the folder.
 */
export function promptLoras(prompt: string, o: { lora?: string[]; loraDir?: string }): { prompt: string; loras: string[] } {
  const { prompt: text, loras: tags } = extractLoraTags(prompt);
  const given = o.lora ?? [];
  const named = new Set(given.map((arg) => stem(parseLoraArg(arg).file)));
  const found: string[] = [];
  for (const tag of tags) {
    if (named.has(tag.name)) continue;
    const dir = loraDir(o.loraDir);
    const file = path.join(dir, `${tag.name}.safetensors`);
    if (!fs.existsSync(file)) {
      throw new PainterError(`the prompt asks for <lora:${tag.name}:${tag.scale}>, but ${dir} holds no ${tag.name}.safetensors; pass --lora FILE or --lora-dir DIR`);
    }
    found.push(`${file}:${tag.scale}`);
    named.add(tag.name);
  }
  return { prompt: text, loras: [...given, ...found] };
}

/**
 * Embeddings of the folder `dir` that `texts` use by trigger word and that fit `model` (as
 * AUTOMATIC1111: one made for another base model, or clashing with a word, is skipped with a
 * warning); tokens of `given` files are left to them.
 */
export function libraryEmbeddings(model: StableDiffusion, dir: string, texts: readonly string[], given: ReadonlySet<string>, warn: (m: string) => void): { file: string; token: string }[] {
  const hidden = model.textEncoder.config.hidden_size;
  return findEmbeddings(dir, texts, given, warn).filter((l) => {
    const why =
      l.width !== hidden
        ? `its vectors are ${l.width} wide, this model's text encoder ${hidden}`
        : multiVectorTokens(l.token, l.vectors).some((t) => tokenId(model.tokenizer, t) !== undefined)
          ? `"${l.token}" is already a word of this model's vocabulary`
          : undefined;
    if (why) warn(`not using ${l.file} from the embeddings folder: ${why}`);
    return why === undefined;
  });
}

/**
 * Applies embeddings and LoRAs to `base`. With `parts` (phased generation), only what those
 * components need: embeddings with the text encoder, LoRA merged into the loaded components.
 */
export function applyConcepts(base: StableDiffusion, req: ConceptRequest, parts?: readonly PipelinePart[]): LoadedConcepts {
  const has = (p: PipelinePart) => !parts || parts.includes(p);
  if (req.token !== undefined && req.embeddings.length !== 1) throw new PainterError('--token names the token of one --embedding; give exactly one --embedding with it');
  const cleanups: (() => void)[] = [];
  const tiHashes: Record<string, string> = {};
  const loraHashes: Record<string, string> = {};
  const loraScales: Record<string, number> = {};
  let model = base;
  try {
    // Read (and freed once merged, or on an error) before the embeddings: a LoRA may bring its own.
    const loras = req.loras.map((arg) => {
      const { file, scale } = parseLoraArg(arg);
      const entry = { file, scale, lora: readLoraFile(file), merged: false };
      cleanups.push(() => entry.merged || disposeLora(entry.lora));
      return entry;
    });
    const files: Embedding[] = [...req.embeddings.map((f) => readEmbeddingFile(f, { token: req.token })), ...(req.library ?? []).map((f) => readEmbeddingFile(f))];
    // A LoRA's own embeddings (pivotal tuning) come with it, unless an --embedding gives the token.
    for (const { lora } of loras) for (const e of loraEmbeddings(lora)) if (!files.some((f) => f.token === e.token)) files.push(e);
    if (files.length > 0 && has('text_encoder')) {
      const applied = applyEmbeddings(model, files);
      cleanups.push(applied.dispose);
      model = applied.model;
      for (const f of files) tiHashes[f.token.replace(/[<>]/g, '')] = shortHash(f.file!.replace(/ \(bundle_emb\..*\)$/, ''));
    }
    for (const entry of loras) {
      const { file, scale, lora } = entry;
      const components = (['unet', 'text_encoder'] as const).filter(has);
      const merged = applyLora(model, lora, scale, { components });
      disposeLora(lora);
      entry.merged = true;
      cleanups.push(merged.dispose);
      model = merged.model;
      loraHashes[stem(file)] = shortHash(file);
      loraScales[stem(file)] = scale;
    }
  } catch (e) {
    for (const c of cleanups.reverse()) c();
    throw e;
  }
  return {
    model,
    tiHashes,
    loraHashes,
    loraScales,
    dispose: () => {
      for (const c of cleanups.reverse()) c();
    },
  };
}

/**
 * The embeddings a LoRA file brings: bundled in it (A1111's bundle_emb.*), or, for painter's
 * pivotal-tuning LoRAs, the embedding file its metadata names beside it.
 */
export function loraEmbeddings(lora: LoraWeights): Embedding[] {
  if (lora.embeddings?.length) return lora.embeddings;
  const token = lora.metadata[PIVOTAL_TOKEN_KEY];
  const name = lora.metadata[PIVOTAL_EMBEDDING_KEY];
  if (!token || !name) return [];
  const beside = path.join(path.dirname(lora.file), path.basename(name));
  if (!fs.existsSync(beside)) throw new PainterError(`${lora.file}: was trained with the embedding ${token} in ${name}, which is not beside it; copy ${name} next to the LoRA, or pass it with --embedding`);
  return [readEmbeddingFile(beside, { token })];
}

/** The concept flags a command takes (generate, edit, ddim-invert). */
export interface ConceptOptions {
  embedding?: string[];
  token?: string;
  lora?: string[];
  embeddingsDir?: string;
}

/**
 * The concepts a command asks for — its `--embedding` and `--lora` files, and the embeddings
 * folder's files whose trigger word `texts` use (each said through `info`) — applied to `base`.
 */
export function loadConcepts(base: StableDiffusion, o: ConceptOptions, texts: readonly string[], hooks: { warn?: (m: string) => void; info?: (m: string) => void }): LoadedConcepts {
  const warn = (m: string) => hooks.warn?.(m);
  const request: ConceptRequest = { embeddings: o.embedding ?? [], token: o.token, loras: o.lora ?? [] };
  const given = new Set(request.embeddings.map((f) => readEmbeddingFile(f, { token: request.token }).token));
  const library = libraryEmbeddings(base, embeddingsDir(o.embeddingsDir), texts, given, warn);
  for (const l of library) hooks.info?.(`${l.token} from ${l.file}`);
  request.library = library.map((l) => l.file);
  return applyConcepts(base, request);
}
