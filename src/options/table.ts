/**
 * The one declarative table of every command's options. From it come the yargs definitions
 * (cli/), the typed options of each command (options/types.ts, by type-level derivation: no
 * casts), preset validation and defaults (options/resolve.ts) and the README's option tables
 * (options/markdown.ts, checked by a test).
 */
import { autoOrderText, BACKEND_CHOICES } from '../backend/table.js';
import { BENCH_ITEMS } from '../bench/items.js';
import { LOCAL_BLEND_THRESHOLD } from '../core/pipeline/local-blend.js';
import { EMPHASIS_MODES } from '../core/prompt/chunks.js';
import { SAMPLER_NAMES, SIGMA_SCHEDULES } from '../core/schedulers/sampler-names.js';
import { CONVERT_OPTIONS, MERGE_OPTIONS } from './model-file-options.js';
import { ARCH, CONFIG, EMBEDDINGS_DIR, JSON_OUTPUT, MAX_SEED, MODEL, PREDICTION_TYPE, SEED, type CommandSpec, type OptionSpec } from './spec.js';
import { DREAMBOOTH_OPTIONS, INVERT_OPTIONS } from './training-options.js';

export { positionalUsage, MAX_SEED, type CommandSpec, type OptionSpec, type OptionType, type PositionalSpec } from './spec.js';
export { CONVERT_OPTIONS, MERGE_OPTIONS } from './model-file-options.js';
export { DREAMBOOTH_OPTIONS, INVERT_OPTIONS } from './training-options.js';

/** The option every command takes, before its own. */
export const BACKEND_OPTION = {
  name: 'backend',
  type: 'string',
  choices: BACKEND_CHOICES,
  describe: `Compute backend (auto: the first that loads of ${autoOrderText()}); also PAINTER_BACKEND`,
} as const satisfies OptionSpec;

/** The other option every command takes: how many threads the CPU backend computes on. */
export const THREADS_OPTION = {
  name: 'threads',
  type: 'integer',
  min: 1,
  describe: 'Threads the wasm backend computes on (default: every core; results are the same bit for bit); also PAINTER_THREADS',
} as const satisfies OptionSpec;

/** Sampler, schedule and prompt language, shared by the sampling commands. */
const SAMPLING = [
  {
    name: 'scheduler',
    type: 'string',
    choices: SAMPLER_NAMES,
    default: 'dpm++2m',
    describe: "Sampler, by AUTOMATIC1111's name (\"DPM++ 2M\", \"Euler a\", \"UniPC\", \"LCM\" for LCM-distilled models, …) or painter's short one; an old A1111 name such as \"DPM++ 2M Karras\" also sets --schedule",
  },
  {
    name: 'schedule',
    type: 'string',
    choices: SIGMA_SCHEDULES,
    default: 'automatic',
    describe: "Noise schedule (A1111's Schedule type): automatic follows the model's scheduler config; karras and exponential space the noise levels as k-diffusion does",
  },
  {
    name: 'emphasis',
    type: 'string',
    choices: EMPHASIS_MODES,
    default: 'lpw',
    describe: "Prompt emphasis (word:1.2): lpw restores the mean over the whole prompt and cuts chunks at 75 tokens (diffusers' long-prompt-weighting pipeline); a1111 restores it per chunk and cuts after a comma, as AUTOMATIC1111; none reads brackets as text",
  },
] as const satisfies readonly OptionSpec[];

/** Learned concepts a sampling command loads. */
const CONCEPT_OPTIONS = [
  { name: 'embedding', type: 'string[]', describe: 'Textual Inversion file(s): painter, diffusers learned_embeds, AUTOMATIC1111 .pt/.safetensors' },
  { name: 'token', type: 'string', describe: 'Prompt token for a single --embedding (default: from the file)' },
  EMBEDDINGS_DIR,
  { name: 'lora', type: 'string[]', describe: 'LoRA file(s) as FILE[:SCALE] (diffusers or kohya naming)' },
  { name: 'lora-dir', type: 'string', describe: 'Folder of LoRA files for <lora:NAME:SCALE> in prompts (default: $PAINTER_LORAS, else ./loras)' },
] as const satisfies readonly OptionSpec[];

