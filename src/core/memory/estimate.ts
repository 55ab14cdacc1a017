/**
 * How much memory a painter command needs, before anything is loaded: weights of the components
 * it holds (from checkpoint headers), optimizer state for what it trains, and the peak of live
 * activations of every phase (from symbolic runs of the model code, model-traces.ts). The peak
 * of a command is its largest phase.
 *
 * Backend differences that matter:
 * - wasm: XNNPACK packs every weight it multiplies with into a private copy that lives as long as
 *   the weight (measured in tfjs-backend-wasm 4.22: 2× a conv filter, 1× a matmul weight), so
 *   the heap holds weights up to three times; see WeightStats.packedBytes.
 * - wasm and cpu run painter's fused norm kernels (one output instead of seven).
 */
import { clipTextParamShapes, type ClipTextConfig } from '../models/clip-text.js';
import { unetParamShapes, type UNetConfig } from '../models/unet.js';
import { vaeParamShapes, type VaeConfig } from '../models/vae.js';
import { LORA_TARGETS } from '../lora.js';
import { defaultImageSize, latentGrid, promptLength } from '../sizes.js';
import { RANDOM_CROPS_PER_IMAGE, VALIDATION_BATCH } from '../training/constants.js';
import type { ParamShapes } from '../params.js';
import { frozenWeights, traceClipText, traceUNet, traceVaeDecode, traceVaeEncode, type WeightSource } from './model-traces.js';
import { concat, ew, split } from './sym-ops.js';
import { MemoryTrace, numel, type Sym } from './trace.js';

/**
 * The backend as far as memory is concerned: its entry in the backend table (backend/table.ts)
 * has these fields.
 */
export interface MemoryBackend {
  name: string;
  /** XNNPACK keeps packed copies of the weights it multiplies with (2× conv filters, 1× matmul weights). */
  packsWeights: boolean;
  /** painter's fused norm kernels run (one output instead of seven). */
  fusedKernels: boolean;
}

/** In-memory bytes of a component's weights (float32 whatever the file stores). */
export interface WeightStats {
  bytes: number;
  /** XNNPACK's private copies on wasm: 2× conv filters, 1× matmul weights. */
  packedBytes: number;
  /** The largest single tensor (loading converts one tensor at a time). */
  largestBytes: number;
}

/** Weights per component; the VAE in halves because generation runs only its decoder. */
export interface ModelWeights {
  unet: WeightStats;
  textEncoder: WeightStats;
  vaeEncoder: WeightStats;
  vaeDecoder: WeightStats;
}

export interface ModelDescription {
  unet: UNetConfig;
  vae: VaeConfig;
  textEncoder: ClipTextConfig;
  weights: ModelWeights;
}

export interface GenerateSettings {
  command: 'generate';
  width: number;
  height: number;
  /** Images computed together. */
  batch: number;
  /** Classifier-free guidance > 1 doubles the UNet batch. */
  guidance: number;
}

interface TrainingCommon {
  resolution: number;
  batch: number;
  gradAccum: number;
  /** Training images (each cached as VAE posteriors of its views). */
  images: number;
  centerCrop: boolean;
  flip: boolean;
  /** Validation grids during training (--validation-every > 0). */
  validation: boolean;
  /** --gradient-checkpointing: UNet blocks recomputed in the backward pass. */
  gradientCheckpointing?: boolean;
}

export interface InvertSettings extends TrainingCommon {
  command: 'invert';
  vectors: number;
}

export interface DreamBoothSettings extends TrainingCommon {
  command: 'dreambooth';
  mode: 'full' | 'lora';
  rank: number;
  trainTextEncoder: boolean;
  priorPreservation: boolean;
  /** Class images held (their posteriors cached) at once. */
  classImages: number;
}

export type CommandSettings = GenerateSettings | InvertSettings | DreamBoothSettings;

export interface PhaseEstimate {
  name: string;
  /** Weights resident during the phase. */
  weights: number;
  /** XNNPACK weight copies (wasm). */
  packed: number;
  /** Optimizer state, gradients of trained weights, cached latents, merged LoRA weights. */
  state: number;
  /** Peak of live activations. */
  activations: number;
  total: number;
}

export interface MemoryEstimate {
  /** "generate", "invert", "dreambooth full", "dreambooth lora". */
  label: string;
  backend: MemoryBackend;
  settings: CommandSettings;
  phases: PhaseEstimate[];
  peak: number;
  peakPhase: string;
  /** Bytes the trained weights occupy (0 for generation). */
  trainableBytes: number;
}

