/**
 * The one declarative table of every command's options. From it come the yargs definitions
 * (cli/), the typed options of each command (options/types.ts, by type-level derivation: no
 * casts), preset validation and defaults (options/resolve.ts) and the README's option tables
 * (options/markdown.ts, checked by a test).
 */
import { autoOrderText, BACKEND_CHOICES } from '../backend/table.js';
import { BENCH_ITEMS } from '../bench/items.js';
import { EMPHASIS_MODES } from '../core/prompt/chunks.js';
import { SAMPLER_NAMES, SIGMA_SCHEDULES } from '../core/schedulers/sampler-names.js';
import { CONVERT_OPTIONS, MERGE_OPTIONS } from './model-file-options.js';
import { ARCH, CONFIG, JSON_OUTPUT, MAX_SEED, MODEL, PREDICTION_TYPE, SEED, type CommandSpec, type OptionSpec } from './spec.js';

export { positionalUsage, MAX_SEED, type CommandSpec, type OptionSpec, type OptionType, type PositionalSpec } from './spec.js';
export { CONVERT_OPTIONS, MERGE_OPTIONS } from './model-file-options.js';

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

const LR = { name: 'lr', type: 'number', above: 0, default: 5e-4, describe: 'Learning rate (AdamW)', presettable: true } as const satisfies OptionSpec;

/** Options shared by the two training commands (the training engine's): those before the learning rate… */
const TRAINING = [
  MODEL,
  CONFIG,
  ARCH,
  PREDICTION_TYPE,
  { name: 'preset', type: 'string', describe: 'Recipe to start from: a name in presets/ (e.g. ti-object) or a path to a YAML file; flags you pass override it' },
  { name: 'out', type: 'string', describe: 'Run folder for checkpoints, logs, samples and the result (default: ./runs/<command>-<time>)' },
  { name: 'resume', type: 'string', describe: 'Resume from a checkpoint folder, or "latest" for the newest checkpoint in --out; settings that change the result must stay as they were' },
  { name: 'overwrite', type: 'boolean', default: false, describe: 'Replace the run already in --out (without it, a folder that holds a run is refused)' },
  { name: 'steps', type: 'integer', min: 1, default: 1000, describe: 'Number of optimisation steps', presettable: true },
  { name: 'batch', type: 'integer', min: 1, default: 1, describe: 'Images per step', presettable: true },
  { name: 'grad-accum', type: 'integer', min: 1, default: 1, describe: 'Gradient accumulation: steps whose gradients are summed before one update', presettable: true },
  {
    name: 'gradient-checkpointing',
    type: 'boolean',
    default: false,
    describe:
      "Recompute the UNet's resnet and attention blocks in the backward pass, as diffusers' --gradient_checkpointing; trades compute (about one extra forward pass per step) for memory: only block inputs are kept for the backward pass",
    presettable: true,
  },
  {
    name: 'resolution',
    type: 'integer',
    min: 8,
    describe: "Training resolution in pixels: images are resized and cropped to it; a multiple of the model's latent factor (default: the model's native size)",
    presettable: true,
  },
  { name: 'center-crop', type: 'boolean', default: true, describe: 'Center-crop after resizing (--no-center-crop takes random crops)', presettable: true },
  { name: 'flip', type: 'boolean', default: true, describe: 'Random horizontal-flip augmentation', presettable: true },
  {
    name: 'alpha-mask',
    type: 'boolean',
    default: false,
    describe: "Masked loss from each image's alpha channel (transparent = not learnt), as kohya's --alpha_mask; without it, a NAME.mask.png beside a photo masks it (white = learn, black = ignore)",
    presettable: true,
  },
] as const satisfies readonly OptionSpec[];

/** …and those after it (the learning rate's default differs between the commands). */
const TRAINING_AFTER_LR = [
  { name: 'scale-lr', type: 'boolean', default: false, describe: "Multiply the learning rate by batch × grad-accum, as diffusers' --scale_lr does", presettable: true },
  { name: 'lr-schedule', type: 'string', choices: ['constant', 'cosine', 'linear'], default: 'constant', describe: 'Learning-rate schedule after warmup', presettable: true },
  { name: 'warmup-steps', type: 'integer', min: 0, default: 0, describe: 'Linear learning-rate warmup steps', presettable: true },
  { name: 'weight-decay', type: 'number', min: 0, default: 0.01, describe: 'AdamW decoupled weight decay', presettable: true },
  { name: 'max-grad-norm', type: 'number', min: 0, default: 1, describe: 'Clip the global gradient norm to this value (0 disables clipping)', presettable: true },
  { name: 'min-snr-gamma', type: 'number', min: 0, default: 0, describe: "Min-SNR-γ loss weighting (0 disables; 5 is the paper's choice)", presettable: true },
  { name: 'noise-offset', type: 'number', min: 0, default: 0, describe: 'Offset-noise strength (0 disables; ~0.05 helps very dark/bright images)', presettable: true },
  {
    name: 'shuffle-captions',
    type: 'boolean',
    default: false,
    describe: "Shuffle the comma-separated tags of each image's caption file every step, as kohya's --shuffle_caption (the instance prompt or template stays first)",
    presettable: true,
  },
  { name: 'keep-tokens', type: 'integer', min: 0, default: 0, describe: "Caption tags at the start that keep their place when tags are shuffled or dropped, as kohya's --keep_tokens", presettable: true },
  {
    name: 'caption-dropout',
    type: 'number',
    min: 0,
    max: 1,
    default: 0,
    describe: "Probability that a step trains an image on the empty prompt (the unconditional prediction guidance uses), as kohya's --caption_dropout_rate",
    presettable: true,
  },
  { name: 'tag-dropout', type: 'number', min: 0, max: 1, default: 0, describe: "Probability that each caption tag (after --keep-tokens) is left out in a step, as kohya's --caption_tag_dropout_rate", presettable: true },
  { name: 'checkpoint-every', type: 'integer', min: 1, default: 500, describe: 'Write a resumable checkpoint every N steps (also on Ctrl-C)', presettable: true },
  { name: 'keep-checkpoints', type: 'integer', min: 0, default: 3, describe: 'Keep the newest N checkpoints and delete older ones (0 keeps all)', presettable: true },
  { name: 'validation-prompt', type: 'string', describe: 'Prompt for validation samples ({token} / {identifier} / {class} are filled in)', presettable: true },
  { name: 'validation-every', type: 'integer', min: 0, default: 250, describe: 'Render a validation grid every N steps (0 disables)', presettable: true },
  { name: 'skip-bad-images', type: 'boolean', default: false, describe: 'Skip unreadable images with a warning instead of stopping', presettable: true },
  SEED,
  JSON_OUTPUT,
] as const satisfies readonly OptionSpec[];