export const GENERATE_OPTIONS = [
  MODEL,
  CONFIG,
  ARCH,
  PREDICTION_TYPE,
  { name: 'negative', type: 'string', default: '', describe: 'Negative prompt (what the image should not show)' },
  { name: 'steps', type: 'integer', min: 1, max: 1000, default: 30, describe: 'Denoising steps' },
  { name: 'guidance', type: 'number', min: 0, default: 7.5, describe: 'Classifier-free guidance scale (1 skips the unconditional pass)' },
  ...SAMPLING,
  SEED,
  { name: 'count', type: 'integer', min: 1, default: 1, describe: 'Number of images (seeds seed, seed+1, …)' },
  { name: 'batch', type: 'integer', min: 1, default: 1, describe: 'Images computed together' },
  { name: 'width', type: 'integer', min: 8, describe: "Image width in pixels (multiple of the latent factor; default: the model's size)" },
  { name: 'height', type: 'integer', min: 8, describe: "Image height in pixels (multiple of the latent factor; default: the model's size)" },
  { name: 'out', type: 'string', default: './outputs', describe: 'Output folder for PNG files' },
  ...CONCEPT_OPTIONS,
  { name: 'clip-skip', type: 'integer', min: 0, max: 11, default: 0, describe: "Use the text encoder's output this many layers before the last" },
  { name: 'latents', type: 'string', describe: 'Initial latents: a safetensors file with one tensor [B, C, h, w] (NCHW), for exact reproduction across tools' },
  { name: 'subseed', type: 'integer', min: 0, max: MAX_SEED, describe: "Variation seed (A1111): each image's noise is moved toward the noise of this seed (+ its index) by --subseed-strength" },
  { name: 'subseed-strength', type: 'number', min: 0, max: 1, default: 0, describe: 'Variation strength: 0 keeps the image of --seed, 1 gives the image of --subseed; small values give close variants' },
  {
    name: 'from-png',
    type: 'string',
    describe: "Re-run the settings stored in a PNG by painter or AUTOMATIC1111 (prompt, negative prompt, steps, sampler and schedule, CFG scale, seed, size, clip skip, variation seed, <lora:…> tags); flags you pass override them",
  },
  {
    name: 'p2p',
    type: 'string',
    describe: 'Prompt-to-Prompt: also draw this edited prompt from the same noise, keeping the layout (a word swap for as many words, else a refinement); writes both images',
  },
  { name: 'cross-replace', type: 'number', min: 0, max: 1, default: 0.4, describe: "Prompt-to-Prompt: share of the steps whose cross-attention comes from the source prompt" },
  { name: 'self-replace', type: 'number', min: 0, max: 1, default: 0.4, describe: "Prompt-to-Prompt: share of the steps whose self-attention (maps of at most 16×16) is the source's" },
  {
    name: 'classify',
    type: 'string[]',
    describe: 'Classifier guidance: steer sampling toward ATTRIBUTE=CLASS read by --classifier from the predicted clean image (e.g. colour=orange; repeatable)',
  },
  { name: 'classifier', type: 'string', describe: "Attribute classifier folder for --classify (default: the bundled painter-mini classifier, fixtures/mini-classifier)" },
  { name: 'classifier-scale', type: 'number', min: 0, default: 10, describe: 'Classifier guidance scale s: ε̂ − √(1−ᾱ)·s·∇ log p(class | x̂₀)' },
  { name: 'reweight', type: 'string[]', describe: 'Prompt-to-Prompt: scale the attention to a word of the edited prompt, WORD=FACTOR (repeatable); alone, reweights the prompt itself' },
  {
    name: 'local-blend',
    type: 'string[]',
    describe: "Prompt-to-Prompt local blending: words of the source and/or edited prompt (comma-separated or repeated, e.g. cat,dog) whose cross-attention marks the region that changes; outside it the edit keeps the source's latents",
  },
  { name: 'blend-threshold', type: 'number', min: 0, max: 1, default: LOCAL_BLEND_THRESHOLD, describe: "With --local-blend: share of the words' peak attention above which a latent cell is edited" },
  { ...JSON_OUTPUT, describe: 'Print files, seeds and timings as JSON on stdout' },
] as const satisfies readonly OptionSpec[];

