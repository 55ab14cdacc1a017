/**
 * painter's library API: what the CLI is built on, for programs that want to load Stable
 * Diffusion checkpoints, sample and train from TypeScript.
 */
export { selectBackend, type BackendChoice, type BackendName, type BackendReport } from './backend/select.js';
export { PainterError, UsageError, InterruptedError } from './errors.js';

// Loading and saving models
export { loadModel, type LoadModelOptions } from './io/load-model.js';
export { saveModel, writeParams, type SaveModelOptions } from './io/save-model.js';
export { loadSingleFile, writeSingleFile, detectArch, type Arch } from './io/single-file.js';
export { describeModel, type ModelInfo } from './io/model-info.js';
export { loadClipTokenizer } from './io/load-tokenizer.js';
export { loadWeights, readJson } from './io/load-weights.js';
export {
  openSafetensors,
  readTensor,
  closeSafetensors,
  loadSafetensors,
  writeSafetensors,
  type HostTensor,
  type SafetensorsDtype,
  type TensorToWrite,
} from './io/safetensors.js';

// The latent-diffusion core
export { disposeModel, type StableDiffusion, type Component } from './core/model.js';
export type { Params, ParamShapes } from './core/params.js';
export { initParams, countParams } from './core/params.js';
export { clipTextForward, parseClipTextConfig, clipTextParamShapes, resizeTokenEmbedding, type ClipTextConfig } from './core/models/clip-text.js';
export { unetForward, parseUNetConfig, unetParamShapes, type UNetConfig } from './core/models/unet.js';
export { vaeEncode, vaeDecode, vaeSample, vaeLatentFactor, parseVaeConfig, vaeParamShapes, type VaeConfig } from './core/models/vae.js';
export {
  createScheduler,
  parseSchedulerConfig,
  overrideSchedulerConfig,
  noiseSchedule,
  addNoise,
  getVelocity,
  trainingTarget,
  SCHEDULER_KINDS,
  type Scheduler,
  type SchedulerConfig,
  type SchedulerKind,
} from './core/schedulers/index.js';
export { createClipTokenizer, encode, decode, tokenize, addTokens, tokenId, vocabSize, type ClipTokenizer } from './core/tokenizer/clip-tokenizer.js';
export {
  encodePrompts,
  promptIds,
  denoise,
  denoiseAll,
  decodeLatents,
  decodeLatentsRaw,
  latentShape,
  type DenoiseInput,
  type DenoiseStep,
} from './core/pipeline/text-to-image.js';
export { diffusionLoss, lossWeights, snr, type LossInput, type LossOptions } from './core/training/loss.js';

// Learned concepts: Textual Inversion embeddings and LoRA
export { applyEmbeddings, expandPrompt, multiVectorTokens, type Embedding, type AppliedEmbedding, type EmbeddedModel } from './core/embeddings.js';
export { readEmbeddingFile, writeEmbeddingFile, type EmbeddingFile, type EmbeddingFormat } from './io/embeddings.js';
export { applyLora, loraDelta, loraScale, loraRank, disposeLora, type LoraAdapter, type LoraWeights, type LoraModel } from './core/lora.js';
export { readLoraFile, writeLoraFile } from './io/lora-files.js';
