/**
 * `dreambooth`: DreamBooth on a folder of subject images (or several subjects and classes of a
 * concept dataset), full or LoRA, with prior preservation on class images the frozen model
 * samples once into a cache; resumable.
 */
import * as path from 'node:path';
import { describeBackend, useBackend, type BackendChoice, type BackendReport } from '../backend/select.js';
import { disposeModel } from '../core/model.js';
import { PainterError, UsageError } from '../errors.js';
import { modelHash } from '../io/file-hash.js';
import { checkOutputDir } from '../io/output-dir.js';
import { embeddingFileName, embeddingsDir, installEmbedding, installProblem } from '../io/embedding-library.js';
import { placeholderProblem } from '../core/embeddings.js';
import { tokenize } from '../core/tokenizer/clip-tokenizer.js';
import type { DreamboothOptions, OptionInput } from '../options/types.js';
import { createDreamBooth, fillPrompt, LORA_FILE, MODEL_DIR, type DreamBoothMode } from '../train/dreambooth.js';
import { variantName } from '../train/engine.js';
import { chooseIdentifier, commonWordProblem } from '../train/identifier.js';
import type { Hooks } from './hooks.js';
import type { ConceptDataset } from '../io/concept-dataset.js';
import type { SubjectSettings } from '../train/subjects.js';
import { prepareClassImages, type ClassImageSet } from './class-image-sets.js';
import { trainWithReport } from './report/live-run.js';
import { trainingDataset, type ConceptSummary } from './training-concepts.js';
import { bucketCounts, clearRun, engineConfig, engineHooks, methodSettings, openTrainingInputs, resolveRun, writeRunConfig } from './training-run.js';

export type DreamboothInput = OptionInput<'dreambooth'> & {
  /** Folder of subject images (default: the images in the current folder, not its subfolders). */
  dir?: string;
  backend?: BackendChoice;
};

export interface DreamboothResult {
  /** The LoRA file, or the model folder (--mode full), in the run folder. */
  output: string;
  /** The same with the EMA weights, beside it (with --ema-decay). */
  emaOutput?: string;
  /** Pivotal tuning (--ti-token): the embedding beside the LoRA, and its copy in the embeddings folder. */
  embedding?: { file: string; installed: string };
  runDir: string;
  steps: number;
  finalLoss: number | undefined;
  identifier: string;
  /** The instance prompt (the first subject's, with several). */
  instancePrompt: string;
  /** The class images (the first class's, with several). */
  classImages: ClassImageInfo | null;
  /** Every class with its class images, with several classes. */
  classes?: (ClassImageInfo & { className: string; classPrompt: string })[];
  /** The concepts of a concept dataset, with their image counts and repeats. */
  concepts?: ConceptSummary[];
  backend: BackendReport;
}

export interface ClassImageInfo {
  dir: string;
  count: number;
  existing: number;
  generated: number;
}

/** Learning rates of diffusers' DreamBooth examples, used when neither a flag nor a preset sets one. */
const DEFAULT_LR: Record<DreamBoothMode, number> = { lora: 1e-4, full: 5e-6 };

/** The class of each subject: a dataset concept's own, else --class (one for a run of one subject). */
function requireClasses(o: DreamboothOptions, dataset: ConceptDataset | undefined): string[] {
  const c = o.class?.trim();
  const missing = dataset ? dataset.concepts.filter((k) => k.className === undefined) : [];
  if (dataset && missing.length > 0 && !c) {
    throw new UsageError(`--class is required: the subjects' class noun, e.g. --class dog, for ${missing.map((k) => k.name).join(', ')} (or give each concept of a dataset file its "class")`);
  }
  if (dataset) return dataset.concepts.map((k) => k.className ?? c!);
  if (c === undefined || c === '') throw new UsageError('--class is required: the subject\'s class noun, e.g. --class dog (used in "a photo of [identifier] dog")');
  return [c];
}

