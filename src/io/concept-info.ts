/**
 * What a Textual Inversion embedding or a LoRA file holds, for `painter info FILE`, as plain data
 * read through painter's own readers (embeddings.ts, lora-files.ts), so info describes a file
 * exactly as generate would load it.
 *
 * A file's kind is told by its content, not its extension: PNG and ZIP (torch.save) magic bytes,
 * then a safetensors header's keys (LoRA key names, LDM checkpoint prefixes, `emb_params` or a
 * single tensor named after its token). A torch.save file names nothing in a header, so the
 * embedding reader and then the LoRA reader are asked.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { disposeLora, loraRank, loraScale, type LoraAdapter, type LoraComponent, type LoraFormat } from '../core/lora.js';
import { lycorisRank, lycorisScale, type LycorisAdapter } from '../core/lora-lycoris.js';
import { isPainterError, PainterError } from '../errors.js';
import { readEmbeddingFile, type EmbeddingFormat } from './embeddings.js';
import { readLoraFile } from './lora-files.js';
import { openTorchCheckpoint } from './torch-checkpoint.js';
import { closeSafetensors, openSafetensors } from './safetensors.js';
import { looksLikeZip } from './zip.js';
import { isLegacyTorchHead, isPngHead, readFileHead } from './file-head.js';

/** Text-encoder widths of the base models an embedding can be for. */
const BASE_BY_WIDTH: Record<number, string> = { 768: 'SD 1.x', 1024: 'SD 2.x' };

export interface EmbeddingFileInfo {
  kind: 'embedding';
  file: string;
  format: EmbeddingFormat;
  /** The trigger word generate uses for this file. */
  token: string;
  /** 'file': the file names it (diffusers/painter key); 'file name': its stem, as AUTOMATIC1111 triggers it. */
  tokenFrom: 'file' | 'file name';
  vectors: number;
  /** Hidden size of each vector: the text-encoder width of the base model it was trained on. */
  width: number;
  /** The base model family that width fits ('SD 1.x', 'SD 2.x'); absent for any other width. */
  base?: string;
  /** What the file says about its training (painter.* metadata, or A1111's step/sd_checkpoint*). */
  training?: { steps?: string; baseModelHash?: string; baseModelName?: string; initToken?: string };
  metadata: Record<string, string>;
}

export interface LoraComponentInfo {
  component: LoraComponent;
  /** Number of adapted modules (weights). */
  modules: number;
  /** Module kinds adapted, with block indices dropped: `attn1.to_q`, `self_attn.q_proj`. */
  targets: string[];
  ranks: number[];
  alphas: number[];
}

export interface LoraFileInfo {
  kind: 'lora';
  file: string;
  naming: LoraFormat;
  ranks: number[];
  /** Network alphas stored in the file (kohya: one per module); empty when none (diffusers). */
  alphas: number[];
  /** The file's own factors alpha / rank (1 without alpha). */
  scales: number[];
  modules: number;
  components: LoraComponentInfo[];
  metadata: Record<string, string>;
}

export type ConceptFileInfo = EmbeddingFileInfo | LoraFileInfo;

/** What a path is for `painter info`; 'torch' is a torch.save file the readers have to open to tell. */
export type FileKind = 'model' | 'png' | 'embedding' | 'lora' | 'torch';

const DESCRIBABLE =
  'painter info describes a diffusers model folder or .safetensors checkpoint, a PNG with generation parameters, ' +
  'a Textual Inversion embedding (.safetensors, .pt, .bin) or a LoRA (.safetensors, .pt, .bin)';

function cannotDescribe(file: string, why: string): never {
  throw new PainterError(`${file}: ${why}; ${DESCRIBABLE}`);
}

