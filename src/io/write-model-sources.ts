/**
 * Writes a model held as diffusers-named weight sources (PyTorch layout, each tensor read when
 * written) as a diffusers folder or one single-file `.safetensors` checkpoint, chosen by the
 * output's name. `painter convert` and `painter merge` write through it: the sources may be a
 * file's tensors as stored, or views that compute merged values when read.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { PainterError, UsageError } from '../errors.js';
import type { ClipTokenizer } from '../core/tokenizer/clip-tokenizer.js';
import type { ModelConfigs } from './pipeline-configs.js';
import { writeSafetensors, type SafetensorsDtype, type TensorToWrite } from './safetensors.js';
import { writeModelFolder } from './save-model.js';
import { COMPONENTS, singleFileTensors, type Arch, type ComponentSources } from './single-file.js';
import { singleFileMetadata } from './single-file-setup.js';
import type { WeightEntry, WeightSource } from './weight-source.js';

export const isSingleFileName = (file: string): boolean => file.toLowerCase().endsWith('.safetensors');

export interface ModelToWrite {
  parts: ComponentSources;
  configs: ModelConfigs;
  tokenizer: ClipTokenizer;
  /** The text-encoder layout of a single-file output. */
  arch: Arch;
}

export interface WriteModelOptions {
  /** Store floating-point weights as float16 (else each keeps its source dtype; float64 as float32). */
  half: boolean;
  overwrite: boolean;
  /** More `__metadata__` for a single-file output, beside its configs and tokenizer. */
  metadata?: Record<string, string>;
  /** Called with a folder output's temporary folder once it is complete, before it is renamed into place. */
  finishFolder?: (dir: string) => Promise<void>;
}

export interface WrittenModel {
  /** 'diffusers folder' or 'single file (… text encoder)'. */
  to: string;
  tensors: number;
  /** Storage dtypes written, with their tensor counts. */
  dtypes: Record<string, number>;
  /** Bytes written. */
  bytes: number;
}

/** Bytes of a file, or of everything in a folder. */
export function sizeOf(target: string): number {
  const stat = fs.statSync(target);
  if (!stat.isDirectory()) return stat.size;
  return fs.readdirSync(target).reduce((n, f) => n + sizeOf(path.join(target, f)), 0);
}

/**
 * The checks every writer of OUT makes before reading anything: IN exists, OUT is not IN, OUT is
 * not a torch pickle, and an existing OUT is replaced only when asked. `command` names the
 * command in messages; `what` lists what IN may be.
 */
export function checkOutput(command: string, inputs: readonly string[], output: string, overwrite: boolean, what: string): void {
  for (const input of inputs) {
    if (!fs.existsSync(input)) throw new PainterError(`${input}: not found; give ${what}`);
    if (path.resolve(input) === path.resolve(output)) throw new UsageError(`${command}: the output is an input (${output}); write to another path`);
  }
  if (/\.(ckpt|pt|pth|bin)$/i.test(output)) throw new UsageError(`${command}: ${output}: painter writes .safetensors files and diffusers folders, not torch pickles; name a .safetensors file or a folder`);
  if (fs.existsSync(output) && !overwrite) throw new PainterError(`${output}: already exists; choose another output or pass --overwrite`);
}

/** Each tensor's storage dtype in the output: float16 with `half`, else the input's (float64 as float32). */
export function storageDtype(half: boolean): (e: WeightEntry) => SafetensorsDtype {
  return (e) => {
    if (e.dtype === 'I32' || e.dtype === 'I64') return e.dtype;
    if (half) return 'F16';
    return e.dtype === 'F64' ? 'F32' : e.dtype;
  };
}

/** A component's tensors under their own (diffusers) names, read when written. */
function componentTensors(src: WeightSource, dtype: (e: WeightEntry) => SafetensorsDtype): Map<string, TensorToWrite> {
  return new Map([...src.entries].map(([k, e]) => [k, { dtype: dtype(e), shape: e.shape, data: () => src.read(k).data }]));
}

function countDtypes(tensors: Iterable<TensorToWrite>, into: Record<string, number>): void {
  for (const t of tensors) into[t.dtype ?? 'F32'] = (into[t.dtype ?? 'F32'] ?? 0) + 1;
}

/** Writes the model at `output`: a single file when the name ends in .safetensors, else a diffusers folder. */
export async function writeModelSources(output: string, model: ModelToWrite, opts: WriteModelOptions): Promise<WrittenModel> {
  const dtype = storageDtype(opts.half);
  const dtypes: Record<string, number> = {};
  if (isSingleFileName(output)) {
    const tensors = singleFileTensors(model.parts, model.configs, model.arch, dtype);
    countDtypes(tensors.values(), dtypes);
    await writeSafetensors(output, tensors, { ...singleFileMetadata(model.configs, model.tokenizer), ...opts.metadata });
    const to = `single file (${model.arch === 'sd2' ? 'OpenCLIP text encoder' : 'CLIP text encoder'})`;
    return { to, tensors: tensors.size, dtypes, bytes: sizeOf(output) };
  }
  let count = 0;
  const half = COMPONENTS.every((c) => [...model.parts[c].entries.values()].every((e) => dtype(e) === 'F16'));
  await writeModelFolder(
    output,
    {
      configs: model.configs,
      tokenizer: model.tokenizer,
      half,
      writeWeights: async (component, file) => {
        const tensors = componentTensors(model.parts[component], dtype);
        countDtypes(tensors.values(), dtypes);
        count += tensors.size;
        await writeSafetensors(file, tensors, { format: 'pt' });
      },
      finish: opts.finishFolder,
    },
    { overwrite: opts.overwrite },
  );
  return { to: 'diffusers folder', tensors: count, dtypes, bytes: sizeOf(output) };
}
