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
import type { GenerationParams } from '../core/infotext.js';
import { pngParameters, rerunFlags } from './from-png.js';
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
  /** The generate flags that make the image again, or why painter cannot. */
  rerun: { flags: string } | { problem: string };
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
      return { kind: 'png', file, ...pngInfo(file) };
    case 'embedding':
      return describeConceptFile(file);
    case 'lora':
    case 'torch':
      // A LoRA's weights are read as tensors, so a backend must be active.
      await useBackend(choice);
      return describeConceptFile(file);
  }
}

/** A PNG's parameters and how `painter generate` makes it again. */
function pngInfo(file: string): Omit<PngInfo, 'kind' | 'file'> {
  const { text, parameters } = pngParameters(file);
  return { text, parameters, rerun: rerunFlags(parameters, file) };
}
