/**
 * `convert IN OUT`: a model between a diffusers folder and a single `.safetensors` file (a `.ckpt`
 * in, too), float32 ⇄ float16; a Textual Inversion embedding between the diffusers and
 * A1111/kohya layouts; a LoRA between diffusers and kohya naming. Models are moved tensor by
 * tensor in PyTorch layout without computing anything, so a round trip gives back every tensor
 * bit for bit (float16 storage only where asked). What is written appears complete or not at
 * all: a file through a temporary file, a folder through a temporary folder, renamed into place.
 */
import { useBackend, type BackendChoice } from '../backend/select.js';
import { disposeLora } from '../core/lora.js';
import { overrideSchedulerConfig } from '../core/schedulers/config.js';
import { PainterError, UsageError } from '../errors.js';
import { identifyFile } from '../io/concept-info.js';
import { PAINTER_EMBEDDING_KEY, readEmbeddingFile, writeEmbeddingFile, type EmbeddingFormat } from '../io/embeddings.js';
import { readLoraFile, writeLoraFile } from '../io/lora-files.js';
import { openModelSources, type ModelSources } from '../io/model-sources.js';
import { checkOutput, isSingleFileName, sizeOf, writeModelSources } from '../io/write-model-sources.js';
import { resolveConfig } from '../options/resolve.js';
import type { ConvertOptions, OptionInput } from '../options/types.js';

export type ConvertInput = OptionInput<'convert'> & { input: string; output: string; backend?: BackendChoice };

export interface ConvertResult {
  input: string;
  output: string;
  kind: 'model' | 'embedding' | 'lora';
  /** What was read and what was written: 'diffusers folder', 'single file', an embedding or LoRA layout. */
  from: string;
  to: string;
  tensors: number;
  /** Storage dtypes written, with their tensor counts. */
  dtypes: Record<string, number>;
  /** Bytes written. */
  bytes: number;
  /** Single-file entries no diffusers model holds (EMA copies, OpenCLIP's projection, …), not written. */
  leftOut: string[];
}

function checkPaths(input: string, output: string, overwrite: boolean): void {
  checkOutput('convert', [input], output, overwrite, 'a diffusers folder, a .safetensors/.ckpt checkpoint, an embedding or a LoRA file');
}

async function convertModel(o: ConvertOptions, input: string, output: string): Promise<ConvertResult> {
  if (o.format !== undefined) throw new UsageError(`convert: --format applies to embeddings and LoRA files; ${input} is a model (its layout follows OUT's name)`);
  const arch = o.arch === 'auto' ? undefined : o.arch;
  const model: ModelSources = openModelSources(input, { config: o.config, arch, predictionType: o.predictionType, ema: o.ema });
  try {
    const configs = o.predictionType ? { ...model.configs, scheduler: overrideSchedulerConfig(model.configs.scheduler, { prediction_type: o.predictionType }) } : model.configs;
    const from = model.layout === 'diffusers' ? 'diffusers folder' : 'single file';
    const w = await writeModelSources(output, { parts: model.parts, configs, tokenizer: model.tokenizer, arch: model.arch }, { half: o.half, overwrite: o.overwrite });
    return { input, output, kind: 'model', from, to: w.to, tensors: w.tensors, dtypes: w.dtypes, bytes: w.bytes, leftOut: model.leftOut };
  } finally {
    model.close();
  }
}

const EMBEDDING_LAYOUTS: Record<EmbeddingFormat, string> = {
  painter: 'painter embedding',
  diffusers: 'diffusers embedding',
  'a1111-pt': 'A1111 .pt embedding',
  'a1111-safetensors': 'A1111/kohya embedding (emb_params)',
};

// Metadata keys the embedding writer sets itself.
const EMBEDDING_WRITER_KEYS = new Set(['format', 'token', PAINTER_EMBEDDING_KEY]);

