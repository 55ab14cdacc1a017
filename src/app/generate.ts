/**
 * `generate`: text-to-image into PNG files that carry AUTOMATIC1111's parameters text, with
 * learned embeddings (given, or from the embeddings folder) and LoRA; when the whole model does
 * not fit in memory but one component at a time does, it loads them in turn.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describeBackend, useBackend, type BackendChoice, type BackendReport } from '../backend/select.js';
import { formatInfotext } from '../core/infotext.js';
import { disposeModel, type StableDiffusion } from '../core/model.js';
import { disposeParams } from '../core/params.js';
import { samplePromptToPrompt, type PromptToPromptRequest } from '../core/pipeline/generate-p2p.js';
import { chooseEdit } from '../core/pipeline/prompt-to-prompt.js';
import { localBlendProblem } from '../core/pipeline/local-blend.js';
import { classifierGuidance, parseClassifierTarget } from '../core/pipeline/classifier-guidance.js';
import { loadImageClassifier } from '../io/load-classifier.js';
import { sampleImages, sampleImagesPhased, type GenerateRequest, type PartLoader, type PipelinePart } from '../core/pipeline/generate.js';
import { createScheduler, HAS_SIGMA_SCHEDULE, schedulerConfigFor, sigmaScheduleSamplers, type SchedulerKind } from '../core/schedulers/index.js';
import { checkPromptSyntax } from '../core/prompt/conditioning.js';
import { parseSamplerName, samplerLabel, scheduleTypeLabel, type SigmaSchedule } from '../core/schedulers/sampler-names.js';
import type { EmphasisMode } from '../core/prompt/chunks.js';
import { modelImageSize, modelLatentGrid } from '../core/sizes.js';
import { tokenId } from '../core/tokenizer/clip-tokenizer.js';
import { InterruptedError, PainterError, UsageError } from '../errors.js';
import { embeddingsDir } from '../io/embedding-library.js';
import { readEmbeddingFile } from '../io/embeddings.js';
import { modelHash } from '../io/file-hash.js';
import { readLatentsFile } from '../io/latents-file.js';
import { checkOutputDir } from '../io/output-dir.js';
import { loadModel, type LoadModelOptions } from '../io/load-model.js';
import { encodePng, writeNewPng } from '../io/png-out.js';
import { resolveConfig } from '../options/resolve.js';
import { MAX_SEED } from '../options/table.js';
import type { OptionInput } from '../options/types.js';
import { settingsFromPng } from './from-png.js';
import { applyConcepts, libraryEmbeddings, promptLoras, type ConceptRequest, type LoadedConcepts } from './concepts.js';
import { breathe, phaseClock, type Hooks } from './hooks.js';
import { checkMemoryBudget } from './memory-check.js';
import { packageRoot, resolveModelPath } from '../io/paths.js';

export type GenerateInput = OptionInput<'generate'> & {
  prompt: string;
  /** Compute backend (default: the one already selected, else the auto order). */
  backend?: BackendChoice;
};

export interface GenerateResult {
  /** The PNG files written, in image order, with their seeds (and prompts, with --p2p: the source's image first). */
  files: { file: string; seed: number; prompt?: string }[];
  outDir: string;
  timings: { loadMs: number; generateMs: number; perImageMs: number };
  backend: BackendReport;
}

/** `<…>` words that no loaded embedding defines (a common typo or forgotten file). */
function unknownPlaceholders(model: StableDiffusion, prompt: string): string[] {
  return [...new Set(prompt.match(/<[^<>\s]+>/g) ?? [])].filter((t) => tokenId(model.tokenizer, t) === undefined && !t.startsWith('<|'));
}

/** Warnings about a prompt before sampling: `<…>` words no embedding defines. Long prompts are read whole, in chunks. */
export function promptWarnings(model: StableDiffusion, prompt: string, warn: (m: string) => void): void {
  for (const t of unknownPlaceholders(model, prompt)) warn(`the prompt uses ${t}, but no loaded embedding defines it; pass --embedding FILE`);
}

