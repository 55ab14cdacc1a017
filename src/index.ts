/**
 * painter's library API: everything the CLI runs (generate, invert, dreambooth, convert, merge, bench, info, report),
 * and the pieces they are built from, for programs that load Stable Diffusion checkpoints, sample
 * and train from TypeScript.
 */

// What the commands do, as library calls: typed options (missing ones take their defaults),
// progress and stop requests through hooks, and what they wrote as the result.
export { generate, type GenerateInput, type GenerateResult } from './app/generate.js';
export { edit, type EditInput, type EditResult } from './app/edit.js';
export { ddimInvertImage, type DdimInvertInput, type DdimInvertResult } from './app/ddim-invert.js';
export { ddimInvert, type InversionInput, type InversionStep } from './core/pipeline/ddim-inversion.js';
export { DdimInverseScheduler } from './core/schedulers/ddim-inverse.js';
export { PromptToPromptControl, chooseEdit, equalizer, refinementMapper, replacementMapper, wordTokenIndices, type PromptToPromptEdit, type PromptToPromptSettings } from './core/pipeline/prompt-to-prompt.js';
export { samplePromptToPrompt, type PromptToPromptRequest } from './core/pipeline/generate-p2p.js';
export type { AttentionControl, AttentionKind, AttentionSite } from './core/models/attention-control.js';
export { LocalBlend, LOCAL_BLEND_THRESHOLD, blendLatents, localBlendLayers, localBlendMask, localBlendProblem, type LocalBlendSettings } from './core/pipeline/local-blend.js';
export { attributeClassifierForward, attributeClassifierShapes, type AttributeClassifierConfig } from './core/models/attribute-classifier.js';
export { classifierGuidance, parseClassifierTarget, type ClassifierTarget, type ImageClassifier } from './core/pipeline/classifier-guidance.js';
export { loadImageClassifier } from './io/load-classifier.js';
export { editLoop, encodeEditPrompts, planEdit, prepareEdit, type EditDraws, type EditMode, type EditPlan, type EditRequest } from './core/pipeline/edit.js';
export { invert, type InvertInput, type InvertResult, type LearntEmbedding } from './app/invert.js';
export { dreambooth, type DreamboothInput, type DreamboothResult } from './app/dreambooth.js';
export { folderDataset, loadDatasetFile, type Concept, type ConceptDataset } from './io/concept-dataset.js';
export type { ConceptSummary } from './app/training-concepts.js';
export { benchmark, type BenchInput, type BenchResult } from './app/bench.js';
export { systemInfo, fileInfo, type InfoReport, type FileInfo } from './app/info.js';
export { report, type ReportResult } from './app/report/report-folder.js';
export { trainWithReport, writeRunReport } from './app/report/live-run.js';
export { runReportHtml, type RunReport, type RunState } from './app/report/run-page.js';
export { galleryHtml, type GalleryEntry } from './app/report/gallery-page.js';
export { htmlPage, escapeHtml, copyLine, dataTable, keyValueTable, fileHref } from './app/report/html.js';
export { convert, type ConvertInput, type ConvertResult } from './app/convert.js';
export { merge, type MergeInput, type MergeRecord, type MergeResult } from './app/merge.js';
export { pngParameters, settingsFromPng, settingsFromParameters } from './app/from-png.js';
export { describeConceptFile, type ConceptFileInfo } from './io/concept-info.js';
export { breathe, phaseClock, type Hooks, type Progress, type WrittenFile } from './app/hooks.js';
export { applyConcepts, libraryEmbeddings, parseLoraArg, type ConceptRequest, type LoadedConcepts } from './app/concepts.js';
export { checkMemoryBudget, memoryReport, memorySettings, type MemoryCheck, type MemoryRequest } from './app/memory-check.js';
export { bundledModelPath, packageRoot, packageVersion, resolveModelPath, tinyModelPath, BUNDLED_MODEL } from './io/paths.js';
export type { InvertOptions, DreamboothOptions, GenerateOptions, BenchOptions, InfoOptions, ConvertOptions, OptionInput } from './options/types.js';
export { COMMANDS, type CommandName, type OptionSpec } from './options/table.js';
export { resolveConfig, listPresets, loadPreset } from './options/resolve.js';

// Compute backends
export { selectBackend, useBackend, describeBackend, type BackendReport } from './backend/select.js';
export { requestThreads, threadSetting } from './backend/wasm-threads.js';
export { BACKENDS, BACKEND_CHOICES, BACKEND_NAMES, type BackendChoice, type BackendName, type BackendSpec } from './backend/table.js';
export { PainterError, UsageError, InterruptedError, isPainterError } from './errors.js';

