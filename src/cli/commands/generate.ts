/** `painter generate "PROMPT"`: text-to-image to PNG files with A1111-readable parameters. */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { formatInfotext } from '../../core/infotext.js';
import { disposeModel, type StableDiffusion } from '../../core/model.js';
import {
  defaultImageSize,
  generate,
  generatePhased,
  latentSize,
  truncatedText,
  type GenerateRequest,
  type PartLoader,
  type PipelinePart,
} from '../../core/pipeline/generate.js';
import { A1111_SAMPLER_NAMES, type SchedulerKind } from '../../core/schedulers/index.js';
import { tokenId } from '../../core/tokenizer/clip-tokenizer.js';
import { InterruptedError, PainterError } from '../../errors.js';
import { modelHash } from '../../io/file-hash.js';
import { loadModel } from '../../io/load-model.js';
import { resolveModelPath } from '../default-model.js';
import { embeddingsDir, findEmbeddings } from '../../io/embedding-library.js';
import { readEmbeddingFile } from '../../io/embeddings.js';
import { multiVectorTokens } from '../../core/embeddings.js';
import { encodePng, writeNewPng } from '../../io/png-out.js';
import { closeSafetensors, openSafetensors, readTensor } from '../../io/safetensors.js';
import { backendFromArgs, describeBackend } from '../backend-option.js';
import { resolveConfig } from '../config.js';
import { breathe, watchInterrupt } from '../interrupt.js';
import { passedOptions, type Args } from '../main.js';
import { createProgress, type Progress } from '../progress.js';
import { applyConcepts, type ConceptRequest, type LoadedConcepts } from './concepts.js';
import { checkMemoryBudget } from '../memory-check.js';


/** Reads --latents: one tensor [B, C, h, w] (NCHW, as diffusers passes latents=). */
function readLatents(file: string, expected: [number, number, number]): { data: Float32Array; count: number } {
  let f;
  try {
    f = openSafetensors(file);
  } catch (e) {
    throw e instanceof PainterError ? new PainterError(`--latents ${e.message}`) : e;
  }
  try {
    const names = [...f.entries.keys()];
    if (names.length !== 1) throw new PainterError(`--latents ${file}: expected exactly one tensor, found ${names.length} (${names.slice(0, 3).join(', ')})`);
    const t = readTensor(f, names[0]!);
    if (t.dtype === 'I32' || t.dtype === 'I64') throw new PainterError(`--latents ${file}: tensor "${names[0]}" holds integers; expected floats`);
    const [c, h, w] = expected;
    if (t.shape.length !== 4 || t.shape[1] !== c || t.shape[2] !== h || t.shape[3] !== w) {
      throw new PainterError(`--latents ${file}: tensor "${names[0]}" has shape [${t.shape.join(', ')}]; this model and size need [B, ${c}, ${h}, ${w}] (NCHW)`);
    }
    return { data: t.data, count: t.shape[0]! };
  } finally {
    closeSafetensors(f);
  }
}

/** Warns about `<…>` words that no loaded embedding defines (a common typo or forgotten file). */
function unknownPlaceholders(model: StableDiffusion, prompt: string): string[] {
  return [...new Set(prompt.match(/<[^<>\s]+>/g) ?? [])].filter((t) => tokenId(model.tokenizer, t) === undefined && !t.startsWith('<|'));
}

