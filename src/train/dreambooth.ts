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
import { PIVOTAL_EMBEDDING_KEY, PIVOTAL_TOKEN_KEY, type LoraComponent, type LoraTargetSet } from '../core/lora.js';
import { releaseComponent, type StableDiffusion } from '../core/model.js';
import { clipTextForward } from '../core/models/clip-text.js';
import type { Params } from '../core/params.js';
import { promptIdRows } from '../core/pipeline/text-to-image.js';
import { Rng } from '../core/random.js';
import { noiseSchedule, type PredictionType } from '../core/schedulers/index.js';
import { diffusionLoss } from '../core/training/loss.js';
import type { SourceImage } from '../io/dataset.js';
import { writeLoraFile } from '../io/lora-files.js';
import { writeEmbeddingFile } from '../io/embeddings.js';
import { embeddingFileName } from '../io/embedding-library.js';
import { createPivotalEmbedding, PIVOTAL_VAR, type PivotalSettings } from './pivotal.js';
import { saveModel } from '../io/save-model.js';
import { variantName, type MethodSettings, type TrainingTask } from './engine.js';
import { createTrainableLora, loraVariables, paramsWithLora, toLoraAdapters, type TrainableLora } from './lora-training.js';
import { disposeViews, drawNoise, encodeViews, EpochSampler, ImageBatcher, latentShape, pickView, positionWeights, sampleLatents, withCaption, type NoiseDraw, type SamplerState, type View } from './steps.js';
import { captionsVary, PLAIN_CAPTIONS, trainingPrompt } from './captions.js';
import { subjectLayout, type SubjectSettings } from './subjects.js';
import { disposeHeldOut, heldOutLoss, heldOutSet } from './validation-loss.js';
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
  /** Which weights LoRA adapts (default 'attention', diffusers'). */
  loraTargets?: LoraTargetSet;
  /** LoCon: rank and alpha of the UNet's 3×3 convs (kohya's conv_dim / conv_alpha). */
  convRank?: number;
  convAlpha?: number;
  /** The text encoder's learning rate as a multiple of the UNet's (--text-encoder-lr / --lr). */
  textEncoderLrScale?: number;
  /** Pivotal tuning: a new token's embedding learnt with the LoRA (its token is the identifier). */
  pivotal?: PivotalSettings;
  /** Several subjects and classes (a concept dataset); `instancePrompt` and `classPrompt` are then unused. */
  subjects?: SubjectSettings;
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
  /** The optimisation step it is drawn for (0-based; pivotal tuning's embedding trains in the first ones). */
  step?: number;
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

function sameShape(a: readonly View[], b: readonly View[]): boolean {
  return a[0]!.mean.shape.join() === b[0]!.mean.shape.join();
}

/** Two draws as one, rows of the first then the second (their latents may differ in shape). */
function joinDraws(a: NoiseDraw, b: NoiseDraw): NoiseDraw {
  const join = (x: Float32Array, y: Float32Array) => {
    const out = new Float32Array(x.length + y.length);
    out.set(x);
    out.set(y, x.length);
    return out;
  };
  return { timesteps: [...a.timesteps, ...b.timesteps], posterior: join(a.posterior, b.posterior), noise: join(a.noise, b.noise) };
}

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