// Loading and saving models
export { loadModel, type LoadModelOptions } from './io/load-model.js';
export { saveModel, writeParams, type SaveModelOptions } from './io/save-model.js';
export { loadSingleFile, writeSingleFile, detectArch, type Arch } from './io/single-file.js';
export { singleFileSetup, singleFileMetadata, type SingleFileSetup } from './io/single-file-setup.js';
export { inferFamily, type PredictionType } from './io/single-file-infer.js';
export { bundledTokenizer, SD_FAMILIES, type SdFamily } from './io/bundled-configs.js';
export { describeModel, type ModelInfo } from './io/model-info.js';
export { loadClipTokenizer } from './io/load-tokenizer.js';
export { saveTokenizer } from './io/save-tokenizer.js';
export { loadWeights, readJson } from './io/load-weights.js';
export { writeBytesAtomic } from './io/atomic.js';
export { imageGrid } from './io/image-grid.js';
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
export { initParams, countParams, param, type Params, type ParamShapes } from './core/params.js';
export { Rng, type RngState } from './core/random.js';
export { conv2d, groupNormSilu, linear } from './core/ops.js';
export { defaultImageSize, latentGrid, promptLength, modelImageSize, modelLatentGrid, modelPromptLength } from './core/sizes.js';
export { clipTextForward, parseClipTextConfig, clipTextParamShapes, resizeTokenEmbedding, type ClipTextConfig } from './core/models/clip-text.js';
export { unetForward, parseUNetConfig, unetParamShapes, type UNetConfig, type UNetForwardOptions } from './core/models/unet.js';
export { checkpointed, type CheckpointOptions } from './core/models/checkpoint.js';
export { vaeEncode, vaeDecode, vaeSample, vaeLatentFactor, parseVaeConfig, vaeParamShapes, type VaeConfig, type VaePosterior } from './core/models/vae.js';
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
export {
  createClipTokenizer,
  encode,
  decode,
  tokenize,
  addTokens,
  tokenId,
  vocabSize,
  basicTokenize,
  BYTE_ENCODER,
  CLIP_PATTERN,
  type ClipTokenizer,
} from './core/tokenizer/clip-tokenizer.js';
export {
  encodePrompts,
  promptIds,
  promptIdRows,
  denoise,
  denoiseAll,
  decodeLatents,
  decodeLatentsRaw,
  latentShape,
  type DenoiseInput,
  type DenoiseStep,
} from './core/pipeline/text-to-image.js';
// AUTOMATIC1111's prompt language: emphasis, long prompts, BREAK, prompt editing, alternation
export { parsePromptAttention, hasEmphasis, type PromptFragment } from './core/prompt/attention.js';
export { promptSchedule, type ScheduledPrompt } from './core/prompt/schedule.js';
export { promptChunks, EMPHASIS_MODES, type EmphasisMode, type PromptChunks } from './core/prompt/chunks.js';
export { encodePromptSet, isPlainPrompt, type PromptEncodingOptions } from './core/prompt/encode.js';
export { encodeRunConditioning, disposeConditioning, embedsAt, type RunConditioning, type ScheduledEmbeds } from './core/prompt/conditioning.js';
export { sampleImages, sampleImagesPhased, type GenerateRequest, type GenerateEvent, type GeneratedImage } from './core/pipeline/generate.js';

// Training: the objective, the optimizer, the engine (used by the methods and by recipes/painter-mini)
export { diffusionLoss, lossWeights, snr, stratifiedTimesteps, type LossInput, type LossOptions } from './core/training/loss.js';
export { ADAMW_DEFAULTS, adamWStep, clipGradNorm, createAdamWState, disposeAdamWState, learningRate, type LrSchedule } from './core/training/optimizer.js';
export {
  train,
  checkpointParams,
  checkpointsDir,
  latestCheckpoint,
  readCheckpointMeta,
  type TrainingTask,
  type EngineConfig,
  type EngineHooks,
  type StepReport,
} from './train/engine.js';

// Learned concepts: Textual Inversion embeddings and LoRA
export { applyEmbeddings, expandPrompt, multiVectorTokens, type Embedding, type AppliedEmbedding, type EmbeddedModel } from './core/embeddings.js';
export { readEmbeddingFile, writeEmbeddingFile, type EmbeddingFile, type EmbeddingFormat } from './io/embeddings.js';
export { applyLora, loraDelta, loraScale, loraRank, disposeLora, type LoraAdapter, type LoraWeights, type LoraModel } from './core/lora.js';
export { readLoraFile, writeLoraFile } from './io/lora-files.js';
