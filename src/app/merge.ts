/**
 * `merge MODEL [B [C]] [--lora FILE[:SCALE]…] --out OUT`: AUTOMATIC1111's Checkpoint Merger
 * (weighted sum A·(1 − M) + B·M, add difference A + (B − C)·M; io/checkpoint-merge.ts) and LoRAs
 * baked into the result (app/lora-bake.ts), written as a diffusers folder or a single file with
 * A's configs and tokenizer. Tensors stream from the inputs to the output one at a time.
 *
 * What went in is recorded twice: `merge.json` (inside a folder output, beside a single file as
 * NAME.merge.json) with every input's hash and the output's "Model hash" — the hash its
 * generations' infotext carries — and, in a single file, the `sd_merge_recipe` and
 * `sd_merge_models` metadata A1111's merger writes.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { useBackend, type BackendChoice } from '../backend/select.js';
import { disposeLora } from '../core/lora.js';
import { PainterError, UsageError } from '../errors.js';
import { writeBytesAtomic } from '../io/atomic.js';
import { mergeCheckpoints, type MergeMethod } from '../io/checkpoint-merge.js';
import { modelHash, modelSha256, shortHash } from '../io/file-hash.js';
import { readLoraFile } from '../io/lora-files.js';
import { openModelSources, type ModelSources } from '../io/model-sources.js';
import { packageVersion } from '../io/paths.js';
import { closeSafetensors, openSafetensors } from '../io/safetensors.js';
import { checkOutput, isSingleFileName, writeModelSources } from '../io/write-model-sources.js';
import { resolveConfig } from '../options/resolve.js';
import type { MergeOptions, OptionInput } from '../options/types.js';
import { parseLoraArg } from './concepts.js';
import { bakeLoras, type LoraToBake } from './lora-bake.js';

export type MergeInput = OptionInput<'merge'> & {
  /** A, then optionally B and C. */
  models: string[];
  backend?: BackendChoice;
};

type Role = 'A' | 'B' | 'C';

/** merge.json: what went into a merged model and how to tell it again. */
export interface MergeRecord {
  painter: string;
  /** 'lora' when only LoRAs were baked into A. */
  method: MergeMethod | 'lora';
  formula: string;
  multiplier?: number;
  models: { role: Role; path: string; sha256: string; hash: string; recipe?: unknown }[];
  loras: { file: string; scale: number; hash: string }[];
  half: boolean;
  /** An inpainting A merged with ordinary models (only A's first 4 input channels merged). */
  inpainting: boolean;
  output: { path: string; layout: string; hash: string };
}

export interface MergeResult extends MergeRecord {
  /** Where merge.json was written. */
  record: string;
  /** Weights LoRAs changed, per component. */
  changed: { unet: number; text_encoder: number };
  tensors: number;
  dtypes: Record<string, number>;
  bytes: number;
}

const ROLES: readonly Role[] = ['A', 'B', 'C'];
const A1111_METHOD: Record<MergeRecord['method'], string> = { 'weighted-sum': 'Weighted sum', 'add-difference': 'Add difference', lora: 'No interpolation' };
const FORMULA: Record<MergeRecord['method'], string> = { 'weighted-sum': 'A·(1 − M) + B·M', 'add-difference': 'A + (B − C)·M', lora: 'A' };

function chooseMethod(o: MergeOptions, count: number): MergeRecord['method'] {
  if (count === 1) {
    if (o.method !== undefined) throw new UsageError(`merge: --method ${o.method} merges checkpoints; give model B${o.method === 'add-difference' ? ' and C' : ''} after MODEL`);
    if ((o.lora ?? []).length === 0) throw new UsageError('merge: nothing to merge; give a second model B (and C), or --lora FILE[:SCALE] to bake a LoRA into MODEL');
    return 'lora';
  }
  const method = o.method ?? (count === 3 ? 'add-difference' : 'weighted-sum');
  if (method === 'weighted-sum' && count === 3) throw new UsageError('merge: --method weighted-sum merges two models; drop C, or use --method add-difference');
  if (method === 'add-difference' && count === 2) throw new UsageError('merge: --method add-difference computes A + (B − C)·M; give a third model C');
  return method;
}

/** The merge record an input carries (a painter folder's merge.json, a single file's A1111 recipe), if any. */
function inputRecipe(model: string): unknown {
  if (fs.statSync(model).isDirectory()) {
    const file = path.join(model, 'merge.json');
    return fs.existsSync(file) ? JSON.parse(fs.readFileSync(file, 'utf8')) : undefined;
  }
  if (!isSingleFileName(model)) return undefined;
  const f = openSafetensors(model);
  try {
    const recipe = f.metadata['sd_merge_recipe'];
    return recipe ? JSON.parse(recipe) : undefined;
  } catch {
    return undefined;
  } finally {
    closeSafetensors(f);
  }
}