/** --local-blend WORDS (repeated and/or comma-separated) checked against both prompts; undefined without it. */
export function localBlendRequest(words: readonly string[] | undefined, threshold: number, source: string, target: string): PromptToPromptRequest['localBlend'] {
  if (words === undefined) return undefined;
  const split = words.flatMap((w) => w.split(',')).map((w) => w.trim()).filter((w) => w.length > 0);
  const problem = localBlendProblem(source, target, split);
  if (problem) throw new UsageError(problem);
  return { words: split, threshold };
}

/** --p2p, --cross-replace, --self-replace, --reweight and --local-blend as a Prompt-to-Prompt request (undefined without --p2p or --reweight). */
function promptToPrompt(
  o: { p2p?: string; crossReplace: number; selfReplace: number; reweight?: string[]; localBlend?: string[]; blendThreshold: number },
  prompt: string,
): PromptToPromptRequest | undefined {
  if (o.p2p === undefined && !o.reweight?.length) {
    if (o.localBlend !== undefined) throw new UsageError('--local-blend blends a Prompt-to-Prompt edit; give --p2p "EDITED PROMPT"');
    return undefined;
  }
  const reweight = (o.reweight ?? []).map((arg) => {
    const m = /^(.+)=(-?\d+(?:\.\d+)?)$/.exec(arg);
    if (!m) throw new UsageError(`--reweight ${arg}: give WORD=FACTOR, e.g. cat=2`);
    return { word: m[1]!, weight: Number(m[2]) };
  });
  const target = o.p2p ?? prompt;
  chooseEdit(prompt, target, reweight.length > 0);
  const localBlend = localBlendRequest(o.localBlend, o.blendThreshold, prompt, target);
  return { target, crossReplace: o.crossReplace, selfReplace: o.selfReplace, reweight, ...(localBlend && { localBlend }) };
}

/** What an image's AUTOMATIC1111 parameters text says (the settings it was made with). */
export interface ImageSettings {
  prompt: string;
  negative: string;
  steps: number;
  scheduler: SchedulerKind;
  /** A1111's "Schedule type" of the run (see samplerSchedule). */
  scheduleType?: string;
  guidance: number;
  seed: number;
  width: number;
  height: number;
  clipSkip: number;
  emphasis?: EmphasisMode;
  /** The variation seed of this image and its strength. */
  variation?: { seed: number; strength: number };
  modelPath: string;
  modelHash: string;
  concepts: LoadedConcepts;
  /** Further pairs (before "Version"). */
  extra: Record<string, string>;
}

/** The parameters text painter writes into a PNG, as AUTOMATIC1111 writes and reads it. */
export function imageParameters(s: ImageSettings): string {
  return formatInfotext({
    // AUTOMATIC1111 writes a LoRA into the prompt as <lora:name:scale>, and loads it from there.
    prompt: [s.prompt, ...Object.entries(s.concepts.loraScales).map(([name, scale]) => `<lora:${name}:${scale}>`)].join(' '),
    negativePrompt: s.negative,
    steps: s.steps,
    sampler: samplerLabel(s.scheduler),
    scheduleType: s.scheduleType,
    cfgScale: s.guidance,
    seed: s.seed,
    width: s.width,
    height: s.height,
    modelHash: s.modelHash,
    model: path.basename(s.modelPath).replace(/\.safetensors$/, ''),
    clipSkip: s.clipSkip > 0 ? s.clipSkip + 1 : undefined,
    variationSeed: s.variation?.seed,
    variationStrength: s.variation?.strength,
    tiHashes: s.concepts.tiHashes,
    loraHashes: s.concepts.loraHashes,
    // A1111's name for brackets read as text; its own default ("Original") is not written.
    extra: { ...s.extra, ...(s.emphasis === 'none' && { Emphasis: 'None' }), Version: 'painter' },
  });
}

