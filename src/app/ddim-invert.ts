/**
 * `ddim-invert`: the noise from which DDIM regenerates a real picture, written as one tensor
 * [1, C, h, w] (NCHW) that `generate --latents` starts from.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { describeBackend, useBackend, type BackendChoice, type BackendReport } from '../backend/select.js';
import { throwIfDeviceError } from '../backend/webgpu-kernels.js';
import { disposeModel } from '../core/model.js';
import { vaeLatentFactor } from '../core/models/vae.js';
import { ddimInvert } from '../core/pipeline/ddim-inversion.js';
import { latentsToNchw, pictureLatents } from '../core/pipeline/edit.js';
import { encodePromptSet } from '../core/prompt/encode.js';
import { InterruptedError, PainterError } from '../errors.js';
import { readEditImage, readNoiseFile } from '../io/edit-inputs.js';
import { loadModel } from '../io/load-model.js';
import { resolveModelPath } from '../io/paths.js';
import { writeSafetensors } from '../io/safetensors.js';
import { resolveConfig } from '../options/resolve.js';
import type { OptionInput } from '../options/types.js';
import { loadConcepts, promptLoras, type LoadedConcepts } from './concepts.js';
import { promptWarnings } from './generate.js';
import { breathe, phaseClock, type Hooks } from './hooks.js';
import { checkMemoryBudget } from './memory-check.js';

export type DdimInvertInput = OptionInput<'ddim-invert'> & {
  image: string;
  backend?: BackendChoice;
};

export interface DdimInvertResult {
  /** The noise file written. */
  file: string;
  width: number;
  height: number;
  /** The command that regenerates the picture from it. */
  regenerate: string;
  timings: { loadMs: number; invertMs: number };
  backend: BackendReport;
}

function quoteArg(s: string): string {
  return /^[\w./<>:-]+$/.test(s) ? s : JSON.stringify(s);
}

export async function ddimInvertImage(input: DdimInvertInput, hooks: Hooks = {}): Promise<DdimInvertResult> {
  const { image: imageFile, backend: choice, ...passed } = input;
  const o = resolveConfig('ddim-invert', passed);
  const { prompt, loras } = promptLoras(o.prompt, o);
  const out = path.resolve(o.out ?? `${path.basename(imageFile).replace(/\.[^.]+$/, '')}-inverted.safetensors`);
  if (!out.endsWith('.safetensors')) throw new PainterError(`--out ${o.out}: name a .safetensors file`);
  if (!fs.existsSync(path.dirname(out))) throw new PainterError(`--out ${o.out}: the folder ${path.dirname(out)} does not exist; create it or choose another path`);
  const posteriorGiven = o.noise !== undefined ? readNoiseFile(o.noise).posterior : undefined;
  if (o.noise !== undefined && !posteriorGiven) throw new PainterError(`--noise ${o.noise}: holds no "posterior" tensor, the only draw an inversion makes`);
  const backend = await useBackend(choice);
  const modelPath = resolveModelPath(o.model);
  const t0 = Date.now();
  const base = loadModel(modelPath, { config: o.config, arch: o.arch, predictionType: o.predictionType });
  let concepts: LoadedConcepts | undefined;
  try {
    const picture = await readEditImage(imageFile, vaeLatentFactor(base.vae.config));
    for (const n of picture.notes) hooks.info?.(n);
    checkMemoryBudget({ command: 'generate', options: { width: picture.width, height: picture.height, guidance: o.guidance } }, modelPath, backend, { configDir: o.config });
    const warn = (m: string) => hooks.warn?.(m);
    concepts = loadConcepts(base, { ...o, lora: loras }, [prompt, o.negative], hooks);
    const model = concepts.model;
    promptWarnings(model, prompt, warn);
    hooks.info?.(`backend ${describeBackend(backend)}`);
    const loadMs = Date.now() - t0;
    const t1 = Date.now();
    const c = model.vae.config.latent_channels;
    const f = vaeLatentFactor(model.vae.config);
    const [h, w] = [picture.height / f, picture.width / f];
    // Prompt and negative prompt in one set: long or weighted prompts pad them to one length.
    const [promptEmbeds, negativeEmbeds] = encodePromptSet(model, o.guidance > 1 ? [prompt, o.negative] : [prompt], { clipSkip: o.clipSkip });
    const latents = pictureLatents(model, picture, o.seed, posteriorGiven);
    const loop = ddimInvert(model, { latents, promptEmbeds, negativeEmbeds, guidance: o.guidance, steps: o.steps });
    const progress = phaseClock(hooks, 'ddim-invert');
    let inverted: tf.Tensor4D;
    try {
      let r = loop.next();
      while (!r.done) {
        progress(r.value.step + 1, r.value.total, 'inversion step');
        await breathe();
        if (hooks.shouldStop?.()) throw new InterruptedError('interrupted; no noise file written');
        r = loop.next();
      }
      inverted = r.value;
    } finally {
      loop.return(undefined as unknown as tf.Tensor4D);
      tf.dispose([latents, promptEmbeds, negativeEmbeds ?? []].flat());
    }
    const data = await latentsToNchw(inverted);
    throwIfDeviceError();
    if (!data.every(Number.isFinite)) throw new PainterError('the inversion produced NaN or infinite values, so no noise file was written; the model may hold corrupt weights');
    await writeSafetensors(out, { latents: { shape: [1, c, h, w], data } }, { 'painter.prompt': o.prompt, 'painter.steps': String(o.steps), 'painter.guidance': String(o.guidance) });
    hooks.file?.({ kind: 'result', path: out });
    const regenerate = [
      'painter generate',
      quoteArg(o.prompt),
      `--latents ${quoteArg(out)}`,
      `--scheduler ddim --steps ${o.steps} --guidance ${o.guidance}`,
      `--width ${picture.width} --height ${picture.height}`,
      o.model !== undefined ? `--model ${quoteArg(o.model)}` : '',
    ]
      .filter(Boolean)
      .join(' ');
    return { file: out, width: picture.width, height: picture.height, regenerate, timings: { loadMs, invertMs: Date.now() - t1 }, backend };
  } finally {
    concepts?.dispose();
    disposeModel(base);
  }
}
