/**
 * DreamBooth (Ruiz et al. 2023): fine-tune the model on a few images of one subject, prompted as
 * "a photo of [V] dog", with the class-specific prior-preservation loss (eq. 2):
 *   L = E‖ε − ε_θ(z_t, t, c_inst)‖² + λ · E‖ε′ − ε_θ(z′_t′, t′, c_class)‖²,
 * where the second term is over images the frozen model made for the class prompt. As diffusers'
 * train_dreambooth.py, each step runs one batch of B instance and B class views through the UNet
 * together (own noise and timestep per row) and averages each term over its own rows.
 *
 * What trains: the UNet (--mode full: every weight is a variable; --mode lora: LoRA adapters on
 * the attention projections, base weights stay plain tensors), optionally the text encoder too.
 */
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import type { LoraComponent } from '../core/lora.js';
import { releaseComponent, type StableDiffusion } from '../core/model.js';
import { clipTextForward } from '../core/models/clip-text.js';
import type { Params } from '../core/params.js';
import { promptIdRows } from '../core/pipeline/text-to-image.js';
import { Rng } from '../core/random.js';
import { noiseSchedule, type PredictionType } from '../core/schedulers/index.js';
import { diffusionLoss } from '../core/training/loss.js';
import type { SourceImage } from '../io/dataset.js';
import { writeLoraFile } from '../io/lora-files.js';
import { saveModel } from '../io/save-model.js';
import type { MethodSettings, TrainingTask } from './engine.js';
import { createTrainableLora, loraVariables, paramsWithLora, toLoraAdapters, type TrainableLora } from './lora-training.js';
import { disposeViews, drawNoise, encodeViews, EpochSampler, pickView, positionWeights, sampleLatents, withCaption, type NoiseDraw, type SamplerState, type View } from './steps.js';
import { captionsVary, PLAIN_CAPTIONS, trainingPrompt } from './captions.js';
import { renderValidationGrid } from './validation.js';

export type DreamBoothMode = 'full' | 'lora';

export interface DreamBoothSettings extends MethodSettings {
  identifier: string;
  className: string;
  /** Prompts with {identifier} and {class} already filled in. */
  instancePrompt: string;
  classPrompt: string;
  priorPreservation: boolean;
  /** λ of eq. 2. */
  priorWeight: number;
  mode: DreamBoothMode;
  rank: number;
  alpha: number;
  trainTextEncoder: boolean;
  format: 'diffusers' | 'kohya';
}

/** Fills {identifier} and {class} in a prompt template. */
export function fillPrompt(template: string, identifier: string, className: string): string {
  return template.replaceAll('{identifier}', identifier).replaceAll('{class}', className);
}

export const LORA_FILE = 'dreambooth-lora.safetensors';
export const MODEL_DIR = 'model';

/** One step's random draws (made outside the gradient tape); timesteps and noise: instance rows first, then class rows. */
export interface DrawnBatch extends NoiseDraw {
  instance: View[];
  /** Empty without prior preservation. */
  prior: View[];
  /** The instance rows' prompts when captions vary from step to step (shuffled, dropped out). */
  instancePrompts?: string[];
}

/** Which loss: the training objective, or one of its two terms alone (for checks). */
export type LossTerm = 'total' | 'instance' | 'prior';

export interface DreamBoothSetup {
  task: TrainingTask;
  lora?: TrainableLora;
  draw(rng: Rng): DrawnBatch;
  /** The loss of a drawn batch; differentiable w.r.t. the task's variables. */
  loss(batch: DrawnBatch, term: LossTerm): tf.Scalar;
  /** The model as trained so far (LoRA merged into copies); dispose() frees what it made. */
  trainedModel(): { model: StableDiffusion; dispose(): void };
  dispose(): void;
}

let created = 0;

function variablesOf(params: Params, component: string, prefix: string): Map<string, tf.Variable> {
  const vars = new Map<string, tf.Variable>();
  // tf.variable shares the base tensor's buffer until the first update, which replaces it.
  for (const [k, t] of params) vars.set(`${component}/${k}`, tf.variable(t, true, `${prefix}/${component}/${k}`));
  return vars;
}

function paramsOf(vars: Map<string, tf.Variable>, component: string): Params {
  const out: Params = new Map();
  for (const [k, v] of vars) if (k.startsWith(`${component}/`)) out.set(k.slice(component.length + 1), v);
  return out;
}

/** Which UNet weights get a gradient: all of them (full), or those LoRA adapts (merged W + ΔW). */
function trainedUnetWeights(mode: DreamBoothMode, lora: TrainableLora | undefined): (key: string) => boolean {
  switch (mode) {
    case 'full':
      return () => true;
    case 'lora': {
      const adapted = new Set(lora!.adapters.filter((a) => a.component === 'unet').map((a) => `${a.module}.weight`));
      return (key) => adapted.has(key);
    }
  }
}