const EMBEDDINGS_DIR = {
  name: 'embeddings-dir',
  type: 'string',
  describe: 'Embeddings folder: invert installs what it learns there, generate loads those whose trigger word the prompt uses (default: $PAINTER_EMBEDDINGS, else ./embeddings)',
} as const satisfies OptionSpec;

export const INVERT_OPTIONS = [
  { name: 'token', type: 'string', describe: 'The new placeholder word to learn, set off by symbols so it cannot match inside other words, e.g. "<cat>" (required; must not exist in the vocabulary)' },
  { name: 'init-token', type: 'string', describe: 'An existing single token whose embedding initialises the new one (e.g. "cat")', presettable: true },
  { name: 'vectors', type: 'integer', min: 1, max: 75, default: 1, describe: 'Embedding vectors per placeholder (multi-vector Textual Inversion)', presettable: true },
  {
    name: 'mode',
    type: 'string',
    choices: ['object', 'style'],
    default: 'object',
    describe: 'Prompt templates of the Textual Inversion paper: "a photo of a {}" (object) or "a painting in the style of {}" (style)',
    presettable: true,
  },
  {
    name: 'format',
    type: 'string',
    choices: ['diffusers', 'a1111'],
    default: 'diffusers',
    describe: 'Output layout: diffusers learned_embeds (load_textual_inversion) or AUTOMATIC1111/kohya (emb_params)',
    presettable: true,
  },
  EMBEDDINGS_DIR,
  {
    name: 'force',
    type: 'boolean',
    default: false,
    describe: 'Install even when the embeddings folder holds another token under this name, or another file for the same trigger word (it is replaced)',
  },
  ...TRAINING,
  LR,
  ...TRAINING_AFTER_LR,
] as const satisfies readonly OptionSpec[];

export const DREAMBOOTH_OPTIONS = [
  { name: 'class', type: 'string', describe: 'The subject\'s class noun, e.g. "dog" (required)' },
  { name: 'identifier', type: 'string', describe: 'Rare-token identifier for the subject (default: chosen from rarely used vocabulary tokens and printed)' },
  { name: 'instance-prompt', type: 'string', default: 'a photo of {identifier} {class}', describe: 'Prompt for the subject images', presettable: true },
  { name: 'class-prompt', type: 'string', default: 'a photo of a {class}', describe: 'Prompt for prior-preservation class images', presettable: true },
  {
    name: 'prior-preservation',
    type: 'boolean',
    default: true,
    describe: 'Prior-preservation loss with class images generated by the frozen model (--no-prior-preservation turns it off)',
    presettable: true,
  },
  { name: 'class-images', type: 'integer', min: 0, default: 200, describe: 'Number of class images (generated once into --class-dir and reused)', presettable: true },
  { name: 'class-dir', type: 'string', describe: 'Folder of class images (default: a cache keyed by model, class prompt and settings)' },
  { name: 'prior-weight', type: 'number', min: 0, default: 1, describe: 'λ in L = L_instance + λ·L_prior', presettable: true },
  { name: 'mode', type: 'string', choices: ['full', 'lora'], default: 'lora', describe: 'Train the full UNet, or LoRA adapters on its attention projections', presettable: true },
  { name: 'rank', type: 'integer', min: 1, default: 4, describe: 'LoRA rank', presettable: true },
  { name: 'alpha', type: 'number', above: 0, describe: 'LoRA alpha (scale = alpha / rank; default: rank)', presettable: true },
  { name: 'train-text-encoder', type: 'boolean', default: false, describe: 'Also train the text encoder (full or LoRA, following --mode)', presettable: true },
  { name: 'format', type: 'string', choices: ['diffusers', 'kohya'], default: 'diffusers', describe: 'Key naming of the LoRA output file', presettable: true },
  ...TRAINING,
  // DreamBooth's learning rate depends on --mode, so it has no single static default.
  { ...LR, default: undefined, describe: "Learning rate (AdamW; default 1e-4 with --mode lora, 5e-6 with --mode full, as diffusers' DreamBooth examples)" },
  ...TRAINING_AFTER_LR,
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