/**
 * --scheduler (an A1111 label, an old label with its schedule, or painter's alias) and --schedule
 * as a sampler kind and σ schedule; `explicitSchedule` is --schedule when the user passed it,
 * which wins over a schedule named in the sampler.
 */
export function samplerChoice(name: string, schedule: SigmaSchedule, explicitSchedule?: SigmaSchedule): { kind: SchedulerKind; schedule: SigmaSchedule } {
  const parsed = parseSamplerName(name);
  if (!parsed) throw new UsageError(`--scheduler ${name}: not a sampler painter has`);
  const chosen = explicitSchedule ?? parsed.schedule ?? schedule;
  if (chosen !== 'automatic' && !HAS_SIGMA_SCHEDULE[parsed.kind]) {
    const some = sigmaScheduleSamplers().map((l) => `"${l}"`);
    throw new UsageError(`--schedule ${chosen}: the ${samplerLabel(parsed.kind)} sampler has no ${chosen} schedule; use it with ${some.join(', ')}`);
  }
  return { kind: parsed.kind, schedule: chosen };
}

/** A1111's "Schedule type" for a run of `kind` with `schedule` on `model`'s scheduler config. */
export function samplerScheduleType(model: StableDiffusion, kind: SchedulerKind, schedule: SigmaSchedule): string | undefined {
  return scheduleTypeLabel(kind, schedule, schedulerConfigFor(model.scheduler, kind).timestep_spacing);
}

/** --classify as a guidance hook and the classifier's release (undefined without it). */
function classifierGuide(o: { classify?: string[]; classifier?: string; classifierScale: number; steps: number }, model: StableDiffusion, sampler: { kind: SchedulerKind; schedule: SigmaSchedule }) {
  if (!o.classify?.length) return undefined;
  const probe = createScheduler(sampler.kind, model.scheduler, o.steps, { sigmas: sampler.schedule });
  probe.dispose();
  if (!probe.timesteps.every(Number.isInteger)) throw new UsageError(`--classify needs integer timesteps, which ${samplerLabel(sampler.kind)} does not use here; use --scheduler DDIM, PLMS, "DPM++ 2M" or UniPC`);
  const clf = loadImageClassifier(o.classifier ?? path.join(packageRoot(), 'fixtures', 'mini-classifier'));
  const dispose = () => disposeParams(clf.params);
  try {
    const targets = o.classify.map((t) => parseClassifierTarget(clf, t));
    return { guide: classifierGuidance(model, clf, targets, o.classifierScale), dispose };
  } catch (e) {
    dispose();
    throw e;
  }
}

/** The local blending an edited image's parameters text records ('' without it). */
export function localBlendText(b: PromptToPromptRequest['localBlend']): string {
  return b ? ` local-blend ${b.words.join(',')} threshold ${b.threshold}` : '';
}

/** The Prompt-to-Prompt settings an edited image's parameters text records. */
function p2pText(source: string, p: PromptToPromptRequest): string {
  const weights = (p.reweight ?? []).map((r) => ` ${r.word}=${r.weight}`).join('');
  return `source "${source}" cross ${p.crossReplace} self ${p.selfReplace}${weights ? ` reweight${weights}` : ''}${localBlendText(p.localBlend)}`;
}