// Key names only LoRA files use: kohya `lora_unet_…`/`lora_te_…`, diffusers `.lora.down.weight`,
// `.lora_linear_layer.…`, the older `to_q_lora.…`, and peft's `lora_A`/`lora_B`.
const LORA_KEY = /^lora_(unet|te\d*)_|\.lora(_linear_layer)?\.(down|up)\.weight$|_lora\.(down|up)\.weight$|\.lora_[AB]\.weight$/;
// Single-file (LDM) checkpoints prefix every weight by its component.
const CHECKPOINT_KEY = /^(model\.diffusion_model|first_stage_model|cond_stage_model)\./;
const EMBEDDING_KEYS = ['emb_params', 'clip_l', 'clip_g'];

/** A safetensors file's kind from its header keys; no tensor data is read. */
function safetensorsKind(file: string, head: Uint8Array): FileKind {
  let keys: string[];
  try {
    const f = openSafetensors(file);
    keys = [...f.entries.keys()];
    closeSafetensors(f);
  } catch (e) {
    if (!isPainterError(e)) throw e;
    // A safetensors header is JSON: a file whose 9th byte is "{" was meant to be one and is damaged.
    if (head[8] !== 0x7b) cannotDescribe(file, 'not a safetensors, torch.save or PNG file');
    cannotDescribe(file, `a damaged safetensors file (${e.message.replace(`${file}: `, '')})`);
  }
  if (keys.some((k) => LORA_KEY.test(k))) return 'lora';
  if (keys.some((k) => CHECKPOINT_KEY.test(k))) return 'model';
  if (keys.length === 1 || keys.some((k) => EMBEDDING_KEYS.includes(k))) return 'embedding';
  const first = keys.length > 0 ? ` (e.g. "${keys[0]}")` : '';
  cannotDescribe(file, `a safetensors file with ${keys.length} tensors${first}, neither an embedding, a LoRA nor a single-file checkpoint (for a diffusers model, give its folder)`);
}

/** Which kind of file `file` is, by its content; a PainterError naming the file when painter cannot describe it. */
export function identifyFile(file: string): FileKind {
  let head: Uint8Array;
  try {
    if (fs.statSync(file).isDirectory()) return 'model';
    head = readFileHead(file, 9);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    cannotDescribe(file, code === 'ENOENT' ? 'not found' : `cannot read it (${code ?? String(e)})`);
  }
  if (head.length === 0) cannotDescribe(file, 'empty file');
  if (isPngHead(head) || /\.png$/i.test(file)) return 'png';
  if (looksLikeZip(head)) return isTorchCheckpoint(file) ? 'model' : 'torch';
  if (isLegacyTorchHead(head)) cannotDescribe(file, 'a legacy torch.save file (torch < 1.6), which painter does not read; re-save it with a current torch');
  return safetensorsKind(file, head);
}

function sorted(values: Iterable<number>): number[] {
  return [...new Set(values)].sort((a, b) => a - b);
}

/** `down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q` → `attn1.to_q`. */
function targetKind(module: string): string {
  return module.replace(/^(.*\.)?(down_blocks|up_blocks|attentions|resnets|transformer_blocks|layers|downsamplers|upsamplers)\.\d+\./, '');
}

function describeEmbedding(file: string, fromHeader: boolean): EmbeddingFileInfo {
  const e = readEmbeddingFile(file);
  const [vectors, width] = e.shape;
  const stem = path.basename(file).replace(/\.[^.]*$/, '');
  // Safetensors painter/diffusers files name their token; A1111/kohya files and a bare torch tensor do not.
  const named = e.format === 'painter' || (e.format === 'diffusers' && (fromHeader || e.token !== stem));
  const m = e.metadata;
  const training = {
    steps: m['painter.steps'] ?? m['step'],
    baseModelHash: m['painter.base_model_hash'] || m['sd_checkpoint'],
    baseModelName: m['sd_checkpoint_name'],
    initToken: m['painter.init_token'] || undefined,
  };
  const given = Object.entries(training).filter(([, v]) => v !== undefined);
  return {
    kind: 'embedding',
    file,
    format: e.format,
    token: e.token,
    tokenFrom: named ? 'file' : 'file name',
    vectors,
    width,
    base: BASE_BY_WIDTH[width],
    training: given.length > 0 ? Object.fromEntries(given) : undefined,
    metadata: e.metadata,
  };
}

