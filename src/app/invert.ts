/**
 * `invert`: Textual Inversion of a folder of images, resumable, the learned embedding installed in
 * the embeddings folder where `generate` finds it by its token.
 */
import * as path from 'node:path';
import { describeBackend, useBackend, type BackendChoice, type BackendReport } from '../backend/select.js';
import { disposeModel } from '../core/model.js';
import { multiVectorTokens, placeholderProblem } from '../core/embeddings.js';
import { datasetTokens } from '../io/concept-dataset.js';
import { PainterError, UsageError } from '../errors.js';
import { embeddingFileName, embeddingsDir, installEmbedding, installProblem } from '../io/embedding-library.js';
import { readEmbeddingFile } from '../io/embeddings.js';
import { checkOutputDir } from '../io/output-dir.js';
import { modelHash } from '../io/file-hash.js';
import type { OptionInput } from '../options/types.js';
import { variantName } from '../train/engine.js';
import { createInversion } from '../train/textual-inversion.js';
import type { Hooks } from './hooks.js';
import { trainWithReport } from './report/live-run.js';
import { trainingDataset, type ConceptSummary } from './training-concepts.js';
import { bucketCounts, clearRun, engineConfig, engineHooks, methodSettings, openTrainingInputs, resolveRun, writeRunConfig } from './training-run.js';

export type InvertInput = OptionInput<'invert'> & {
  /** Folder of training images (default: the images in the current folder, not its subfolders). */
  dir?: string;
  backend?: BackendChoice;
};

/** One embedding a run learnt: its file in the run folder and its copy in the embeddings folder. */
export interface LearntEmbedding {
  token: string;
  tokens: string[];
  output: string;
  emaOutput?: string;
  installed: string;
  trigger: string;
}

export interface InvertResult {
  /** The embedding file in the run folder (the first token's, with several). */
  output: string;
  /** The embedding of the EMA weights beside it (with --ema-decay). */
  emaOutput?: string;
  /** Its copy in the embeddings folder. */
  installed: string;
  runDir: string;
  steps: number;
  finalLoss: number | undefined;
  /** The placeholder learned, and the tokens it expands to (several for multi-vector embeddings). */
  token: string;
  tokens: string[];
  /** The word `generate` loads it for from the embeddings folder (the file stem for the A1111 layout). */
  trigger: string;
  /** Every embedding learnt: one per token (several with a concept dataset). */
  embeddings: LearntEmbedding[];
  /** The concepts of a concept dataset, with their image counts and repeats. */
  concepts?: ConceptSummary[];
  backend: BackendReport;
}

