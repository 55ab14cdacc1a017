/**
 * A model's weights as they are stored, without loading them: a diffusers folder or a single-file
 * checkpoint opened as diffusers-named component sources (PyTorch layout, each tensor read when
 * asked for, in its stored dtype), checked strictly against the configs, with the configs and
 * tokenizer it goes with. `painter convert` writes these out in another layout.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { PainterError } from '../errors.js';
import { CLIP_TEXT_IGNORED_KEYS, clipTextParamShapes } from '../core/models/clip-text.js';
import { unetParamShapes } from '../core/models/unet.js';
import { vaeParamShapes } from '../core/models/vae.js';
import type { ParamShapes } from '../core/params.js';
import type { ClipTokenizer } from '../core/tokenizer/clip-tokenizer.js';
import { checkFolder, weightFiles } from './load-model.js';
import { loadClipTokenizer } from './load-tokenizer.js';
import { matchWeights } from './load-weights.js';
import { openWeightSource } from './open-weights.js';
import { readConfigs, type ModelConfigs } from './pipeline-configs.js';
import type { SdFamily } from './bundled-configs.js';
import { archOfKeys, singleFileViews, type Component, type ComponentSources } from './single-file.js';
import type { Arch } from './single-file-keys.js';
import type { PredictionType } from './single-file-infer.js';
import { singleFileSetup } from './single-file-setup.js';
import { weightView, type ViewEntry, type WeightSource } from './weight-source.js';

export interface ModelSources {
  layout: 'diffusers' | 'single-file';
  configs: ModelConfigs;
  tokenizer: ClipTokenizer;
  /** The text-encoder layout a single file of this model has (OpenCLIP for SD 2.x). */
  arch: Arch;
  /** A single file's family as inferred from its keys and shapes. */
  family?: SdFamily;
  parts: ComponentSources;
  /** Entries of a single file that no component holds (EMA copies, OpenCLIP's projection, …). */
  leftOut: string[];
  close(): void;
}

export interface OpenModelOptions {
  /** A single file's configs and tokenizer from this diffusers folder. */
  config?: string;
  /** The text-encoder layout of single files (default: the file's own; for a folder OpenCLIP when the text encoder uses gelu, as SD 2.x's does). */
  arch?: Arch;
  predictionType?: PredictionType;
  /** A single file's UNet from its EMA copy (`model_ema.*`), as diffusers' `--extract_ema`. */
  ema?: boolean;
}

const EXPECTED: Record<Component, (c: ModelConfigs) => ParamShapes> = {
  unet: (c) => unetParamShapes(c.unet),
  vae: (c) => vaeParamShapes(c.vae),
  text_encoder: (c) => clipTextParamShapes(c.textEncoder),
};

/** The expected weights of `component`, checked strictly, as one view over its sources. */
function checked(component: Component, sources: WeightSource[], configs: ModelConfigs, where: string): WeightSource {
  const found = matchWeights(sources, EXPECTED[component](configs), component, component === 'text_encoder' ? CLIP_TEXT_IGNORED_KEYS : undefined);
  const view = new Map<string, ViewEntry>();
  for (const [key, src] of found) view.set(key, { ...src.entries.get(key)!, read: () => src.read(key), fileKey: src.fileKey?.(key) ?? key });
  return weightView(where, view);
}

function openFolder(dir: string, opts: OpenModelOptions): ModelSources {
  checkFolder(dir);
  if (opts.ema) throw new PainterError(`${dir}: a diffusers folder holds one set of UNet weights; the EMA option reads the model_ema.* copy of a single-file checkpoint`);
  const configs = readConfigs(dir);
  const tokenizer = loadClipTokenizer(path.join(dir, 'tokenizer'));
  const opened: WeightSource[] = [];
  try {
    const part = (component: Component) => {
      const files = weightFiles(path.join(dir, component)).map((f) => openWeightSource(f));
      opened.push(...files);
      return checked(component, files, configs, path.join(dir, component));
    };
    const parts = { unet: part('unet'), vae: part('vae'), text_encoder: part('text_encoder') };
    const arch = opts.arch ?? (configs.textEncoder.hidden_act === 'gelu' ? 'sd2' : 'sd1');
    return { layout: 'diffusers', configs, tokenizer, arch, parts, leftOut: [], close: () => opened.forEach((f) => f.close()) };
  } catch (e) {
    opened.forEach((f) => f.close());
    throw e;
  }
}

function openSingleFile(file: string, opts: OpenModelOptions): ModelSources {
  const setup = singleFileSetup(file, { config: opts.config, predictionType: opts.predictionType });
  const src = openWeightSource(file, { ema: opts.ema });
  try {
    const arch = opts.arch ?? archOfKeys(src.entries.keys()) ?? 'sd1';
    const views = singleFileViews(src, setup.configs, arch);
    const parts = {
      unet: checked('unet', [views.unet], setup.configs, file),
      vae: checked('vae', [views.vae], setup.configs, file),
      text_encoder: checked('text_encoder', [views.text_encoder], setup.configs, file),
    };
    const used = new Set(Object.values(parts).flatMap((p) => [...p.entries.keys()].map((k) => p.fileKey!(k))));
    const leftOut = [...src.entries.keys()].filter((k) => !used.has(k));
    return { layout: 'single-file', configs: setup.configs, tokenizer: setup.tokenizer, arch, family: setup.family, parts, leftOut, close: () => src.close() };
  } catch (e) {
    src.close();
    throw e;
  }
}

/** Opens a diffusers folder or a single-file checkpoint (`.safetensors` / `.ckpt`); the caller closes it. */
export function openModelSources(source: string, opts: OpenModelOptions = {}): ModelSources {
  return fs.statSync(source).isDirectory() ? openFolder(source, opts) : openSingleFile(source, opts);
}