/** `heldOut`: instance images kept out of training for the validation loss (validation-loss.ts). */
export function createDreamBooth(model: StableDiffusion, instanceImages: SourceImage[], classImages: SourceImage[], s: DreamBoothSettings, heldOut: readonly SourceImage[] = []): DreamBoothSetup {
  if (instanceImages.length === 0) throw new RangeError('DreamBooth needs at least one instance image');
  if (s.priorPreservation && classImages.length === 0) throw new RangeError('prior preservation needs class images');
  const components: LoraComponent[] = s.trainTextEncoder ? ['unet', 'text_encoder'] : ['unet'];
  let lora: TrainableLora | undefined;
  let vars: Map<string, tf.Variable>;
  if (s.mode === 'lora') {
    const source = { unet: model.unet.params, text_encoder: model.textEncoder.params };
    lora = createTrainableLora(
      components.map((component) => ({ component, params: source[component] })),
      { rank: s.rank, alpha: s.alpha, targets: s.loraTargets, convRank: s.convRank, convAlpha: s.convAlpha },
      new Rng(s.seed + 0x10a),
    );
    vars = loraVariables(lora);
  } else {
    const prefix = `dreambooth${++created}_${Date.now()}`;
    vars = variablesOf(model.unet.params, 'unet', prefix);
    if (s.trainTextEncoder) for (const [k, v] of variablesOf(model.textEncoder.params, 'text_encoder', prefix)) vars.set(k, v);
  }
  if (s.pivotal && s.mode !== 'lora') throw new RangeError('pivotal tuning trains an embedding with LoRA adapters');
  // The new token must be in the tokenizer before any prompt is tokenised.
  const ti = s.pivotal ? createPivotalEmbedding(model, s.pivotal) : undefined;
  if (ti) vars.set(PIVOTAL_VAR, ti.rows);
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

  // The prompts are fixed: one per instance image (its subject's instance prompt, then its caption
  // file if any, as AUTOMATIC1111's [filewords] and kohya's caption files), and the class prompts.
  // Token ids once; with a frozen text encoder, its output once too; each row gathers its prompt's.
  const layout = subjectLayout(s.subjects, s, classImages.length);
  const imagePrompt = (img: SourceImage) => withCaption(layout.instancePrompt(img), img.caption);
  const prompts = [...new Set([...instanceImages.map(imagePrompt), ...layout.classes.map((c) => c.classPrompt)])];
  const promptOfImage = instanceImages.map((img) => prompts.indexOf(imagePrompt(img)));
  const classRows = layout.classes.map((c) => prompts.indexOf(c.classPrompt));
  const ids = promptIdRows(model, prompts);
  // The text side is fixed (its outputs cached) unless the text encoder or an embedding trains.
  const textFixed = !s.trainTextEncoder && !ti;
  const frozenContext = textFixed ? tf.tidy(() => clipTextForward(model.textEncoder.params, model.textEncoder.config, ids).lastHiddenState) : undefined;
  const validation = heldOut.length > 0 ? heldOutSet(model, heldOut, heldOut.map(imagePrompt), s.resolution, s.seed) : undefined;
  // With a frozen text encoder (which may be released below) the held-out prompts are encoded once.
  const heldOutContext =
    validation && textFixed ? tf.tidy(() => clipTextForward(model.textEncoder.params, model.textEncoder.config, promptIdRows(model, validation.prompts)).lastHiddenState) : undefined;
  const captions = s.captions ?? PLAIN_CAPTIONS;
  const varying = captionsVary(captions);
  if (s.releaseUnused && s.mode === 'lora') {
    // Only the UNet (and a training text encoder) runs from here on; a LoRA file is the output.
    releaseComponent(model, 'vae');
    // Prompts that vary from step to step are encoded each step.
    if (textFixed && !varying) releaseComponent(model, 'textEncoder');
  }

  const instanceSampler = new ImageBatcher(instanceImages, s.batch);
  // One epoch order per class: each instance row is paired with a class image of its own subject's class.
  const classSamplers = layout.classes.map((c) => new EpochSampler(c.images.length));
  if (s.priorPreservation && layout.classes.some((c) => c.images.length === 0)) throw new RangeError('prior preservation needs class images of every class');
  const classView = (image: number, rng: Rng): View => {
    const k = layout.classOf(instanceImages[image]!);
    return pickView(classViews, layout.classes[k]!.images[classSamplers[k]!.next(rng)]!, rng);
  };
  const draw = (rng: Rng): DrawnBatch => {
    const instance: View[] = [];
    instanceSampler.draw(rng, (image) => instance.push(pickView(instanceViews, image, rng)));
    // As many class rows as instance rows, so λ weighs the two terms' means.
    const prior = s.priorPreservation ? instance.map((v) => classView(v.image, rng)) : [];
    const shape = latentShape(instance);
    // Instance rows from a non-square bucket and square class rows are drawn (and run) apart.
    const noise = prior.length === 0 || sameShape(instance, prior) ? drawNoise(rng, instance.length + prior.length, shape, T, s.noiseOffset) : joinDraws(drawNoise(rng, instance.length, shape, T, s.noiseOffset), drawNoise(rng, prior.length, latentShape(prior), T, s.noiseOffset));
    if (!varying) return { instance, prior, ...noise };
    const instancePrompts = instance.map((v) => trainingPrompt(layout.instancePrompt(instanceImages[v.image]!), instanceImages[v.image]!.caption, captions, rng));
    return { instance, prior, ...noise, instancePrompts };
  };

  /** One term of a batch whose instance and class latents differ in shape: its own rows, draws and conditioning. */
  const splitTermLoss = (b: DrawnBatch, term: 'instance' | 'prior'): tf.Scalar => {
    const n = b.instance.length;
    const views = term === 'instance' ? b.instance : b.prior;
    const perRow = (from: View[]) => from[0]!.mean.size;
    const offset = term === 'instance' ? 0 : n * perRow(b.instance);
    const size = views.length * perRow(views);
    const latents = sampleLatents(views, b.posterior.subarray(offset, offset + size), sf);
    const context = contextOf(b);
    const rows = term === 'instance' ? context.slice(0, n) : context.slice(n, b.prior.length);
    const weights = positionWeights(views);
    return diffusionLoss(
      { params: unetParams(), config: model.unet.config },
      schedule,
      { latents, noise: tf.tensor4d(b.noise.subarray(offset, offset + size), latents.shape), timesteps: term === 'instance' ? b.timesteps.slice(0, n) : b.timesteps.slice(n), encoderHiddenStates: rows, positionWeights: weights },
      { predictionType, minSnrGamma: s.minSnrGamma, checkpoint },
    );
  };

  /** Text conditioning of a batch's rows: cached per fixed prompt, encoded when the step's prompts vary. */
  const contextOf = (b: DrawnBatch): tf.Tensor3D => {
    const priorRows = b.prior.map((v) => classRows[layout.classOfClassImage[v.image]!]!);
    if (!b.instancePrompts) {
      const rowPrompts = [...b.instance.map((v) => promptOfImage[v.image]!), ...priorRows];
      if (frozenContext) return tf.gather(frozenContext, tf.tensor1d(rowPrompts, 'int32')) as tf.Tensor3D;
      return clipTextForward(textParams(), model.textEncoder.config, rowPrompts.map((r) => ids[r]!), { extraTokens: ti?.extraTokens(b.step) }).lastHiddenState as tf.Tensor3D;
    }
    const rowIds = [...promptIdRows(model, b.instancePrompts), ...priorRows.map((r) => ids[r]!)];
    return clipTextForward(textParams(), model.textEncoder.config, rowIds, { extraTokens: ti?.extraTokens(b.step) }).lastHiddenState as tf.Tensor3D;
  };

  const loss = (b: DrawnBatch, term: LossTerm): tf.Scalar =>
    tf.tidy(() => {
      if (term === 'prior' && b.prior.length === 0) throw new RangeError('no prior term without prior preservation');
      // Terms whose latents differ in shape (buckets) run as two UNet passes: L_inst + λ·L_prior.
      if (term === 'total' && b.prior.length > 0 && !sameShape(b.instance, b.prior)) return tf.add(loss(b, 'instance'), tf.mul(loss(b, 'prior'), s.priorWeight)) as tf.Scalar;
      if (term !== 'total' && b.prior.length > 0 && !sameShape(b.instance, b.prior)) return splitTermLoss(b, term);
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

  const textScale = s.textEncoderLrScale ?? 1;
  const task: TrainingTask = {
    vars,
    ...((textScale !== 1 || ti) && { lrScale: (key: string) => (key === PIVOTAL_VAR ? s.pivotal!.lrScale : /^(lora\/)?text_encoder\//.test(key) ? textScale : 1) }),
    prepareBatch(rng, step) {
      ti?.prepare(step);
      const batch = { ...draw(rng), step };
      return () => loss(batch, 'total');
    },
    // One class keeps the state's one-sampler shape (runs before several classes resume as they were).
    saveState: () => ({ instance: instanceSampler.state(), prior: classSamplers.length === 1 ? classSamplers[0]!.state() : classSamplers.map((c) => c.state()) }),
    restoreState(state) {
      const st = state as { instance: unknown; prior: SamplerState | SamplerState[] };
      instanceSampler.restore(st.instance);
      const prior = Array.isArray(st.prior) ? st.prior : [st.prior];
      classSamplers.forEach((c, k) => c.restore(prior[k]!));
    },
    ...(validation && {
      validationLoss: () =>
        heldOutLoss(
          model,
          validation,
          () => ({ params: unetParams(), config: model.unet.config }),
          (prompts) =>
            heldOutContext
              ? (tf.gather(heldOutContext, tf.tensor1d(prompts.map((p) => validation.prompts.indexOf(p)), 'int32')) as tf.Tensor3D)
              : (clipTextForward(textParams(), model.textEncoder.config, promptIdRows(model, prompts), { extraTokens: ti?.extraTokens() }).lastHiddenState as tf.Tensor3D),
        ),
    }),
    async validate(step) {
      const view = trainedModel();
      try {
        return await renderValidationGrid(view.model, s.validationPrompt, s.seed, ti ? { extraTokens: ti.extraTokens() } : {}, step);
      } finally {
        view.dispose();
      }
    },
    async saveResult(runDir, step, variant) {
      const metadata = {
        'painter.method': `dreambooth-${s.mode}`,
        'painter.identifier': s.identifier,
        'painter.class': s.className,
        'painter.instance_prompt': s.subjects ? s.subjects.concepts.map((c) => c.instancePrompt).join(' | ') : s.instancePrompt,
        'painter.base_model_hash': s.baseModelHash,
        'painter.steps': String(step),
        'painter.prior_weight': String(s.priorPreservation ? s.priorWeight : 0),
      };
      if (lora) {
        const file = path.join(runDir, variantName(LORA_FILE, variant));
        const conv: Record<string, string> = s.convRank === undefined ? {} : { 'painter.conv_rank': String(s.convRank), 'painter.conv_alpha': String(s.convAlpha ?? s.convRank) };
        // Pivotal tuning: the embedding alone beside the LoRA (diffusers' load_textual_inversion, or
        // A1111's emb_params with --format kohya), named in the LoRA's metadata and, for kohya,
        // bundled in it too (bundle_emb.TOKEN.string_to_param.*, as A1111's Lora extension reads).
        const embedding = ti ? path.join(runDir, variantName(embeddingFileName(s.pivotal!.token), variant)) : undefined;
        const pivotal: Record<string, string> = ti ? { [PIVOTAL_TOKEN_KEY]: s.pivotal!.token, [PIVOTAL_EMBEDDING_KEY]: path.basename(embedding!) } : {};
        if (ti) await writeEmbeddingFile(embedding!, s.pivotal!.token, ti.rows, { format: s.format === 'kohya' ? 'a1111' : 'diffusers', metadata: { 'painter.base_model_hash': s.baseModelHash, 'painter.steps': String(step) } });
        await writeLoraFile(file, toLoraAdapters(lora), {
          format: s.format,
          metadata: { ...metadata, 'painter.rank': String(s.rank), 'painter.alpha': String(s.alpha), 'painter.lora_targets': s.loraTargets ?? 'attention', ...conv, ...pivotal },
          ...(s.convRank === undefined ? {} : { networkArgs: { conv_dim: String(s.convRank), conv_alpha: String(s.convAlpha ?? s.convRank) } }),
          ...(ti && s.format === 'kohya' ? { bundle: [{ token: s.pivotal!.token, vectors: ti.rows }] } : {}),
        });
        return file;
      }
      const dir = path.join(runDir, variantName(MODEL_DIR, variant));
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
      disposeHeldOut(validation);
      frozenContext?.dispose();
      heldOutContext?.dispose();
      ti?.dispose();
      if (lora) lora.dispose();
      else for (const v of vars.values()) v.dispose();
    },
  };
}