export async function invert(input: InvertInput, hooks: Hooks = {}): Promise<InvertResult> {
  const { dir, backend: choice, ...passed } = input;
  const run = resolveRun('invert', passed, (o) => `invert-${(o.token ?? 'concepts').replace(/[^\w-]+/g, '')}`);
  const { options: o, runDir } = run;
  // Several concepts (a --dataset file, or kohya folders named N_<token>): each learns its folder's token.
  const dataset = trainingDataset('invert', dir, o.dataset, hooks);
  const learnt = dataset ? datasetTokens(dataset) : [];
  if (dataset && o.token !== undefined && !(learnt.length === 1 && learnt[0]!.token === o.token)) {
    throw new UsageError(`--token "${o.token}": the dataset ${dataset.source} names the tokens it learns (${learnt.map((l) => l.token).join(', ')}); drop --token`);
  }
  const token = o.token ?? learnt[0]?.token;
  if (token === undefined || token === '') throw new UsageError('--token is required: the new placeholder word to learn, e.g. --token "<cat>" (or train a dataset of concept folders named N_<token>, or --dataset FILE)');
  const tokenProblem = placeholderProblem(token);
  // A run begun before this rule (with "sks", say) still resumes, with the warning.
  if (tokenProblem && !run.resumeFrom) throw new UsageError(`--token "${token}": ${tokenProblem}`);
  if (tokenProblem) hooks.warn?.(`the token "${token}": ${tokenProblem}`);
  const placeholders = dataset ? learnt.map((l) => l.token) : [token];
  // Where the results go is checked before any work: nothing is lost to a late refusal.
  const library = embeddingsDir(o.embeddingsDir);
  o.embeddingsDir = library; // absolute in the run's config, so a resume from elsewhere installs here too
  checkOutputDir(library, '--embeddings-dir');
  for (const t of placeholders) {
    const clash = o.force ? undefined : installProblem(library, t);
    if (clash) throw new PainterError(`${dataset ? 'token' : '--token'} "${t}": ${clash}; choose another ${dataset ? 'token' : '--token'}, another --embeddings-dir, or pass --force to replace it`);
  }
  const backend = await useBackend(choice);
  const { modelPath, model, resolution, images, heldOut, buckets, concepts } = await openTrainingInputs({ command: 'invert', options: o }, dir, backend, hooks, dataset);
  try {
    // {token}: the run's token, or the first concept's.
    const samplePrompt = (o.validationPrompt ?? 'a photo of {token}').replaceAll('{token}', token);
    const hash = modelHash(modelPath);
    const setup = createInversion(model, images, {
      ...methodSettings(o, resolution, samplePrompt, hash),
      token,
      initToken: o.initToken,
      vectors: o.vectors,
      mode: o.mode,
      format: o.format,
      // A concept's init_token, else --init-token.
      ...(dataset && { conceptTokens: dataset.concepts.map((c) => ({ token: c.token!, initToken: learnt.find((l) => l.token === c.token)!.initToken ?? o.initToken })) }),
    }, heldOut);
    try {
      const fileOf = (t: string, variant?: 'ema') => path.join(runDir, variantName(embeddingFileName(t), variant));
      if (o.overwrite && !run.resumeFrom) clearRun(runDir, placeholders.flatMap((t) => [embeddingFileName(t), variantName(embeddingFileName(t), 'ema')]));
      await writeRunConfig(runDir, o, { command: 'invert', images: images.map((i) => path.resolve(i.file)), heldOut: heldOut.map((i) => path.resolve(i.file)), ...(concepts && { concepts }), ...(buckets && { bucketImages: bucketCounts(images) }), resolution, backend: backend.name, modelHash: hash, samplePrompt });
      hooks.info?.(`backend ${describeBackend(backend)}`);
      const captioned = images.filter((i) => i.caption !== undefined).length;
      const captions = captioned > 0 ? `, ${captioned} with a caption file (their prompts: "<template>, <caption>", e.g. "a photo of a ${token}, <caption>")` : '';
      hooks.info?.(`learning ${setup.tokens.join(' ')} from ${images.length} image(s) at ${resolution}px${captions}; run folder ${runDir}`);
      const result = await trainWithReport(setup.task, engineConfig(o, o.lr), runDir, o, engineHooks(hooks, runDir), run.resumeFrom);
      const embeddings: LearntEmbedding[] = [];
      for (const t of setup.placeholders) {
        const output = fileOf(t);
        // Installed where generate finds it by its token, as AUTOMATIC1111's embeddings folder.
        const installed = await installEmbedding(output, library, t, o.force);
        hooks.file?.({ kind: 'result', path: output, step: result.step });
        const emaOutput = result.emaOutput ? fileOf(t, 'ema') : undefined;
        if (emaOutput) hooks.info?.(`EMA weights: ${emaOutput} (load it with generate --embedding)`);
        embeddings.push({ token: t, tokens: multiVectorTokens(t, o.vectors), output, ...(emaOutput && { emaOutput }), installed, trigger: readEmbeddingFile(installed).token });
      }
      const first = embeddings[0]!;
      return {
        output: first.output,
        ...(first.emaOutput ? { emaOutput: first.emaOutput } : {}),
        installed: first.installed,
        runDir,
        steps: result.step,
        finalLoss: result.losses.at(-1),
        token: first.token,
        tokens: first.tokens,
        trigger: first.trigger,
        embeddings,
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