const LORA_UNET = LORA_TARGETS.unet;
const LORA_TEXT = LORA_TARGETS.text_encoder;

function sum(...xs: number[]): number {
  return xs.reduce((a, b) => a + b, 0);
}

function phase(name: string, weights: number, packed: number, state: number, activations: number): PhaseEstimate {
  return { name, weights, packed, state, activations, total: weights + packed + state + activations };
}

interface Shapes {
  unet: ParamShapes;
  vae: ParamShapes;
  text: ParamShapes;
}

function shapesOf(m: ModelDescription): Shapes {
  return { unet: unetParamShapes(m.unet), vae: vaeParamShapes(m.vae), text: clipTextParamShapes(m.textEncoder) };
}

function latentGridOf(m: ModelDescription, width: number, height: number): { h: number; w: number; c: number } {
  return latentGrid(m.unet, m.vae, width, height);
}

/** A tensor that lives across a phase (cached latents, embeddings): its bytes. */
function bytesOf(shape: number[]): number {
  return numel(shape) * 4;
}

// ---------------------------------------------------------------------------------------------
// Inference phases (generation, validation grids, class images)
// ---------------------------------------------------------------------------------------------

/** encodePrompts for one prompt (the pipeline encodes prompt and negative prompt one at a time). */
function textPhasePeak(m: ModelDescription, s: Shapes, fused: boolean): number {
  const t = new MemoryTrace({ fused });
  traceClipText(t, m.textEncoder, frozenWeights(t, s.text), { batch: 1, length: promptLength(m.textEncoder) });
  return t.peak;
}

/** One denoising step of `n` images (2n UNet rows with guidance), with what the loop keeps. */
function denoisePhasePeak(m: ModelDescription, s: Shapes, n: number, width: number, height: number, guided: boolean, fused: boolean): number {
  const { h, w, c } = latentGridOf(m, width, height);
  const t = new MemoryTrace({ fused });
  const d = m.textEncoder.hidden_size;
  const L = promptLength(m.textEncoder);
  const rows = guided ? 2 * n : n;
  // Persistent during the loop: prompt embeddings, their tiles, the conditioning batch, latents,
  // the scheduler's previous model outputs.
  t.input([guided ? 2 : 1, L, d]);
  t.input([rows, L, d]);
  const context = t.input([rows, L, d]);
  const latents = t.input([n, h, w, c]);
  for (let i = 0; i < 3; i++) t.input([n, h, w, c]);
  t.tidy(() => {
    const modelIn = guided ? concat(t, [latents, latents], 0) : ew(t, latents);
    const pred = traceUNet(t, m.unet, s.unet, frozenWeights(t, s.unet), ew(t, modelIn), context);
    // Guidance ε_u + w·(ε_c − ε_u), then the scheduler's update: latent-sized tensors.
    const eps = guided ? ew(t, ew(t, ew(t, split(t, pred, 2, 0)[1]!))) : pred;
    for (let i = 0; i < 6; i++) ew(t, eps);
    return ew(t, eps);
  });
  return t.peak;
}

/** decodeLatents of `n` images and the conversion to pixels. */
function decodePhasePeak(m: ModelDescription, s: Shapes, n: number, width: number, height: number, fused: boolean): number {
  const { h, w } = latentGridOf(m, width, height);
  const t = new MemoryTrace({ fused });
  const latents = t.input([n, h, w, m.vae.latent_channels]);
  t.tidy(() => {
    // latents / scaling_factor → VAE → ×0.5 + 0.5, clip, ×255, round, to int.
    let x = traceVaeDecode(t, m.vae, s.vae, frozenWeights(t, s.vae), ew(t, latents));
    for (let i = 0; i < 6; i++) x = ew(t, x);
    return x;
  });
  return t.peak;
}

/** vaeEncode of one view at the training resolution. */
function encodePhasePeak(m: ModelDescription, s: Shapes, resolution: number, fused: boolean): number {
  const t = new MemoryTrace({ fused });
  traceVaeEncode(t, m.vae, s.vae, frozenWeights(t, s.vae), t.input([1, resolution, resolution, m.vae.in_channels]));
  return t.peak;
}

/** What one generation run at a size needs per phase, without weights. */
function generationActivations(m: ModelDescription, s: Shapes, n: number, width: number, height: number, guided: boolean, fused: boolean) {
  return {
    text: textPhasePeak(m, s, fused),
    denoise: denoisePhasePeak(m, s, n, width, height, guided, fused),
    decode: decodePhasePeak(m, s, n, width, height, fused),
  };
}