/** Rank and file factor of any adapter (LyCORIS LoKr of two full factors: no rank). */
function rankOf(a: LoraAdapter | LycorisAdapter): number[] {
  if (!('kind' in a)) return [loraRank(a)];
  const r = lycorisRank(a);
  return r === undefined ? [] : [r];
}
const scaleOf = (a: LoraAdapter | LycorisAdapter) => ('kind' in a ? lycorisScale(a) : loraScale(a));

function describeLora(file: string): LoraFileInfo {
  const lora = readLoraFile(file);
  try {
    const all: (LoraAdapter | LycorisAdapter)[] = [...lora.adapters, ...(lora.lycoris ?? [])];
    const alphasOf = (list: typeof all) => sorted(list.flatMap((a) => (a.alpha === undefined ? [] : [a.alpha])));
    const components: LoraComponentInfo[] = [];
    for (const component of ['unet', 'text_encoder'] as const) {
      const adapters = all.filter((a) => a.component === component);
      if (adapters.length === 0) continue;
      components.push({
        component,
        modules: adapters.length,
        targets: [...new Set(adapters.map((a) => targetKind(a.module)))].sort(),
        ranks: sorted(adapters.flatMap(rankOf)),
        alphas: alphasOf(adapters),
      });
    }
    return {
      kind: 'lora',
      file,
      naming: lora.format,
      ranks: sorted(all.flatMap(rankOf)),
      alphas: alphasOf(all),
      scales: sorted(all.map(scaleOf)),
      modules: all.length,
      components,
      metadata: lora.metadata,
    };
  } finally {
    disposeLora(lora);
  }
}

/** A `.ckpt` model checkpoint, told from its pickle alone (no tensor is read). */
function isTorchCheckpoint(file: string): boolean {
  try {
    const src = openTorchCheckpoint(file);
    src.close();
    return [...src.entries.keys()].some((k) => CHECKPOINT_KEY.test(k));
  } catch (e) {
    if (!isPainterError(e)) throw e;
    return false; // the readers below say what is wrong with it
  }
}

/** A torch.save file: an embedding if the embedding reader takes it, else a LoRA if the LoRA reader does. */
function describeTorch(file: string): ConceptFileInfo {
  const reason = (e: unknown): string => {
    if (!isPainterError(e)) throw e;
    return e.message.replace(`${file}: `, '');
  };
  let asEmbedding: string;
  try {
    return describeEmbedding(file, false);
  } catch (e) {
    asEmbedding = reason(e);
  }
  let asLora: string;
  try {
    return describeLora(file);
  } catch (e) {
    asLora = reason(e);
  }
  // Both readers give the same reason when the ZIP is no torch.save file at all.
  if (asLora === asEmbedding) cannotDescribe(file, asLora);
  cannotDescribe(file, `a torch.save file that is neither an embedding (${asEmbedding}) nor a LoRA (${asLora})`);
}

/**
 * Describes an embedding or LoRA file (kind told by content). LoRA weights are read as tensors
 * on the active tfjs backend and freed before returning; a safetensors header decides the kind
 * before any tensor data is read.
 */
export function describeConceptFile(file: string): ConceptFileInfo {
  const kind = identifyFile(file);
  switch (kind) {
    case 'embedding':
      return describeEmbedding(file, true);
    case 'lora':
      return describeLora(file);
    case 'torch':
      return describeTorch(file);
    case 'model':
    case 'png':
      throw new PainterError(`${file}: a ${kind === 'png' ? 'PNG image' : 'model'}, not an embedding or LoRA file`);
  }
}
