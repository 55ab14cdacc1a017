/** `painter invert DIR --token "<cat>"`: Textual Inversion. */
import * as path from 'node:path';
import { disposeModel } from '../../core/model.js';
import { PainterError } from '../../errors.js';
import { embeddingsDir, installEmbedding } from '../../io/embedding-library.js';
import { modelHash } from '../../io/file-hash.js';
import { train } from '../../train/engine.js';
import { createInversion } from '../../train/textual-inversion.js';
import { describeBackend } from '../backend-option.js';
import type { Args } from '../main.js';
import { engineConfig, engineHooks, openTrainingInputs, resolveRun, writeRunConfig } from './train-common.js';

export async function invertCommand(args: Args): Promise<void> {
  const json = Boolean(args['json']);
  const run = resolveRun('invert', args, (c) => `invert-${String(c['token'] ?? 'token').replace(/[^\w-]+/g, '')}`);
  const { cfg, runDir } = run;
  const token = cfg['token'];
  if (typeof token !== 'string' || token === '') throw new PainterError('--token is required: the new placeholder word to learn, e.g. --token "<cat>"');
  const { progress, backend, modelPath, model, resolution, images } = await openTrainingInputs('invert', args, cfg, json);
  try {
    const validationPrompt = String(cfg['validationPrompt'] ?? 'a photo of {token}').replaceAll('{token}', token);
    const setup = createInversion(model, images, {
      token,
      initToken: cfg['initToken'] as string | undefined,
      vectors: cfg['vectors'] as number,
      mode: cfg['mode'] as 'object' | 'style',
      resolution,
      centerCrop: Boolean(cfg['centerCrop']),
      flip: Boolean(cfg['flip']),
      batch: cfg['batch'] as number,
      minSnrGamma: cfg['minSnrGamma'] as number,
      noiseOffset: cfg['noiseOffset'] as number,
      seed: cfg['seed'] as number,
      validationPrompt,
      format: (cfg['format'] as 'diffusers' | 'a1111' | undefined) ?? 'diffusers',
      baseModelHash: modelHash(modelPath),
    });
    try {
      await writeRunConfig(runDir, cfg, { command: 'invert', images: images.map((i) => path.resolve(i.file)), resolution, backend: backend.name });
      if (!json) {
        process.stderr.write(`painter: backend ${describeBackend(backend)}\n`);
        const captioned = images.filter((i) => i.caption !== undefined).length;
        const captions = captioned > 0 ? `, ${captioned} with a caption file (their prompts: "<template>, <caption>", e.g. "a photo of a ${token}, <caption>")` : '';
        process.stderr.write(`painter: learning ${setup.tokens.join(' ')} from ${images.length} image(s) at ${resolution}px${captions}; run folder ${runDir}\n`);
      }
      const { hooks, interrupt } = engineHooks(progress, json, runDir);
      try {
        const result = await train(setup.task, engineConfig(cfg), runDir, cfg, hooks, run.resumeFrom);
        // Installed where generate finds it by its token, as AUTOMATIC1111's embeddings folder.
        const installed = await installEmbedding(result.output, embeddingsDir(cfg['embeddingsDir']));
        progress.succeed(`learned ${token} in ${result.step} steps → ${result.output}`);
        if (json) process.stdout.write(JSON.stringify({ output: result.output, installed, runDir, steps: result.step, finalLoss: result.losses.at(-1) }, null, 2) + '\n');
        else {
          process.stderr.write(`painter: installed as ${installed}; "painter generate" uses it whenever a prompt says ${token}\n`);
          process.stdout.write(`${result.output}\n`);
        }
      } finally {
        interrupt.dispose();
        progress.stop();
      }
    } finally {
      setup.dispose();
    }
  } finally {
    disposeModel(model);
  }
}
