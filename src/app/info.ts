/**
 * `info`: versions, the compute backend and its threads, the bundled model, and for a model what
 * it holds and what each command would need in memory; for a PNG, the parameters stored in it;
 * for a Textual Inversion embedding or a LoRA, what it holds and which base model it fits.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { useBackend, type BackendChoice, type BackendReport } from '../backend/select.js';
import { BACKENDS } from '../backend/table.js';
import { parseInfotext, type GenerationParams } from '../core/infotext.js';
import { PainterError } from '../errors.js';
import { describeConceptFile, identifyFile, type ConceptFileInfo } from '../io/concept-info.js';
import { describeModel, type ModelInfo } from '../io/model-info.js';
import { readPngText } from '../io/png-text.js';
import { memoryReport, type MemoryReport } from './memory-check.js';
import { bundledModelPath, packageVersion } from '../io/paths.js';

export interface InfoReport {
  painter: string;
  node: string;
  tfjs: string;
  backend: Pick<BackendReport, 'name' | 'package' | 'gpu' | 'reason' | 'failed'>;
  threads: string;
  defaultModel: string;
  model?: ModelInfo;
  memory?: MemoryReport;
}

export type SystemInfo = InfoReport & { backendReport: BackendReport };

export interface PngInfo {
  kind: 'png';
  file: string;
  text: string;
  parameters: GenerationParams;
}

/** What `painter info FILE` reports: a PNG's parameters, an embedding or LoRA, or a model with the system. */
export type FileInfo = PngInfo | ConceptFileInfo | ({ kind: 'model' } & SystemInfo);

/** What painter runs on, and what `modelPath` (when given) holds and needs. */
export async function systemInfo(modelPath?: string, choice?: BackendChoice): Promise<SystemInfo> {
  const backend = await useBackend(choice);
  const model = modelPath !== undefined ? describeModel(path.resolve(modelPath)) : undefined;
  const memory = modelPath !== undefined && model ? memoryReport(path.resolve(modelPath), backend) : undefined;
  return {
    painter: packageVersion(),
    node: process.version,
    tfjs: tf.version_core,
    backend: { name: backend.name, package: backend.package, gpu: backend.gpu, reason: backend.reason, failed: backend.failed },
    backendReport: backend,
    threads: await BACKENDS[backend.name].threads(),
    defaultModel: bundledModelPath(),
    model,
    memory,
  };
}

/** The generation parameters a PNG carries (A1111's "parameters" text), raw and parsed. */
export function pngParameters(file: string): { text: string; parameters: GenerationParams } {
  let chunks: Record<string, string>;
  try {
    chunks = readPngText(fs.readFileSync(file));
  } catch (e) {
    throw new PainterError(`${file}: cannot read PNG metadata (${(e as Error).message})`);
  }
  const text = chunks['parameters'];
  if (text === undefined) throw new PainterError(`${file}: no generation parameters stored in this PNG (no "parameters" text chunk)`);
  return { text, parameters: parseInfotext(text) };
}

/**
 * Describes `file` by what it holds (not its extension): a model folder or checkpoint (with the
 * system report), a PNG's parameters, an embedding or a LoRA. Anything else is a PainterError
 * naming the file and what painter can describe.
 */
export async function fileInfo(file: string, choice?: BackendChoice): Promise<FileInfo> {
  const kind = identifyFile(file);
  switch (kind) {
    case 'model':
      return { kind: 'model', ...(await systemInfo(file, choice)) };
    case 'png':
      return { kind: 'png', file, ...pngParameters(file) };
    case 'embedding':
      return describeConceptFile(file);
    case 'lora':
    case 'torch':
      // A LoRA's weights are read as tensors, so a backend must be active.
      await useBackend(choice);
      return describeConceptFile(file);
  }
}