export async function generate(input: GenerateInput, hooks: Hooks = {}): Promise<GenerateResult> {
  const { prompt: givenPrompt, backend: choice, ...flags } = input;
  // --from-png: the PNG's settings under the flags actually passed.
  const png = flags.fromPng !== undefined ? settingsFromPng(flags.fromPng) : undefined;
  const passed = png ? { ...png.options, ...flags } : flags;
  const o = resolveConfig('generate', passed);
  for (const key of png?.ignored ?? []) hooks.warn?.(`${flags.fromPng}: "${key}" is not reproduced by painter generate`);
  if (o.subseedStrength > 0 && o.subseed === undefined) throw new UsageError('--subseed-strength needs --subseed SEED (the seed whose noise the images move toward)');
  const sampler = samplerChoice(o.scheduler, o.schedule, flags.schedule);
  // <lora:NAME:SCALE> tags load LoRAs and leave the text, as in AUTOMATIC1111.
  const { prompt, loras } = promptLoras(givenPrompt || png?.prompt || '', o);
  checkPromptSyntax([prompt, o.negative], o.steps, o.emphasis);
  const p2p = promptToPrompt(o, prompt);
  const outDir = path.resolve(o.out);
  checkOutputDir(outDir, '--out');
  const backend = await useBackend(choice);
  const modelPath = resolveModelPath(o.model);
  const isFolder = fs.existsSync(modelPath) && fs.statSync(modelPath).isDirectory();
  // When the whole pipeline does not fit but one component at a time does, generate in phases.
  const memory = checkMemoryBudget({ command: 'generate', options: o }, modelPath, backend, { configDir: o.config, phasedGeneration: isFolder });
  const phased = memory?.plan === 'phased';
  const t0 = Date.now();
  const loadOpts = { config: o.config, arch: o.arch, predictionType: o.predictionType };
  const conceptRequest: ConceptRequest = { embeddings: o.embedding ?? [], token: o.token, loras };
  const firstParts: PipelinePart[] | undefined = phased ? ['text_encoder'] : undefined;
  const base = loadModel(modelPath, { ...loadOpts, parts: firstParts });
  let concepts: LoadedConcepts | undefined;
  let classifier: ReturnType<typeof classifierGuide>;
  try {
    const warn = (m: string) => hooks.warn?.(m);
    const given = new Set(conceptRequest.embeddings.map((f) => readEmbeddingFile(f, { token: conceptRequest.token }).token));
    const library = libraryEmbeddings(base, embeddingsDir(o.embeddingsDir), [prompt, o.negative], given, warn);
    conceptRequest.library = library.map((l) => l.file);
    for (const l of library) hooks.info?.(`${l.token} from ${l.file}`);
    concepts = applyConcepts(base, conceptRequest, firstParts);
    const model = concepts.model;
    const loadMs = Date.now() - t0;
    const width = o.width ?? modelImageSize(model);
    const height = o.height ?? modelImageSize(model);
    let grid: { h: number; w: number; c: number };
    try {
      grid = modelLatentGrid(model, width, height);
    } catch (e) {
      throw new PainterError(`--width/--height: ${(e as Error).message}; choose multiples of it`);
    }
    promptWarnings(model, prompt, warn);
    let count = o.count;
    let initLatents: Float32Array | undefined;
    if (o.latents !== undefined) {
      const l = readLatentsFile(o.latents, [grid.c, grid.h, grid.w]);
      if (passed.count !== undefined && count !== l.count) throw new PainterError(`--latents ${o.latents} holds ${l.count} latent(s) but --count is ${count}`);
      count = l.count;
      initLatents = l.data;
    }
    const lastSeed = o.seed + count - 1;
    if (lastSeed > MAX_SEED) throw new UsageError(`--seed ${o.seed} with --count ${count} would need seeds up to ${lastSeed}, beyond the largest seed ${MAX_SEED}; choose a smaller --seed`);
    const request: GenerateRequest = {
      prompt,
      negativePrompt: o.negative,
      steps: o.steps,
      guidance: o.guidance,
      scheduler: sampler.kind,
      schedule: sampler.schedule,
      emphasis: o.emphasis,
      ...(o.subseed !== undefined && o.subseedStrength > 0 && { variation: { seed: o.subseed, strength: o.subseedStrength } }),
      seed: o.seed,
      count,
      batch: Math.min(o.batch, count),
      width,
      height,
      clipSkip: o.clipSkip,
      initLatents,
    };
    const hash = modelHash(modelPath);
    hooks.info?.(`backend ${describeBackend(backend)}`);
    const files: GenerateResult['files'] = [];
    const t1 = Date.now();
    if (phased) warn('the whole model does not fit in memory; generating with one component loaded at a time');
    const applied = concepts;
    const releaseFirst = () => {
      concepts?.dispose();
      concepts = undefined;
      disposeModel(base);
    };
    classifier = classifierGuide(o, model, sampler);
    const guide = classifier?.guide;
    if (guide && (phased || p2p)) throw new UsageError(`--classify needs the whole model in memory and one prompt; leave out ${p2p ? '--p2p/--reweight' : 'a size this large'}`);
    if (guide) request.guide = guide;
    if (p2p && phased) throw new PainterError('--p2p draws two images together and needs the whole model in memory, which it does not fit; use a smaller --width/--height');
    const events = p2p
      ? samplePromptToPrompt(model, request, p2p)
      : phased
        ? sampleImagesPhased(phasedLoader(modelPath, loadOpts, conceptRequest, model, releaseFirst), request)
        : sampleImages(model, request);
    const progress = phaseClock(hooks, 'generate');
    // With --p2p every seed gives the source image, then the edited one.
    const seen = new Set<number>();
    for await (const event of events) {
      if (event.kind === 'step') {
        progress(event.step, event.steps, `images ${event.images[0]! + 1}–${event.images.at(-1)! + 1}/${count} · step`);
      } else {
        const img = event.image;
        const edited = p2p !== undefined && seen.has(img.index);
        seen.add(img.index);
        const text = imageParameters({
          ...request,
          prompt: edited ? p2p.target : prompt,
          negative: o.negative,
          seed: img.seed,
          scheduleType: samplerScheduleType(model, sampler.kind, sampler.schedule),
          ...(request.variation && { variation: { seed: request.variation.seed + img.index, strength: request.variation.strength } }),
          modelPath,
          modelHash: hash,
          concepts: applied,
          extra: {
            ...(edited && { 'Prompt-to-Prompt': p2pText(prompt, p2p) }),
            ...(guide && { 'Classifier guidance': `${o.classify!.join(' ')} scale ${o.classifierScale}` }),
          },
        });
        const png = await encodePng(img.pixels, img.width, img.height, { parameters: text });
        const file = writeNewPng(outDir, String(img.seed), png);
        files.push({ file, seed: img.seed, ...(p2p && { prompt: edited ? p2p.target : prompt }) });
        hooks.file?.({ kind: 'image', path: file, seed: img.seed });
      }
      await breathe();
      if (hooks.shouldStop?.()) throw new InterruptedError(`interrupted; ${files.length} complete image(s) kept in ${outDir}, no partial file written`);
    }
    const generateMs = Date.now() - t1;
    return { files, outDir, timings: { loadMs, generateMs, perImageMs: generateMs / count }, backend };
  } finally {
    classifier?.dispose();
    concepts?.dispose();
    disposeModel(base);
  }
}

/**
 * Loads the components of one phase with the same concepts applied; the text encoder's phase
 * reuses the model already loaded for it, and releasing it frees that model (`releaseFirst`).
 */
function phasedLoader(modelPath: string, loadOpts: Pick<LoadModelOptions, 'config' | 'arch' | 'predictionType'>, concepts: ConceptRequest, first: StableDiffusion, releaseFirst: () => void): PartLoader {
  const inUse = new Map<StableDiffusion, () => void>();
  return {
    load: (parts) => {
      if (parts.length === 1 && parts[0] === 'text_encoder') return first;
      const m = loadModel(modelPath, { ...loadOpts, parts });
      let c: LoadedConcepts;
      try {
        c = applyConcepts(m, concepts, parts);
      } catch (e) {
        disposeModel(m);
        throw e;
      }
      inUse.set(c.model, () => {
        c.dispose();
        disposeModel(m);
      });
      return c.model;
    },
    release: (m) => {
      if (m === first) releaseFirst();
      else inUse.get(m)?.();
    },
  };
}
