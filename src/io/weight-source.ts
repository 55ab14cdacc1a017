/**
 * One interface over the files a model's weights come in: safetensors (read from the header on)
 * and torch.save `.ckpt` checkpoints (torch-checkpoint.ts); open-weights.ts picks by content.
 * Loaders ask for keys and read one tensor at a time, in PyTorch layout, whatever the file.
 */
import { PainterError } from '../errors.js';
import { closeSafetensors, openSafetensors, readTensor, type HostTensor } from './safetensors.js';

/** Storage dtype as safetensors names it (torch float64 is 'F64', read as float32). */
export type WeightDtype = 'F32' | 'F16' | 'BF16' | 'F64' | 'I32' | 'I64';

export interface WeightEntry {
  dtype: WeightDtype;
  /** PyTorch layout. */
  shape: number[];
}

export interface WeightSource {
  readonly path: string;
  /** Tensors by key, in file order; nothing is read until `read`. */
  readonly entries: ReadonlyMap<string, WeightEntry>;
  /**
   * The training step a `.ckpt` records (`global_step`, beside or inside its state dict), which
   * tells SD 2.0-base (875000) from the 768 v-prediction models; safetensors files record none.
   */
  readonly globalStep?: number;
  /** A safetensors file's `__metadata__` (absent in `.ckpt` files). */
  readonly metadata?: Readonly<Record<string, string>>;
  /** Reads one tensor (floats as float32). */
  read(key: string): HostTensor;
  /** The key as the file names it, for messages (a renamed view's keys differ from the file's). */
  fileKey?(key: string): string;
  close(): void;
}

/** One tensor of a renamed view: its header facts, how to read it, and its key in the file. */
export interface ViewEntry extends WeightEntry {
  read(): HostTensor;
  fileKey: string;
}

/**
 * A WeightSource over tensors under other names (or reshaped, or split), read on demand from
 * an underlying source; closing the view leaves the underlying source open.
 */
export function weightView(path: string, view: ReadonlyMap<string, ViewEntry>): WeightSource {
  const get = (key: string): ViewEntry => {
    const e = view.get(key);
    if (!e) fail(path, `no tensor named ${JSON.stringify(key)}`);
    return e;
  };
  return {
    path,
    entries: new Map([...view].map(([k, e]) => [k, { dtype: e.dtype, shape: e.shape }])),
    read: (key) => get(key).read(),
    fileKey: (key) => view.get(key)?.fileKey ?? key,
    close: () => undefined,
  };
}

export interface WeightSourceOptions {
  /**
   * Read the UNet's EMA copy in place of its training weights: `model.diffusion_model.X` comes
   * from `model_ema.` + `diffusion_modelX` with the dots removed, as CompVis checkpoints store it
   * (diffusers' `extract_ema`). Without it the `model_ema.*` keys are ordinary, unused entries.
   */
  ema?: boolean;
}

function fail(file: string, what: string): never {
  throw new PainterError(`${file}: ${what}`);
}

export function safetensorsSource(file: string): WeightSource {
  const f = openSafetensors(file);
  return { path: file, entries: f.entries, metadata: f.metadata, read: (key) => readTensor(f, key), close: () => closeSafetensors(f) };
}

const UNET_KEY = 'model.diffusion_model.';
const EMA_PREFIX = 'model_ema.';

/** CompVis' flat EMA name of a UNet key: `model_ema.` + the key after `model.`, dots removed. */
export function emaKey(unetKey: string): string {
  return EMA_PREFIX + unetKey.slice('model.'.length).replaceAll('.', '');
}

/** The source with the UNet read from its EMA copy (see WeightSourceOptions.ema). */
export function withEma(src: WeightSource): WeightSource {
  const unet = [...src.entries.keys()].filter((k) => k.startsWith(UNET_KEY));
  if (![...src.entries.keys()].some((k) => k.startsWith(EMA_PREFIX))) {
    fail(src.path, 'holds no EMA weights (no model_ema.* keys); load it without the EMA option');
  }
  for (const k of unet) {
    const ema = src.entries.get(emaKey(k));
    if (!ema) fail(src.path, `EMA weight ${JSON.stringify(emaKey(k))} for ${JSON.stringify(k)} missing; the checkpoint's EMA copy is incomplete`);
    if (ema.shape.join() !== src.entries.get(k)!.shape.join()) fail(src.path, `EMA weight ${JSON.stringify(emaKey(k))} has another shape than ${JSON.stringify(k)}`);
  }
  return { ...src, read: (key) => src.read(key.startsWith(UNET_KEY) ? emaKey(key) : key) };
}