/** A1111's recipe metadata for a single-file output (the fields its merger writes). */
function a1111Metadata(r: Omit<MergeRecord, 'output' | 'painter'>): Record<string, string> {
  const sha = (role: Role) => r.models.find((m) => m.role === role)?.sha256 ?? null;
  const recipe = {
    type: 'painter',
    primary_model_hash: sha('A'),
    secondary_model_hash: sha('B'),
    tertiary_model_hash: sha('C'),
    interp_method: A1111_METHOD[r.method],
    multiplier: r.multiplier ?? null,
    save_as_half: r.half,
    custom_name: '',
    config_source: 0,
    bake_in_vae: 'None',
    discard_weights: '',
    is_inpainting: r.inpainting,
    is_instruct_pix2pix: false,
    loras: r.loras,
  };
  const models = Object.fromEntries(
    r.models.map((m) => [m.sha256, { name: path.basename(m.path).replace(/\.(safetensors|ckpt)$/i, ''), legacy_hash: '', sd_merge_recipe: m.recipe ?? null }]),
  );
  return { sd_merge_recipe: JSON.stringify(recipe), sd_merge_models: JSON.stringify(models) };
}

/** Where a single-file output's merge.json goes: NAME.merge.json beside NAME.safetensors. */
export function recordPathFor(output: string): string {
  return isSingleFileName(output) ? output.replace(/\.safetensors$/i, '.merge.json') : path.join(output, 'merge.json');
}

export async function merge(request: MergeInput): Promise<MergeResult> {
  const { models: given, backend, ...passed } = request;
  const o = resolveConfig('merge', passed);
  const models = given.filter((m) => m !== '');
  if (models.length === 0 || models.length > 3) throw new UsageError(`merge: give one to three models (A, B, C); got ${models.length}`);
  if (!o.out) throw new UsageError('merge: --out is required: a folder for a diffusers model, or a name ending in .safetensors for a single file');
  if (!Number.isFinite(o.multiplier)) throw new UsageError('merge: --multiplier must be a number, e.g. 0.3');
  const method = chooseMethod(o, models.length);
  const output = o.out;
  checkOutput('merge', models, output, o.overwrite, 'a diffusers folder or a .safetensors/.ckpt checkpoint');
  const loraArgs = (o.lora ?? []).map(parseLoraArg);
  for (const { file } of loraArgs) {
    if (!fs.existsSync(file)) throw new PainterError(`${file}: LoRA file not found; give --lora FILE[:SCALE] with an existing file`);
  }

  const opened: ModelSources[] = [];
  const loras: LoraToBake[] = [];
  try {
    for (const m of models) opened.push(openModelSources(m, { config: o.config, ema: o.ema && !fs.statSync(m).isDirectory() }));
    const [a, b, c] = opened as [ModelSources, ModelSources?, ModelSources?];
    const merged = b ? mergeCheckpoints({ method: method as MergeMethod, multiplier: o.multiplier, a: a.parts, b: b.parts, c: c?.parts, names: { a: models[0]!, b: models[1]!, c: models[2] } }) : { parts: a.parts, inpainting: false };
    if (loraArgs.length > 0) await useBackend(backend);
    for (const { file, scale } of loraArgs) loras.push({ lora: readLoraFile(file), scale });
    const baked = loras.length > 0 ? await bakeLoras(merged.parts, loras) : { parts: merged.parts, changed: { unet: 0, text_encoder: 0 } };

    const inputs = models.map((m, i) => {
      const sha256 = modelSha256(m);
      const recipe = inputRecipe(m);
      return { role: ROLES[i]!, path: m, sha256, hash: sha256.slice(0, 10), ...(recipe === undefined ? {} : { recipe }) };
    });
    const record: Omit<MergeRecord, 'output' | 'painter'> = {
      method,
      formula: FORMULA[method],
      ...(method === 'lora' ? {} : { multiplier: o.multiplier }),
      models: inputs,
      loras: loraArgs.map(({ file, scale }) => ({ file, scale, hash: shortHash(file) })),
      half: o.half,
      inpainting: merged.inpainting,
    };
    const arch = o.arch === 'auto' ? a.arch : o.arch;
    const full = (layout: string, hash: string): MergeRecord => ({ painter: packageVersion(), ...record, output: { path: output, layout, hash } });
    const single = isSingleFileName(output);
    // A folder's hash is taken in its temporary folder (its UNet file is the same once renamed).
    let folderHash = '';
    const written = await writeModelSources(
      output,
      { parts: baked.parts, configs: a.configs, tokenizer: a.tokenizer, arch },
      {
        half: o.half,
        overwrite: o.overwrite,
        metadata: single ? a1111Metadata(record) : undefined,
        finishFolder: async (dir) => {
          folderHash = modelHash(dir);
          await writeBytesAtomic(path.join(dir, 'merge.json'), `${JSON.stringify(full('diffusers folder', folderHash), null, 2)}\n`);
        },
      },
    );
    const result = full(written.to, single ? modelHash(output) : folderHash);
    const recordFile = recordPathFor(output);
    if (single) await writeBytesAtomic(recordFile, `${JSON.stringify(result, null, 2)}\n`);
    return { ...result, record: recordFile, changed: baked.changed, tensors: written.tensors, dtypes: written.dtypes, bytes: written.bytes };
  } finally {
    for (const m of opened) m.close();
    for (const { lora } of loras) disposeLora(lora);
  }
}