/** What `edit` shares with `generate`: prompt conditioning, sampler, concepts, output. */
export const EDIT_OPTIONS = [
  MODEL,
  CONFIG,
  ARCH,
  PREDICTION_TYPE,
  {
    name: 'strength',
    type: 'number',
    above: 0,
    max: 1,
    default: 0.6,
    describe: "How much to change (denoising strength): the share of the sampler's steps that run, from the input noised to that level; 1 repaints from (nearly) pure noise, 0.3 keeps most of the picture",
  },
  { name: 'mask', type: 'string', describe: 'Mask image: white is repainted, black kept (any image, binarised at 50%); required by an inpainting model (9-channel UNet)' },
  { name: 'mask-blur', type: 'integer', min: 0, default: 0, describe: 'Gaussian blur of the mask in pixels before it is binarised (rounds its corners)' },
  {
    name: 'paste-back',
    type: 'boolean',
    default: false,
    describe: "Put the picture's own pixels back outside the mask (as AUTOMATIC1111 does); without it the output is the decoded latents, as diffusers', whose decoder spreads the edit a little over the whole picture",
  },
  {
    name: 'preserve-background',
    type: 'boolean',
    default: false,
    describe:
      "Fit the VAE decoder to this picture outside the mask before decoding (Blended Latent Diffusion's background reconstruction): the background comes out as the input's without pasting pixels back, the edit as generated",
  },
  { name: 'background-steps', type: 'integer', min: 1, default: 100, describe: 'Optimisation steps of --preserve-background' },
  { name: 'outpaint', type: 'string', describe: 'Extend the canvas by LEFT,TOP,RIGHT,BOTTOM pixels and paint the new area (e.g. 0,0,64,0)' },
  {
    name: 'source',
    type: 'string',
    describe: 'Prompt-to-Prompt on the picture: a prompt describing it; the picture is DDIM-inverted with it, then redrawn with PROMPT keeping its layout (writes the reconstruction and the edit; DDIM, all --steps)',
  },
  {
    name: 'null-text',
    type: 'boolean',
    default: false,
    describe: 'With --source: null-text inversion — optimise the unconditional embedding of every step so that guided sampling reconstructs the picture (Mokady et al.; slower: up to 10 UNet passes with gradients per step)',
  },
  { name: 'cross-replace', type: 'number', min: 0, max: 1, default: 0.4, describe: 'With --source: share of the steps whose cross-attention comes from the source prompt' },
  { name: 'self-replace', type: 'number', min: 0, max: 1, default: 0.4, describe: "With --source: share of the steps whose self-attention (maps of at most 16×16) is the source's" },
  {
    name: 'local-blend',
    type: 'string[]',
    describe: "With --source: local blending — words of the source and/or PROMPT (comma-separated or repeated) whose cross-attention marks the region that changes; outside it the edit keeps the reconstruction's latents",
  },
  { name: 'blend-threshold', type: 'number', min: 0, max: 1, default: LOCAL_BLEND_THRESHOLD, describe: "With --local-blend: share of the words' peak attention above which a latent cell is edited" },
  { name: 'negative', type: 'string', default: '', describe: 'Negative prompt (what the image should not show)' },
  { name: 'steps', type: 'integer', min: 1, max: 1000, default: 30, describe: 'Denoising steps of the full schedule (strength × steps of them run)' },
  { name: 'guidance', type: 'number', min: 0, default: 7.5, describe: 'Classifier-free guidance scale (1 skips the unconditional pass)' },
  ...SAMPLING,
  SEED,
  { name: 'count', type: 'integer', min: 1, default: 1, describe: 'Number of results (seeds seed, seed+1, …)' },
  { name: 'out', type: 'string', default: './outputs', describe: 'Output folder for PNG files' },
  ...CONCEPT_OPTIONS,
  { name: 'clip-skip', type: 'integer', min: 0, max: 11, default: 0, describe: "Use the text encoder's output this many layers before the last" },
  {
    name: 'noise',
    type: 'string',
    describe: 'Random draws from a safetensors file instead of the seed, for exact reproduction across tools: posterior, noise, posterior_masked, step_noise (NCHW; keys an edit does not use are ignored)',
  },
  { ...JSON_OUTPUT, describe: 'Print files, seeds and timings as JSON on stdout' },
] as const satisfies readonly OptionSpec[];

