/** Options of the commands that write model files: convert and merge. */
import { ARCH, CONFIG, JSON_OUTPUT, PREDICTION_TYPE, type OptionSpec } from './spec.js';

export const CONVERT_OPTIONS = [
  {
    ...CONFIG,
    describe: "For a single-file input: a diffusers folder whose configs and tokenizer describe it (default: the file's own when painter wrote it, else inferred from its keys and shapes)",
    presettable: false,
  },
  { ...ARCH, choices: ['auto', 'sd1', 'sd2'], describe: "Text-encoder layout of a single-file output (auto: the input file's; for a folder OpenCLIP/sd2 when its text encoder uses gelu, as SD 2.x's does)", presettable: false },
  { ...PREDICTION_TYPE, describe: "What the model predicts, written into the output's scheduler config (default: the input's; see --prediction-type of generate)", presettable: false },
  { name: 'ema', type: 'boolean', default: false, describe: "A single-file checkpoint's UNet from its EMA copy (model_ema.*), as diffusers' --extract_ema (default: the training weights; EMA keys are left out)" },
  { name: 'half', type: 'boolean', default: false, describe: "Store a model's floating-point weights as float16 (default: each tensor keeps the input's dtype)" },
  {
    name: 'format',
    type: 'string',
    choices: ['diffusers', 'a1111', 'kohya'],
    describe: 'Embeddings and LoRA: the layout to write (embeddings: diffusers = one tensor named by its token, a1111/kohya = emb_params; LoRA: diffusers or kohya naming, a1111 = kohya)',
  },
  { name: 'token', type: 'string', describe: "Embeddings: the trigger token the output names (default: the input's, else its file name)" },
  { name: 'overwrite', type: 'boolean', default: false, describe: 'Replace OUT when it exists (without it, an existing OUT is refused)' },
  { ...JSON_OUTPUT, describe: 'Print what was written as JSON on stdout' },
] as const satisfies readonly OptionSpec[];

export const MERGE_OPTIONS = [
  { name: 'out', type: 'string', describe: 'Where to write the merged model (required): a name ending in .safetensors is a single file, anything else a diffusers folder' },
  { name: 'lora', type: 'string[]', describe: 'LoRA file(s) to bake in, as FILE[:SCALE] (every format generate --lora reads), after the checkpoint merge and in the order given' },
  {
    name: 'method',
    type: 'string',
    choices: ['weighted-sum', 'add-difference'],
    describe: "How B (and C) combine with A, as AUTOMATIC1111's Checkpoint Merger: weighted-sum = A·(1 − M) + B·M, add-difference = A + (B − C)·M (default: weighted-sum with two models, add-difference with three)",
  },
  { name: 'multiplier', type: 'number', default: 0.3, describe: 'M of the merge formula (A1111\'s default 0.3)' },
  { ...CONFIG, describe: "For single-file inputs: a diffusers folder whose configs and tokenizer describe them (default: each file's own, else inferred from its keys and shapes)", presettable: false },
  { ...ARCH, choices: ['auto', 'sd1', 'sd2'], describe: "Text-encoder layout of a single-file output (auto: A's)", presettable: false },
  { name: 'ema', type: 'boolean', default: false, describe: "Single-file inputs' UNets from their EMA copies (model_ema.*), as diffusers' --extract_ema (default: the training weights)" },
  { name: 'half', type: 'boolean', default: false, describe: "Store the floating-point weights as float16 (default: each tensor keeps A's dtype)" },
  { name: 'overwrite', type: 'boolean', default: false, describe: 'Replace --out when it exists (without it, an existing output is refused)' },
  { ...JSON_OUTPUT, describe: 'Print what was written as JSON on stdout' },
] as const satisfies readonly OptionSpec[];