function needFormat(o: ConvertOptions, what: string, input: string): 'diffusers' | 'a1111' | 'kohya' {
  if (o.format === undefined) throw new UsageError(`convert: ${input} is ${what}; say which layout to write with --format diffusers, a1111 or kohya`);
  if (o.half) throw new UsageError(`convert: --half converts models; ${what} is written in float32`);
  return o.format;
}

async function convertEmbedding(o: ConvertOptions, input: string, output: string): Promise<ConvertResult> {
  const format = needFormat(o, 'a Textual Inversion embedding', input);
  if (!isSingleFileName(output)) throw new UsageError(`convert: OUT ${output}: an embedding is written as a .safetensors file`);
  const e = readEmbeddingFile(input, { token: o.token });
  // painter's A1111-layout files keep the token in their metadata (A1111 triggers by file name).
  const token = o.token ?? (e.format.startsWith('a1111') && e.metadata['token'] ? e.metadata['token'] : e.token);
  const metadata = Object.fromEntries(Object.entries(e.metadata).filter(([k]) => !EMBEDDING_WRITER_KEYS.has(k)));
  await writeEmbeddingFile(output, token, { data: e.vectors, shape: e.shape }, { format: format === 'diffusers' ? 'diffusers' : 'a1111', metadata });
  const to = format === 'diffusers' ? EMBEDDING_LAYOUTS.diffusers : EMBEDDING_LAYOUTS['a1111-safetensors'];
  return { input, output, kind: 'embedding', from: EMBEDDING_LAYOUTS[e.format], to, tensors: 1, dtypes: { F32: 1 }, bytes: sizeOf(output), leftOut: [] };
}

// Metadata keys the LoRA writer sets itself for the naming it writes.
const LORA_WRITER_KEYS = new Set(['format', 'ss_network_module', 'ss_network_dim', 'ss_network_alpha']);

async function convertLora(o: ConvertOptions, input: string, output: string, backend?: BackendChoice): Promise<ConvertResult> {
  const format = needFormat(o, 'a LoRA', input) === 'diffusers' ? 'diffusers' : 'kohya';
  if (!isSingleFileName(output)) throw new UsageError(`convert: OUT ${output}: a LoRA is written as a .safetensors file`);
  // The readers hold adapters as tensors: a backend must be active.
  await useBackend(backend);
  const lora = readLoraFile(input);
  try {
    if (lora.lycoris && lora.lycoris.length > 0) {
      throw new PainterError(`${input}: holds LyCORIS modules (LoHa/LoKr/Tucker), which diffusers and kohya LoRA naming cannot hold; painter converts plain LoRA/LoCon files`);
    }
    const metadata = Object.fromEntries(Object.entries(lora.metadata).filter(([k]) => !LORA_WRITER_KEYS.has(k)));
    await writeLoraFile(output, lora.adapters, { format, metadata });
    const tensors = lora.adapters.length * (format === 'kohya' ? 3 : 2);
    return { input, output, kind: 'lora', from: `${lora.format} LoRA`, to: `${format} LoRA`, tensors, dtypes: { F32: tensors }, bytes: sizeOf(output), leftOut: [] };
  } finally {
    disposeLora(lora);
  }
}

/** What IN holds: a model, an embedding or a LoRA (a torch file is asked of both readers). */
function kindOf(input: string): ConvertResult['kind'] {
  const kind = identifyFile(input);
  if (kind === 'model' || kind === 'embedding' || kind === 'lora') return kind;
  if (kind === 'png') throw new PainterError(`${input}: a PNG picture; convert takes a model, an embedding or a LoRA file`);
  try {
    readEmbeddingFile(input);
    return 'embedding';
  } catch {
    return 'lora';
  }
}

export async function convert(request: ConvertInput): Promise<ConvertResult> {
  const { input, output, backend, ...passed } = request;
  const o = resolveConfig('convert', passed);
  checkPaths(input, output, o.overwrite);
  switch (kindOf(input)) {
    case 'model':
      return convertModel(o, input, output);
    case 'embedding':
      return convertEmbedding(o, input, output);
    case 'lora':
      return convertLora(o, input, output, backend);
  }
}
