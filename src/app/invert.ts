/**
 * `invert`: Textual Inversion of a folder of images, resumable, the learned embedding installed in
 * the embeddings folder where `generate` finds it by its token.
 */
import * as path from 'node:path';
import { describeBackend, useBackend, type BackendChoice, type BackendReport } from '../backend/select.js';
import { disposeModel } from '../core/model.js';
import { placeholderProblem } from '../core/embeddings.js';
import { PainterError, UsageError } from '../errors.js';
import { embeddingFileName, embeddingsDir, installEmbedding, installProblem } from '../io/embedding-library.js';
import { readEmbeddingFile } from '../io/embeddings.js';
import { checkOutputDir } from '../io/output-dir.js';
import { modelHash } from '../io/file-hash.js';
import type { OptionInput } from '../options/types.js';
import { train } from '../train/engine.js';
import { createInversion } from '../train/textual-inversion.js';
import type { Hooks } from './hooks.js';
import { clearRun, engineConfig, engineHooks, methodSettings, openTrainingInputs, resolveRun, writeRunConfig } from './training-run.js';

export type InvertInput = OptionInput<'invert'> & {
  /** Folder of training images (default: the images in the current folder, not its subfolders). */
  dir?: string;
  backend?: BackendChoice;
};

export interface InvertResult {
  /** The embedding file in the run folder. */
  output: string;
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
  backend: BackendReport;
}

export async function invert(input: InvertInput, hooks: Hooks = {}): Promise<InvertResult> {
  const { dir, backend: choice, ...passed } = input;
  const run = resolveRun('invert', passed, (o) => `invert-${(o.token ?? 'token').replace(/[^\w-]+/g, '')}`);
  const { options: o, runDir } = run;
  const token = o.token;
  if (token === undefined || token === '') throw new UsageError('--token is required: the new placeholder word to learn, e.g. --token "<cat>"');
  const tokenProblem = placeholderProblem(token);
  // A run begun before this rule (with "sks", say) still resumes, with the warning.
  if (tokenProblem && !run.resumeFrom) throw new UsageError(`--token "${token}": ${tokenProblem}`);
  if (tokenProblem) hooks.warn?.(`the token "${token}": ${tokenProblem}`);
  // Where the result goes is checked before any work: nothing is lost to a late refusal.
  const library = embeddingsDir(o.embeddingsDir);
  o.embeddingsDir = library; // absolute in the run's config, so a resume from elsewhere installs here too
  checkOutputDir(library, '--embeddings-dir');
  const clash = o.force ? undefined : installProblem(library, token);
  if (clash) throw new PainterError(`--token "${token}": ${clash}; choose another --token, another --embeddings-dir, or pass --force to replace it`);
  const backend = await useBackend(choice);
  const { modelPath, model, resolution, images } = await openTrainingInputs({ command: 'invert', options: o }, dir, backend, hooks);
  try {
    const setup = createInversion(model, images, {
      ...methodSettings(o, resolution, (o.validationPrompt ?? 'a photo of {token}').replaceAll('{token}', token), modelHash(modelPath)),
      token,
      initToken: o.initToken,
      vectors: o.vectors,
      mode: o.mode,
      format: o.format,
    });
    try {
      if (o.overwrite && !run.resumeFrom) clearRun(runDir, [embeddingFileName(token)]);
      await writeRunConfig(runDir, o, { command: 'invert', images: images.map((i) => path.resolve(i.file)), resolution, backend: backend.name });
      hooks.info?.(`backend ${describeBackend(backend)}`);
      const captioned = images.filter((i) => i.caption !== undefined).length;
      const captions = captioned > 0 ? `, ${captioned} with a caption file (their prompts: "<template>, <caption>", e.g. "a photo of a ${token}, <caption>")` : '';
      hooks.info?.(`learning ${setup.tokens.join(' ')} from ${images.length} image(s) at ${resolution}px${captions}; run folder ${runDir}`);
      const result = await train(setup.task, engineConfig(o, o.lr), runDir, o, engineHooks(hooks, runDir), run.resumeFrom);
      // Installed where generate finds it by its token, as AUTOMATIC1111's embeddings folder.
      const installed = await installEmbedding(result.output, library, token, o.force);
      hooks.file?.({ kind: 'result', path: result.output, step: result.step });
      const trigger = readEmbeddingFile(installed).token;
      return { output: result.output, installed, runDir, steps: result.step, finalLoss: result.losses.at(-1), token, tokens: setup.tokens, trigger, backend };
    } finally {
      setup.dispose();
    }
  } finally {
    disposeModel(model);
  }
}