export const DDIM_INVERT_OPTIONS = [
  MODEL,
  CONFIG,
  ARCH,
  PREDICTION_TYPE,
  { name: 'prompt', type: 'string', default: '', describe: 'Prompt the picture is inverted with (use the same when regenerating or editing)' },
  { name: 'steps', type: 'integer', min: 1, max: 1000, default: 50, describe: 'Inversion steps (regenerate with the same number of DDIM steps)' },
  { name: 'guidance', type: 'number', min: 0, default: 1, describe: 'Classifier-free guidance during inversion (1: none, as diffusers inverts)' },
  { name: 'negative', type: 'string', default: '', describe: 'Negative prompt (with --guidance above 1)' },
  { name: 'out', type: 'string', describe: 'The noise file to write: one tensor [1, C, h, w] (NCHW) for generate --latents (default: ./IMAGE-inverted.safetensors)' },
  SEED,
  { name: 'noise', type: 'string', describe: "The VAE posterior draw from a safetensors file (key posterior, NCHW) instead of the seed's" },
  ...CONCEPT_OPTIONS,
  { name: 'clip-skip', type: 'integer', min: 0, max: 11, default: 0, describe: "Use the text encoder's output this many layers before the last" },
  { ...JSON_OUTPUT, describe: 'Print the noise file and timings as JSON on stdout' },
] as const satisfies readonly OptionSpec[];

export const BENCH_OPTIONS = [
  { name: 'model', type: 'string', describe: 'Model to measure (default: the bundled fixtures/tiny-sd-a)' },
  { name: 'runs', type: 'integer', min: 1, default: 10, describe: 'Timed runs per item' },
  { name: 'warmup', type: 'integer', min: 0, default: 2, describe: 'Untimed warm-up runs per item' },
  { name: 'only', type: 'string[]', describe: `Items to run (comma-separated or repeated): ${BENCH_ITEMS.join(', ')}` },
  { name: 'profile', type: 'boolean', default: false, describe: 'Also print per-kernel time of one training step' },
  { name: 'compare', type: 'boolean', default: false, describe: "Run the suite with painter's fast CPU kernels off, then on" },
  { ...JSON_OUTPUT, describe: 'Print the report as JSON on stdout' },
] as const satisfies readonly OptionSpec[];

export const INFO_OPTIONS = [
  { name: 'model', type: 'string', describe: 'A diffusers model folder or single-file .safetensors checkpoint to describe' },
  { ...JSON_OUTPUT, describe: 'Print the report as JSON on stdout' },
] as const satisfies readonly OptionSpec[];

export const REPORT_OPTIONS = [{ ...JSON_OUTPUT, describe: 'Print what was written as JSON on stdout' }] as const satisfies readonly OptionSpec[];