export async function dreambooth(input: DreamboothInput, hooks: Hooks = {}): Promise<DreamboothResult> {
  const { dir, backend: choice, ...passed } = input;
  const run = resolveRun('dreambooth', passed, (o) => `dreambooth-${o.mode}-${(o.class ?? 'subject').replace(/[^\w-]+/g, '')}`);
  const { options: o, runDir } = run;
  // Several subjects (a --dataset file, or kohya folders named N_prompt): each its prompt and class.
  const found = trainingDataset('dreambooth', dir, o.dataset, hooks);
  const conceptClasses = requireClasses(o, found);
  const dataset = found && { ...found, concepts: found.concepts.map((c, i) => ({ ...c, className: conceptClasses[i]! })) };
  const classNames = [...new Set(conceptClasses)];
  const className = classNames[0]!;
  if (o.classDir !== undefined && classNames.length > 1) {
    throw new UsageError(`--class-dir holds the class images of one class, and the dataset has ${classNames.length} (${classNames.join(', ')}); drop --class-dir: each class gets its own folder in painter's cache`);
  }
  if (o.priorPreservation && o.classImages < 1) {
    throw new UsageError('--class-images 0 leaves nothing for prior preservation; give --class-images N (e.g. 200) or pass --no-prior-preservation');
  }
  if (o.mode === 'full' && (o.loraConvRank !== undefined || o.loraTargets === 'transformer')) {
    throw new UsageError(`${o.loraConvRank !== undefined ? '--lora-conv-rank' : '--lora-targets transformer'} chooses LoRA adapters; --mode full trains every UNet weight (use --mode lora)`);
  }
  const tiToken = o.tiToken;
  if (tiToken !== undefined) {
    if (o.mode !== 'lora') throw new UsageError('--ti-token learns an embedding with LoRA adapters (pivotal tuning); use --mode lora');
    if (o.identifier !== undefined && o.identifier !== tiToken) throw new UsageError('--ti-token is the identifier of pivotal tuning; drop --identifier');
    const problem = placeholderProblem(tiToken);
    if (problem && !run.resumeFrom) throw new UsageError(`--ti-token "${tiToken}": ${problem}`);
  }
  // Where a pivotal embedding goes is checked before any work, as for invert.
  const library = tiToken !== undefined ? embeddingsDir(o.embeddingsDir) : undefined;
  if (library && tiToken) {
    o.embeddingsDir = library;
    checkOutputDir(library, '--embeddings-dir');
    const clash = o.force ? undefined : installProblem(library, tiToken);
    if (clash) throw new PainterError(`--ti-token "${tiToken}": ${clash}; choose another --ti-token, another --embeddings-dir, or pass --force to replace it`);
  }
  if (o.textEncoderLr !== undefined && !o.trainTextEncoder) throw new UsageError('--text-encoder-lr sets the learning rate of the text encoder, which trains only with --train-text-encoder');
  const rank = o.rank;
  o.alpha ??= rank;
  const lr = (o.lr ??= DEFAULT_LR[o.mode]);
  const backend = await useBackend(choice);
  const { modelPath, model, resolution, images, heldOut, buckets, concepts } = await openTrainingInputs({ command: 'dreambooth', options: o }, dir, backend, hooks, dataset);
  try {
    const warn = (m: string) => hooks.warn?.(m);
    const given = tiToken ?? o.identifier;
    if (given !== undefined) {
      if (given.trim() === '') throw new PainterError('--identifier must not be empty; omit it to let painter choose a rare token');
      const problem = tiToken === undefined ? commonWordProblem(model.tokenizer, given, className) : undefined;
      if (problem && !run.resumeFrom) warn(`--identifier "${given}": ${problem}; its existing meaning will compete with your subject. A rare token (omit --identifier) works better`);
    }
    const identifier = given !== undefined ? given.trim() : chooseIdentifier(model.tokenizer, o.seed, classNames);
    o.identifier = identifier;
    // A dataset's subjects have their own instance prompts ({identifier} and {class} filled in too).
    const conceptPrompts = dataset ? dataset.concepts.map((c, i) => fillPrompt(c.prompt!, identifier, conceptClasses[i]!)) : [];
    const instancePrompt = dataset ? conceptPrompts[0]! : fillPrompt(o.instancePrompt, identifier, className);
    const hash = modelHash(modelPath);
    hooks.info?.(`backend ${describeBackend(backend)}`);
    const captioned = images.filter((i) => i.caption !== undefined).length;
    const captions = captioned > 0 ? `; ${captioned} of ${images.length} image(s) have a caption file (their prompts: "${dataset ? '<prompt>' : instancePrompt}, <caption>")` : '';
    if (dataset) hooks.info?.(`${conceptPrompts.length} subject(s): ${conceptPrompts.map((p, i) => `"${p}" (class ${conceptClasses[i]})`).join(', ')}${captions}`);
    else hooks.info?.(`identifier "${identifier}": the subject is "${instancePrompt}"${captions}`);
    if (dataset && tiToken !== undefined && !conceptPrompts.some((p) => p.includes(tiToken))) {
      warn(`--ti-token "${tiToken}" is in none of the dataset's prompts, so its embedding learns nothing; put it in them (e.g. a folder "10_${tiToken} ${className}", or {identifier})`);
    }
    // Each class its own class images; each subject's instance rows are paired with its class's.
    const classPrompts = classNames.map((c) => fillPrompt(o.classPrompt, identifier, c));
    const classSets = o.priorPreservation ? await prepareClassImages(model, classNames.map((c, k) => ({ className: c, classPrompt: classPrompts[k]! })), o, { resolution, modelHash: hash, buckets }, hooks) : [];
    const classImages = classSets.flatMap((c) => c.images);
    const subjects: SubjectSettings | undefined = dataset && {
      concepts: conceptPrompts.map((instancePrompt, i) => ({ instancePrompt, classIndex: classNames.indexOf(conceptClasses[i]!) })),
      classes: classPrompts.map((classPrompt, k) => {
        const from = classSets.slice(0, k).reduce((n, c) => n + c.images.length, 0);
        return { classPrompt, images: Array.from({ length: classSets[k]?.images.length ?? 0 }, (_, i) => from + i) };
      }),
    };
    const samplePrompt = o.validationPrompt !== undefined ? fillPrompt(o.validationPrompt, identifier, className) : dataset ? instancePrompt : fillPrompt(o.instancePrompt, identifier, className);
    const setup = createDreamBooth(model, images, classImages, {
      ...methodSettings(o, resolution, samplePrompt, hash),
      identifier,
      className: classNames.join(', '),
      instancePrompt,
      classPrompt: classPrompts[0]!,
      ...(subjects && { subjects }),
      priorPreservation: o.priorPreservation,
      priorWeight: o.priorWeight,
      mode: o.mode,
      rank,
      alpha: o.alpha,
      trainTextEncoder: o.trainTextEncoder,
      format: o.format,
      loraTargets: o.loraTargets ?? 'attention',
      convRank: o.loraConvRank,
      convAlpha: o.loraConvAlpha,
      textEncoderLrScale: o.textEncoderLr === undefined ? 1 : o.textEncoderLr / lr,
      ...(tiToken !== undefined && {
        pivotal: {
          token: tiToken,
          vectors: o.tiVectors,
          initToken: o.tiInitToken ?? (tokenize(model.tokenizer, className).length === 1 ? className : undefined),
          steps: Math.round(o.tiStepsFraction * o.steps),
          lrScale: o.tiLr / lr,
        },
      }),
    }, heldOut);
    try {
      if (o.overwrite && !run.resumeFrom) clearRun(runDir, [LORA_FILE, MODEL_DIR, variantName(LORA_FILE, 'ema'), variantName(MODEL_DIR, 'ema'), ...(tiToken ? [embeddingFileName(tiToken), variantName(embeddingFileName(tiToken), 'ema')] : [])]);
      await writeRunConfig(runDir, o, {
        command: 'dreambooth',
        images: images.map((i) => path.resolve(i.file)),
        heldOut: heldOut.map((i) => path.resolve(i.file)),
        ...(concepts && { concepts }),
        ...(buckets && { bucketImages: bucketCounts(images) }),
        classImageFiles: classImages.map((i) => i.file),
        ...(classSets.length > 1 && { classes: classSets.map((c) => ({ class: c.className, prompt: c.classPrompt, dir: c.dir, count: c.images.length })) }),
        resolution,
        backend: backend.name,
        modelHash: hash,
        samplePrompt,
      });
      const textEncoder = o.trainTextEncoder ? ' and text encoder' : '';
      const what = o.mode === 'lora' ? `LoRA rank ${rank} on the UNet attention${textEncoder}` : `the full UNet${textEncoder}`;
      hooks.info?.(`training ${what} on ${images.length} image(s) at ${resolution}px; run folder ${runDir}`);
      const result = await trainWithReport(setup.task, engineConfig(o, lr), runDir, o, engineHooks(hooks, runDir), run.resumeFrom);
      hooks.file?.({ kind: 'result', path: result.output, step: result.step });
      if (result.emaOutput) hooks.info?.(`EMA weights: ${result.emaOutput}`);
      let embedding: { file: string; installed: string } | undefined;
      if (tiToken !== undefined) {
        // The embedding the LoRA was trained with, beside it; installed where generate finds it by its token.
        const file = path.join(runDir, embeddingFileName(tiToken));
        embedding = { file, installed: await installEmbedding(file, library!, tiToken, o.force) };
        hooks.info?.(`pivotal tuning: ${tiToken} in ${file}, installed as ${embedding.installed}; generate --lora ${result.output} loads it too`);
      }
      const info = (c: ClassImageSet) => ({ dir: c.dir, count: c.images.length, existing: c.existing, generated: c.generated });
      const classInfo = classSets[0] ? info(classSets[0]) : null;
      return {
        output: result.output,
        ...(result.emaOutput ? { emaOutput: result.emaOutput } : {}),
        ...(embedding && { embedding }),
        runDir,
        steps: result.step,
        finalLoss: result.losses.at(-1),
        identifier,
        instancePrompt,
        classImages: classInfo,
        ...(classSets.length > 1 && { classes: classSets.map((c) => ({ className: c.className, classPrompt: c.classPrompt, ...info(c) })) }),
        ...(concepts && { concepts }),
        backend,
      };
    } finally {
      setup.dispose();
    }
  } finally {
    disposeModel(model);
  }
}
