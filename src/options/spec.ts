/**
 * The shapes of the option table (options/table.ts) and the option specs several commands share.
 */
export type OptionType = 'string' | 'number' | 'integer' | 'boolean' | 'string[]';

export interface OptionSpec {
  readonly name: string;
  readonly type: OptionType;
  readonly describe: string;
  readonly default?: string | number | boolean;
  readonly choices?: readonly string[];
  /** Inclusive bounds for numbers. */
  readonly min?: number;
  readonly max?: number;
  /** Lower bound that the value must exceed (e.g. a learning rate > 0). */
  readonly above?: number;
  /** Whether a preset file may set it (paths to the user's own data may not). */
  readonly presettable?: boolean;
  readonly alias?: string;
  /**
   * 'cli': how the command line prints (--json), not what the command does: not part of the
   * command's typed options, its presets or its run config.
   */
  readonly scope?: 'cli';
}

export interface PositionalSpec {
  readonly name: string;
  readonly describe: string;
  /** `<name>` (required) or `[name]` (optional) in the usage line. */
  readonly required: boolean;
}

export interface CommandSpec {
  readonly name: string;
  readonly describe: string;
  readonly positionals?: readonly PositionalSpec[];
  readonly options: readonly OptionSpec[];
}

/** The positional part of a command's usage line: " <image> <prompt>", " [file]". */
export function positionalUsage(c: CommandSpec): string {
  return (c.positionals ?? []).map((p) => (p.required ? ` <${p.name}>` : ` [${p.name}]`)).join('');
}

export const MODEL = {
  name: 'model',
  type: 'string',
  describe: 'Base model: a diffusers folder (model_index.json, unet/, vae/, text_encoder/, tokenizer/, scheduler/) or a single-file .safetensors or .ckpt checkpoint',
  presettable: true,
} as const satisfies OptionSpec;

export const ARCH = {
  name: 'arch',
  type: 'string',
  choices: ['auto', 'sd1', 'sd2'],
  default: 'auto',
  describe: 'Architecture of a single-file checkpoint when it cannot be inferred (sd1: CLIP ViT-L text encoder, sd2: OpenCLIP ViT-H)',
  presettable: true,
} as const satisfies OptionSpec;

export const CONFIG = {
  name: 'config',
  type: 'string',
  describe:
    "For a single-file checkpoint: a diffusers folder of the same architecture whose configs and tokenizer describe it (default: the file's own when painter wrote it, else the SD 1.x / 2.x / inpainting configs painter ships, sized from the file's tensors)",
  presettable: true,
} as const satisfies OptionSpec;

export const PREDICTION_TYPE = {
  name: 'prediction-type',
  type: 'string',
  choices: ['epsilon', 'v_prediction'],
  describe: "What the model predicts, over its scheduler config (default: the config's; an SD 2.x single file is v_prediction unless saved at SD 2.0-base's step 875000, as diffusers decides)",
  presettable: true,
} as const satisfies OptionSpec;

/** Seeds are 32-bit, as in AUTOMATIC1111. */
export const MAX_SEED = 2 ** 32 - 1;

export const SEED = { name: 'seed', type: 'integer', min: 0, max: MAX_SEED, default: 0, describe: 'Random seed: same seed and settings give the same result on the same backend' } as const satisfies OptionSpec;

export const JSON_OUTPUT = { name: 'json', type: 'boolean', scope: 'cli', describe: 'Print the result as JSON on stdout' } as const satisfies OptionSpec;


/** The embeddings folder (training installs there, sampling loads from there). */
export const EMBEDDINGS_DIR = {
  name: 'embeddings-dir',
  type: 'string',
  describe: 'Embeddings folder: invert installs what it learns there, generate loads those whose trigger word the prompt uses (default: $PAINTER_EMBEDDINGS, else ./embeddings)',
} as const satisfies OptionSpec;