export function createDreamBooth(model: StableDiffusion, instanceImages: SourceImage[], classImages: SourceImage[], s: DreamBoothSettings): DreamBoothSetup {
  if (instanceImages.length === 0) throw new RangeError('DreamBooth needs at least one instance image');
  if (s.priorPreservation && classImages.length === 0) throw new RangeError('prior preservation needs class images');
  const components: LoraComponent[] = s.trainTextEncoder ? ['unet', 'text_encoder'] : ['unet'];
  let lora: TrainableLora | undefined;
  let vars: Map<string, tf.Variable>;
  if (s.mode === 'lora') {
    const source = { unet: model.unet.params, text_encoder: model.textEncoder.params };
    lora = createTrainableLora(
      components.map((component) => ({ component, params: source[component] })),
      s.rank,
      s.alpha,
      new Rng(s.seed + 0x10a),
    );
    vars = loraVariables(lora);
  } else {
    const prefix = `dreambooth${++created}_${Date.now()}`;
    vars = variablesOf(model.unet.params, 'unet', prefix);
    if (s.trainTextEncoder) for (const [k, v] of variablesOf(model.textEncoder.params, 'text_encoder', prefix)) vars.set(k, v);
  }
  const fullUnet = s.mode === 'full' ? paramsOf(vars, 'unet') : undefined;
  const fullText = s.mode === 'full' && s.trainTextEncoder ? paramsOf(vars, 'text_encoder') : undefined;
  const checkpoint = s.gradientCheckpointing ? { weights: trainedUnetWeights(s.mode, lora) } : undefined;

  /** Current UNet / text-encoder weights; LoRA ones are built (call inside a tidy). */
  const unetParams = (): Params => fullUnet ?? (lora ? paramsWithLora(model.unet.params, lora, 'unet') : model.unet.params);
  const textParams = (): Params => {
    if (!s.trainTextEncoder) return model.textEncoder.params;
    return fullText ?? paramsWithLora(model.textEncoder.params, lora!, 'text_encoder');
  };

  const instanceViews = encodeViews(model, instanceImages, s.resolution, s.centerCrop, s.flip, s.seed);
  // Class images are made at the training resolution: the centre crop is the whole image.
  const classViews = s.priorPreservation ? encodeViews(model, classImages, s.resolution, true, s.flip, s.seed + 1) : [];
  const schedule = noiseSchedule(model.scheduler);
  const predictionType = model.scheduler.prediction_type as PredictionType;
  const T = model.scheduler.num_train_timesteps;
  const sf = model.vae.config.scaling_factor;
  const [, lh, lw, lc] = instanceViews[0]!.mean.shape;
  const rows = s.priorPreservation ? 2 * s.batch : s.batch;

  // The prompts are fixed: one per instance image (the instance prompt, then its caption file if
  // any, as AUTOMATIC1111's [filewords] and kohya's caption files), and the class prompt. Token
  // ids once; with a frozen text encoder, its output once too; each row gathers its prompt's.
  const prompts = [...new Set([...instanceImages.map((img) => withCaption(s.instancePrompt, img.caption)), s.classPrompt])];
  const promptOfImage = instanceImages.map((img) => prompts.indexOf(withCaption(s.instancePrompt, img.caption)));
  const classRow = prompts.indexOf(s.classPrompt);
  const ids = promptIdRows(model, prompts);
  const frozenContext = s.trainTextEncoder ? undefined : tf.tidy(() => clipTextForward(model.textEncoder.params, model.textEncoder.config, ids).lastHiddenState);
  const captions = s.captions ?? PLAIN_CAPTIONS;
  const varying = captionsVary(captions);
  if (s.releaseUnused && s.mode === 'lora') {
    // Only the UNet (and a training text encoder) runs from here on; a LoRA file is the output.
    releaseComponent(model, 'vae');
    // Prompts that vary from step to step are encoded each step.
    if (!s.trainTextEncoder && !varying) releaseComponent(model, 'textEncoder');
  }

  const instanceSampler = new EpochSampler(instanceImages.length);
  const classSampler = new EpochSampler(classImages.length);
  const draw = (rng: Rng): DrawnBatch => {
    const instance = Array.from({ length: s.batch }, () => pickView(instanceViews, instanceSampler.next(rng), rng));
    const prior = s.priorPreservation ? Array.from({ length: s.batch }, () => pickView(classViews, classSampler.next(rng), rng)) : [];
    const noise = drawNoise(rng, rows, [lh, lw, lc], T, s.noiseOffset);
    if (!varying) return { instance, prior, ...noise };
    const instancePrompts = instance.map((v) => trainingPrompt(s.instancePrompt, instanceImages[v.image]!.caption, captions, rng));
    return { instance, prior, ...noise, instancePrompts };
  };

  /** Text conditioning of a batch's rows: cached per fixed prompt, encoded when the step's prompts vary. */
  const contextOf = (b: DrawnBatch): tf.Tensor3D => {
    const classRows = b.prior.map(() => classRow);
    if (!b.instancePrompts) {
      const rowPrompts = [...b.instance.map((v) => promptOfImage[v.image]!), ...classRows];
      if (frozenContext) return tf.gather(frozenContext, tf.tensor1d(rowPrompts, 'int32')) as tf.Tensor3D;
      return clipTextForward(textParams(), model.textEncoder.config, rowPrompts.map((r) => ids[r]!)).lastHiddenState as tf.Tensor3D;
    }
    const rowIds = [...promptIdRows(model, b.instancePrompts), ...classRows.map((r) => ids[r]!)];
    return clipTextForward(textParams(), model.textEncoder.config, rowIds).lastHiddenState as tf.Tensor3D;
  };

  const loss = (b: DrawnBatch, term: LossTerm): tf.Scalar =>
    tf.tidy(() => {
      if (term === 'prior' && b.prior.length === 0) throw new RangeError('no prior term without prior preservation');
      const views = [...b.instance, ...b.prior];
      const latents = sampleLatents(views, b.posterior, sf);
      const noise = tf.tensor4d(b.noise, latents.shape);
      const context = contextOf(b);
      const weights = positionWeights(views);
      const n = b.instance.length;
      const [start, count] = term === 'instance' ? [0, n] : term === 'prior' ? [n, b.prior.length] : [0, views.length];
      const part = <T extends tf.Tensor>(t: T) => (count === views.length ? t : (t.slice(start, count) as T));
      // Both terms present: the batch mean of w·mse over 2B rows with w = 2 (instance) and 2λ
      // (class) is exactly mean_inst + λ·mean_class, in one UNet pass.
      const sampleWeights = term === 'total' && b.prior.length > 0 ? views.map((_, i) => (i < n ? 2 : 2 * s.priorWeight)) : undefined;
      return diffusionLoss(
        { params: unetParams(), config: model.unet.config },
        schedule,
        { latents: part(latents), noise: part(noise), timesteps: b.timesteps.slice(start, start + count), encoderHiddenStates: part(context as tf.Tensor3D), positionWeights: weights && part(weights) },
        { predictionType, minSnrGamma: s.minSnrGamma, sampleWeights, checkpoint },
      );
    });

  const trainedModel = (): { model: StableDiffusion; dispose(): void } => {
    const made: tf.Tensor[] = [];
    const build = (params: Params, component: LoraComponent): Params => {
      if (!lora || !components.includes(component)) return params;
      const merged = paramsWithLora(params, lora, component);
      for (const [k, t] of merged) if (t !== params.get(k)) made.push(t);
      return merged;
    };
    const unet = fullUnet ?? build(model.unet.params, 'unet');
    const text = fullText ?? build(model.textEncoder.params, 'text_encoder');
    return {
      model: { ...model, unet: { config: model.unet.config, params: unet }, textEncoder: { config: model.textEncoder.config, params: text } },
      dispose: () => tf.dispose(made),
    };
  };

  const task: TrainingTask = {
    vars,
    prepareBatch(rng) {
      const batch = draw(rng);
      return () => loss(batch, 'total');
    },
    saveState: () => ({ instance: instanceSampler.state(), prior: classSampler.state() }),
    restoreState(state) {
      const st = state as { instance: SamplerState; prior: SamplerState };
      instanceSampler.restore(st.instance);
      classSampler.restore(st.prior);
    },
    async validate(step) {
      const view = trainedModel();
      try {
        return await renderValidationGrid(view.model, s.validationPrompt, s.seed, {}, step);
      } finally {
        view.dispose();
      }
    },
    async saveResult(runDir, step) {
      const metadata = {
        'painter.method': `dreambooth-${s.mode}`,
        'painter.identifier': s.identifier,
        'painter.class': s.className,
        'painter.instance_prompt': s.instancePrompt,
        'painter.base_model_hash': s.baseModelHash,
        'painter.steps': String(step),
        'painter.prior_weight': String(s.priorPreservation ? s.priorWeight : 0),
      };
      if (lora) {
        const file = path.join(runDir, LORA_FILE);
        await writeLoraFile(file, toLoraAdapters(lora), {
          format: s.format,
          alpha: s.format === 'kohya' ? s.alpha : undefined,
          metadata: { ...metadata, 'painter.rank': String(s.rank), 'painter.alpha': String(s.alpha) },
        });
        return file;
      }
      const dir = path.join(runDir, MODEL_DIR);
      const view = trainedModel();
      try {
        await saveModel(view.model, dir, { overwrite: true });
      } finally {
        view.dispose();
      }
      return dir;
    },
  };

  return {
    task,
    lora,
    draw,
    loss,
    trainedModel,
    dispose() {
      disposeViews([...instanceViews, ...classViews]);
      frozenContext?.dispose();
      if (lora) lora.dispose();
      else for (const v of vars.values()) v.dispose();
    },
  };
}