// ---------------------------------------------------------------------------------------------
// Commands
// ---------------------------------------------------------------------------------------------

function packedOf(backend: MemoryBackend, ...stats: WeightStats[]): number {
  return backend.packsWeights ? sum(...stats.map((s) => s.packedBytes)) : 0;
}

function vaeBytes(w: ModelWeights): number {
  return w.vaeEncoder.bytes + w.vaeDecoder.bytes;
}

function allWeights(w: ModelWeights): number {
  return w.unet.bytes + w.textEncoder.bytes + vaeBytes(w);
}

function estimateGenerate(m: ModelDescription, s: Shapes, g: GenerateSettings, backend: MemoryBackend, phased: boolean): PhaseEstimate[] {
  const w = m.weights;
  const a = generationActivations(m, s, g.batch, g.width, g.height, g.guidance > 1, backend.fusedKernels);
  if (phased) {
    // Text encoder → UNet → VAE, each loaded for its phase and freed after it.
    return [
      phase('text encoding', w.textEncoder.bytes, packedOf(backend, w.textEncoder), 0, a.text),
      phase('denoising (UNet)', w.unet.bytes, packedOf(backend, w.unet), 0, a.denoise),
      phase('VAE decoding', vaeBytes(w), packedOf(backend, w.vaeDecoder), 0, a.decode),
    ];
  }
  // The whole pipeline resident; XNNPACK copies accumulate as each component first runs.
  const all = allWeights(w);
  return [
    phase('text encoding', all, packedOf(backend, w.textEncoder), 0, a.text),
    phase('denoising (UNet)', all, packedOf(backend, w.textEncoder, w.unet), 0, a.denoise),
    phase('VAE decoding', all, packedOf(backend, w.textEncoder, w.unet, w.vaeDecoder), 0, a.decode),
  ];
}

/** Cached posteriors (mean and std) of the training views. */
function viewBytes(m: ModelDescription, t: TrainingCommon, images: number, centerCrop: boolean): number {
  const { h, w } = latentGridOf(m, t.resolution, t.resolution);
  const views = images * (centerCrop ? 1 : RANDOM_CROPS_PER_IMAGE) * (t.flip ? 2 : 1);
  return views * 2 * bytesOf([1, h, w, m.vae.latent_channels]);
}

/** The loss closure of a training step (latents from posteriors, text encoder, UNet, MSE) and its backward pass: peak activations. */
function trainingStepPeak(
  m: ModelDescription,
  s: Shapes,
  backend: MemoryBackend,
  rows: number,
  resolution: number,
  opts: {
    textRows?: number[];
    unetWeights: (t: MemoryTrace) => WeightSource;
    textWeights: (t: MemoryTrace) => WeightSource;
    frozenContext: boolean;
    largestWeight: number;
    checkpoint: boolean;
  },
): number {
  const t = new MemoryTrace({ taped: true, fused: backend.fusedKernels });
  const { h, w, c } = latentGridOf(m, resolution, resolution);
  const L = promptLength(m.textEncoder);
  const lat = [rows, h, w, c];
  const mean = t.input(lat);
  const std = t.input(lat);
  const latents = ew(t, ew(t, mean, ew(t, std, t.input(lat))));
  let context: Sym;
  if (opts.frozenContext) {
    context = t.input([rows, L, m.textEncoder.hidden_size]);
  } else {
    const extraRows = opts.textRows ? t.input(opts.textRows, 'float32', true) : undefined;
    context = traceClipText(t, m.textEncoder, opts.textWeights(t), { batch: rows, length: L, extraRows });
  }
  t.tidy(() => {
    const noise = t.input(lat);
    const noisy = ew(t, ew(t, latents), ew(t, noise));
    const pred = traceUNet(t, m.unet, s.unet, opts.unetWeights(t), noisy, context, { checkpoint: opts.checkpoint });
    const sq = ew(t, ew(t, pred, ew(t, noise)));
    return t.op([], [t.op([rows], [sq])]);
  });
  // A gradient function holds a flipped or transposed copy of the weight it multiplies with.
  return t.backward(2 * opts.largestWeight);
}

/**
 * LoRA-adapted weights as train/lora-training.ts builds them in the loss closure, once per step:
 * W' = W + (α/r)·down@up, plus XNNPACK's copy of each W' on wasm (it lives as long as W').
 */