export async function generateCommand(args: Args): Promise<void> {
  const cfg = resolveConfig('generate', passedOptions(args, 'generate'));
  const prompt = String(args['prompt'] ?? '');
  const json = Boolean(args['json']);
  const progress: Progress = createProgress(json);
  const backend = await backendFromArgs(args);
  const modelPath = resolveModelPath(cfg['model']);
  const isFolder = fs.existsSync(modelPath) && fs.statSync(modelPath).isDirectory();
  // When the whole pipeline does not fit but one component at a time does, generate in phases.
  const phased = checkMemoryBudget('generate', modelPath, cfg, backend, { phasedGeneration: isFolder })?.plan === 'phased';
  const t0 = Date.now();
  const loadOpts = { config: cfg['config'] as string | undefined, arch: cfg['arch'] as 'auto' | 'sd1' | 'sd2' };
  const conceptRequest: ConceptRequest = {
    embeddings: (cfg['embedding'] as string[] | undefined) ?? [],
    token: cfg['token'] as string | undefined,
    loras: (cfg['lora'] as string[] | undefined) ?? [],
  };
  const firstParts: PipelinePart[] | undefined = phased ? ['text_encoder'] : undefined;
  const base = loadModel(modelPath, { ...loadOpts, parts: firstParts });
  let concepts: LoadedConcepts | undefined;
  try {
    // Embeddings in the embeddings folder whose trigger word the prompts use (as AUTOMATIC1111).
    const given = new Set(conceptRequest.embeddings.map((f) => readEmbeddingFile(f, { token: conceptRequest.token }).token));
    const hidden = base.textEncoder.config.hidden_size;
    const library = findEmbeddings(embeddingsDir(cfg['embeddingsDir']), [prompt, String(cfg['negative'] ?? '')], given, (m) => progress.warn(m)).filter((l) => {
      // As AUTOMATIC1111: embeddings for another base model (or clashing with a word) are skipped.
      const why =
        l.width !== hidden
          ? `its vectors are ${l.width} wide, this model's text encoder ${hidden}`
          : multiVectorTokens(l.token, l.vectors).some((t) => tokenId(base.tokenizer, t) !== undefined)
            ? `"${l.token}" is already a word of this model's vocabulary`
            : undefined;
      if (why) progress.warn(`not using ${l.file} from the embeddings folder: ${why}`);
      return why === undefined;
    });
    conceptRequest.library = library.map((l) => l.file);
    if (!json) for (const l of library) process.stderr.write(`painter: ${l.token} from ${l.file}\n`);
    concepts = applyConcepts(base, conceptRequest, firstParts);
    const model = concepts.model;
    const loadMs = Date.now() - t0;
    const size = defaultImageSize(model);
    const width = (cfg['width'] as number | undefined) ?? size;
    const height = (cfg['height'] as number | undefined) ?? size;
    let grid: { h: number; w: number };
    try {
      grid = latentSize(model, width, height);
    } catch (e) {
      throw new PainterError(`--width/--height: ${(e as Error).message}; choose multiples of it`);
    }
    const fullPrompt = prompt;
    const negative = String(cfg['negative'] ?? '');
    for (const t of unknownPlaceholders(model, fullPrompt)) progress.warn(`the prompt uses ${t}, but no loaded embedding defines it; pass --embedding FILE`);
    for (const [label, p] of [['prompt', fullPrompt], ['negative prompt', negative]] as const) {
      const cut = truncatedText(model, p);
      if (cut) progress.warn(`the ${label} is longer than the text encoder reads; this part was cut: "${cut}"`);
    }
    let count = cfg['count'] as number;
    let initLatents: Float32Array | undefined;
    if (typeof cfg['latents'] === 'string') {
      const l = readLatents(cfg['latents'], [model.unet.config.in_channels, grid.h, grid.w]);
      if (args['count'] !== undefined && count !== l.count) throw new PainterError(`--latents ${cfg['latents']} holds ${l.count} latent(s) but --count is ${count}`);
      count = l.count;
      initLatents = l.data;
    }
    const request: GenerateRequest = {
      prompt: fullPrompt,
      negativePrompt: negative,
      steps: cfg['steps'] as number,
      guidance: cfg['guidance'] as number,
      scheduler: cfg['scheduler'] as SchedulerKind,
      seed: cfg['seed'] as number,
      count,
      batch: Math.min(cfg['batch'] as number, count),
      width,
      height,
      clipSkip: cfg['clipSkip'] as number,
      initLatents,
    };
    const outDir = path.resolve(cfg['out'] as string);
    const hash = modelHash(modelPath);
    if (!json) process.stderr.write(`painter: backend ${describeBackend(backend)}\n`);
    const interrupt = watchInterrupt();
    const files: { file: string; seed: number }[] = [];
    const t1 = Date.now();
    try {
      if (phased) progress.warn('the whole model does not fit in memory; generating with one component loaded at a time');
      const partsInUse = new Map<StableDiffusion, () => void>();
      const loader: PartLoader = {
        load: (parts) => {
          if (parts.length === 1 && parts[0] === 'text_encoder') return model;
          const m = loadModel(modelPath, { ...loadOpts, parts });
          const c = applyConcepts(m, conceptRequest, parts);
          partsInUse.set(c.model, () => {
            c.dispose();
            disposeModel(m);
          });
          return c.model;
        },
        release: (m) => {
          if (m === model) {
            concepts?.dispose();
            disposeModel(base);
          } else partsInUse.get(m)?.();
        },
      };
      const events = phased ? generatePhased(loader, request) : generate(model, request);
      for (const event of events) {
        if (event.kind === 'step') {
          progress.update(event.step, event.steps, `images ${event.images[0]! + 1}–${event.images.at(-1)! + 1}/${count} · step`);
        } else {
          const img = event.image;
          const text = formatInfotext({
            prompt,
            negativePrompt: String(cfg['negative'] ?? ''),
            steps: request.steps,
            sampler: A1111_SAMPLER_NAMES[request.scheduler],
            cfgScale: request.guidance,
            seed: img.seed,
            width,
            height,
            modelHash: hash,
            model: path.basename(modelPath).replace(/\.safetensors$/, ''),
            clipSkip: request.clipSkip > 0 ? request.clipSkip + 1 : undefined,
            tiHashes: concepts.tiHashes,
            loraHashes: concepts.loraHashes,
            extra: { Version: 'painter' },
          });
          const png = await encodePng(img.pixels, img.width, img.height, { parameters: text });
          files.push({ file: writeNewPng(outDir, String(img.seed), png), seed: img.seed });
        }
        await breathe();
        if (interrupt.requested) throw new InterruptedError(`interrupted; ${files.length} complete image(s) kept in ${outDir}, no partial file written`);
      }
    } finally {
      interrupt.dispose();
      progress.stop();
    }
    const genMs = Date.now() - t1;
    if (json) {
      process.stdout.write(JSON.stringify({ files, timings: { loadMs, generateMs: genMs, perImageMs: genMs / count }, backend: backend.name }, null, 2) + '\n');
    } else {
      progress.succeed(`${files.length} image(s) in ${outDir}`);
      for (const f of files) process.stdout.write(`${f.file}\n`);
    }
  } finally {
    concepts?.dispose();
    disposeModel(base);
  }
}