/** Every command: usage, positional argument and options (in help order). */
export const COMMANDS = {
  invert: {
    name: 'invert',
    describe: 'Textual Inversion: learn a new word for a subject or style from 3–10 images',
    positionals: [{ name: 'dir', describe: 'Folder of training images (jpg, png, webp; default: the images in the current folder)', required: false }],
    options: INVERT_OPTIONS,
  },
  dreambooth: {
    name: 'dreambooth',
    describe: 'DreamBooth: fine-tune the model on a subject, with prior preservation (full or LoRA)',
    positionals: [{ name: 'dir', describe: 'Folder of subject images (jpg, png, webp; default: the images in the current folder)', required: false }],
    options: DREAMBOOTH_OPTIONS,
  },
  generate: {
    name: 'generate',
    describe: 'Text-to-image with classifier-free guidance, learned embeddings and LoRA',
    positionals: [{ name: 'prompt', describe: "What to draw, in AUTOMATIC1111's prompt syntax (optional with --from-png)", required: false }],
    options: GENERATE_OPTIONS,
  },
  edit: {
    name: 'edit',
    describe: 'Change an existing image: image-to-image, masked edits (inpainting), outpainting, with learned embeddings and LoRA',
    positionals: [
      { name: 'image', describe: 'The picture to edit (jpg, png, webp)', required: true },
      { name: 'prompt', describe: 'What the result should show', required: true },
    ],
    options: EDIT_OPTIONS,
  },
  'ddim-invert': {
    name: 'ddim-invert',
    describe: 'DDIM inversion: the noise from which DDIM regenerates a real picture (for generate --latents)',
    positionals: [{ name: 'image', describe: 'The picture to invert (jpg, png, webp)', required: true }],
    options: DDIM_INVERT_OPTIONS,
  },
  convert: {
    name: 'convert',
    describe: 'Convert a model between a diffusers folder and a single .safetensors file (or from .ckpt), float32 ⇄ float16; an embedding or LoRA between diffusers, A1111 and kohya layouts',
    positionals: [
      { name: 'in', describe: 'A diffusers folder, a single-file .safetensors/.ckpt checkpoint, an embedding or a LoRA file', required: true },
      { name: 'out', describe: 'Where to write: a name ending in .safetensors is a single file, anything else a diffusers folder (models)', required: true },
    ],
    options: CONVERT_OPTIONS,
  },
  merge: {
    name: 'merge',
    describe: "Bake LoRAs into a model, and merge two or three checkpoints as AUTOMATIC1111's Checkpoint Merger (weighted sum, add difference); writes merge.json with what went in",
    positionals: [
      { name: 'model', describe: 'Model A: a diffusers folder or a single-file .safetensors/.ckpt checkpoint (its configs, tokenizer and dtypes are the output\'s)', required: true },
      { name: 'b', describe: 'Model B, merged into A', required: false },
      { name: 'c', describe: 'Model C, whose difference to B is added (add-difference)', required: false },
    ],
    options: MERGE_OPTIONS,
  },
  bench: {
    name: 'bench',
    describe: 'Measure training and generation speed on this machine (median of repeated runs after warm-up)',
    options: BENCH_OPTIONS,
  },
  info: {
    name: 'info',
    describe: 'Versions, compute backend; what a model, a Textual Inversion embedding or a LoRA file holds; the parameters stored in a PNG',
    positionals: [{ name: 'file', describe: 'A model folder or checkpoint (same as --model), an embedding or LoRA file, or a PNG', required: false }],
    options: INFO_OPTIONS,
  },
  report: {
    name: 'report',
    describe: "Write DIR/index.html: a training run's report (loss, validation samples, timings, settings, results) from its train.log and files, or a gallery of a folder of generated PNGs grouped by prompt",
    positionals: [{ name: 'dir', describe: 'A training run folder (the --out of invert or dreambooth) or a folder of PNGs painter generated', required: true }],
    options: REPORT_OPTIONS,
  },
} as const satisfies Record<string, CommandSpec>;

export type CommandName = keyof typeof COMMANDS;
export const COMMAND_NAMES = Object.keys(COMMANDS) as CommandName[];

/** A command's option list. */
export function optionsFor(command: CommandName): readonly OptionSpec[] {
  return COMMANDS[command].options;
}

/** camelCase key of a kebab-case option name (the key yargs and typed options use). */
export function camel(name: string): string {
  return name.replace(/-([a-z])/g, (_, c: string) => c.toUpperCase());
}