function loraWeights(t: MemoryTrace, shapes: ParamShapes, target: RegExp, rank: number, backend: MemoryBackend): WeightSource {
  const frozen = frozenWeights(t, shapes);
  const merged = new Map<string, Sym>();
  // All merged before the model runs, as paramsWithLora does.
  for (const [key, shape] of shapes) {
    if (!target.test(key) || shape.length !== 2) continue;
    const [inF, outF] = shape as [number, number];
    const delta = ew(t, t.op([inF, outF], [t.weight([inF, rank], true), t.weight([rank, outF], true)]));
    merged.set(key, ew(t, frozen(key), delta));
    if (backend.packsWeights) t.op([inF, outF], [], 'float32', 'output');
  }
  return (key) => merged.get(key) ?? frozen(key);
}

function loraParamBytes(shapes: ParamShapes, target: RegExp, rank: number): { adapters: number; adapted: number } {
  let adapters = 0;
  let adapted = 0;
  for (const [k, shape] of shapes) {
    if (!target.test(k) || shape.length !== 2) continue;
    adapters += 4 * rank * (shape[0]! + shape[1]!);
    adapted += bytesOf(shape);
  }
  return { adapters, adapted };
}

/** Every weight of a key set trainable (full fine-tuning). */
function trainableWeights(shapes: ParamShapes): (t: MemoryTrace) => WeightSource {
  return (t) => (key) => {
    const shape = shapes.get(key);
    if (!shape) throw new Error(`memory trace: no weight "${key}" in the model's key set`);
    return t.weight(shape, true);
  };
}

function validationPhases(m: ModelDescription, s: Shapes, backend: MemoryBackend, base: { weights: number; packed: number; state: number }): PhaseEstimate[] {
  const size = defaultImageSize(m.unet, m.vae);
  const a = generationActivations(m, s, VALIDATION_BATCH, size, size, true, backend.fusedKernels);
  return [phase('validation grids', base.weights, base.packed, base.state, Math.max(a.text, a.denoise, a.decode))];
}

function estimateInvert(m: ModelDescription, s: Shapes, v: InvertSettings, backend: MemoryBackend): PhaseEstimate[] {
  const w = m.weights;
  const all = allWeights(w);
  const fused = backend.fusedKernels;
  const views = viewBytes(m, v, v.images, v.centerCrop);
  const d = m.textEncoder.hidden_size;
  const rowsBytes = bytesOf([v.vectors, d]);
  // AdamW m and v plus the gradient of the learned rows: a few kilobytes.
  const state = views + 4 * rowsBytes;
  const packedAll = packedOf(backend, w.unet, w.textEncoder, w.vaeEncoder, ...(v.validation ? [w.vaeDecoder] : []));
  const step = trainingStepPeak(m, s, backend, v.batch, v.resolution, {
    textRows: [v.vectors, d],
    unetWeights: (t) => frozenWeights(t, s.unet),
    textWeights: (t) => frozenWeights(t, s.text),
    frozenContext: false,
    largestWeight: Math.max(w.unet.largestBytes, w.textEncoder.largestBytes),
    checkpoint: v.gradientCheckpointing ?? false,
  });
  // Without validation grids the VAE is freed once the images are encoded (releaseUnused).
  const stepWeights = v.validation ? all : all - vaeBytes(w);
  const phases = [
    phase('VAE encoding of the training images', all, packedOf(backend, w.vaeEncoder), views, encodePhasePeak(m, s, v.resolution, fused)),
    phase('the training step', stepWeights, packedAll, state, step),
  ];
  if (v.validation) phases.push(...validationPhases(m, s, backend, { weights: all, packed: packedAll, state }));
  return phases;
}

function estimateDreamBooth(m: ModelDescription, s: Shapes, d: DreamBoothSettings, backend: MemoryBackend): { phases: PhaseEstimate[]; trainable: number } {
  const w = m.weights;
  const all = allWeights(w);
  const fused = backend.fusedKernels;
  const rows = d.priorPreservation ? 2 * d.batch : d.batch;
  const views = viewBytes(m, d, d.images, d.centerCrop) + (d.priorPreservation ? viewBytes(m, d, d.classImages, true) : 0);
  const L = promptLength(m.textEncoder);
  const frozenContext = d.trainTextEncoder ? 0 : bytesOf([rows, L, m.textEncoder.hidden_size]);
  let trainable: number;
  // Held while validating with LoRA: the merged copies of adapted weights (and their XNNPACK copies).
  let mergedForValidation = 0;
  let unetWeights: (t: MemoryTrace) => WeightSource;
  let textWeights: (t: MemoryTrace) => WeightSource = (t) => frozenWeights(t, s.text);
  if (d.mode === 'lora') {
    const u = loraParamBytes(s.unet, LORA_UNET, d.rank);
    const te = d.trainTextEncoder ? loraParamBytes(s.text, LORA_TEXT, d.rank) : { adapters: 0, adapted: 0 };
    trainable = u.adapters + te.adapters;
    mergedForValidation = (u.adapted + te.adapted) * (backend.packsWeights ? 2 : 1);
    unetWeights = (t) => loraWeights(t, s.unet, LORA_UNET, d.rank, backend);
    if (d.trainTextEncoder) textWeights = (t) => loraWeights(t, s.text, LORA_TEXT, d.rank, backend);
  } else {
    trainable = w.unet.bytes + (d.trainTextEncoder ? w.textEncoder.bytes : 0);
    unetWeights = trainableWeights(s.unet);
    if (d.trainTextEncoder) textWeights = trainableWeights(s.text);
  }
  // AdamW m and v (2×) and, with gradient accumulation, the running sum of the gradients (1×);
  // the gradients themselves are part of the traced backward pass.
  const optimizer = trainable * (d.gradAccum > 1 ? 3 : 2);
  const packedAll = packedOf(backend, w.unet, w.textEncoder, w.vaeEncoder, w.vaeDecoder);
  const step = trainingStepPeak(m, s, backend, rows, d.resolution, {
    unetWeights,
    textWeights,
    frozenContext: !d.trainTextEncoder,
    largestWeight: Math.max(w.unet.largestBytes, d.trainTextEncoder ? w.textEncoder.largestBytes : 0),
    checkpoint: d.gradientCheckpointing ?? false,
  });
  const phases: PhaseEstimate[] = [];
  if (d.priorPreservation) {
    // Class images are sampled one at a time at the training resolution, before training.
    const a = generationActivations(m, s, 1, d.resolution, d.resolution, true, fused);
    phases.push(phase('class-image sampling', all, packedOf(backend, w.textEncoder, w.unet, w.vaeDecoder), 0, Math.max(a.text, a.denoise, a.decode)));
  }
  phases.push(phase('VAE encoding of the training images', all, packedOf(backend, w.vaeEncoder, w.textEncoder, w.unet, w.vaeDecoder), views, encodePhasePeak(m, s, d.resolution, fused)));
  // LoRA without validation grids frees the VAE, and a frozen text encoder, before training.
  const released = d.mode === 'lora' && !d.validation ? vaeBytes(w) + (d.trainTextEncoder ? 0 : w.textEncoder.bytes) : 0;
  phases.push(phase('the training step', all - released, packedAll, views + frozenContext + optimizer, step));
  if (d.validation) {
    const state = views + frozenContext + trainable * 2 + mergedForValidation;
    phases.push(...validationPhases(m, s, backend, { weights: all, packed: packedAll, state }));
  }
  return { phases, trainable };
}

function labelOf(c: CommandSettings): string {
  switch (c.command) {
    case 'generate':
    case 'invert':
      return c.command;
    case 'dreambooth':
      return `dreambooth ${c.mode}`;
  }
}

/**
 * The memory a command needs on a backend. For generation, `phased` holds only the component
 * of the current phase (text encoder → UNet → VAE) instead of the whole pipeline.
 */
export function estimateMemory(m: ModelDescription, settings: CommandSettings, backend: MemoryBackend, opts: { phased?: boolean } = {}): MemoryEstimate {
  const s = shapesOf(m);
  let phases: PhaseEstimate[];
  let trainable = 0;
  switch (settings.command) {
    case 'generate':
      phases = estimateGenerate(m, s, settings, backend, opts.phased ?? false);
      break;
    case 'invert':
      phases = estimateInvert(m, s, settings, backend);
      break;
    case 'dreambooth': {
      const r = estimateDreamBooth(m, s, settings, backend);
      phases = r.phases;
      trainable = r.trainable;
      break;
    }
  }
  const top = phases.reduce((a, b) => (b.total > a.total ? b : a));
  return { label: labelOf(settings), backend, settings, phases, peak: top.total, peakPhase: top.name, trainableBytes: trainable };
}
