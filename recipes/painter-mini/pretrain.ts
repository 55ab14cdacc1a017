/**
 * painter-mini's pretraining recipe: a Stable Diffusion in miniature trained from scratch on the
 * procedural world, seeded and resumable, in stages, each a `train()` run with its own
 * subfolder of the run folder (checkpoints, train.log, loss.svg):
 *
 *   0. tokenizer — a CLIP BPE vocabulary from world captions (deterministic, rebuilt on resume);
 *   1. vae/      — AutoencoderKL, loss = MSE + L1 reconstruction + klWeight·KL(q(z|x) ‖ N(0, I))
 *                  (Rombach et al. 2022, §3 / appendix G, without the GAN and LPIPS terms);
 *   1b. vae-hires/ — with vaeHiresSteps > 0, the VAE goes on at twice the image size (pretrain-vae.ts);
 *   2. text/     — the CLIP text encoder on captions alone, with heads that must read every
 *                  attribute from its states (text-pretrain.ts); frozen from then on, as SD's CLIP;
 *   3. ldm/      — scaling_factor = 1/std of the trained VAE's latents (as the LDM authors set
 *                  0.18215), then the UNet on L = ‖ε − ε_θ(z_t, t, τ_θ(y))‖² (eq. 2) with a
 *                  fraction of captions emptied so the model also learns the unconditional
 *                  ε_θ(z_t, t, ∅) that classifier-free guidance needs. With textSteps 0 (the
 *                  first recipe) the text encoder is trained jointly with the UNet here instead;
 *   4. ldm-hires/ — with hiresSteps > 0, stage 3's UNet goes on at twice the image size (SD's
 *                  256 px → 512 px progression);
 *   5. vae-decoder/ — with decoderSteps > 0, the decoder alone at the final size, encoder frozen.
 * Finally the pipeline is saved as a diffusers folder (float16) with a README of the recipe.
 *
 * Every batch is rendered on the fly from `sampleScene` (which never yields held-out subjects)
 * with a generator seeded by (seed, stage, step), so a resumed stage sees the same data as an
 * uninterrupted one; the next batch renders while the current step computes.
 *
 *   node scripts/pretrain-mini.mjs [--out DIR] [--run-dir DIR] [--seed N] [--vae-steps N]
 *     [--steps N] [--vae-batch N] [--batch N] [--vae-lr X] [--lr X] [--checkpoint-every N]
 *     [--text-steps N] [--object-loss-weight X] [--timesteps uniform|stratified] [--size 64|32] [--hires-steps N]
 *     [--vae-hires-steps N] [--decoder-steps N] [--caption-omit P] [--jobs N] [--resume] [--snapshot DIR] [--backend wasm]
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { BOS_TOKEN, EOS_TOKEN, trainClipBpe, type TrainedBpe } from './bpe-train.js';
import { describeMiniSize, MINI_MAX_BYTES, miniConfigs, miniParamCounts, type MiniConfigs, type MiniSizeReport, type MiniSizes, type MiniTokenIds } from './mini-config.js';
import {
  BatchStream,
  clipEmbeddingScale,
  DONE_FILE,
  engineConfig,
  imagesToArray,
  objectWeightMap,
  prefixed,
  readDone,
  renderBatch,
  runStage,
  STAGE_SALT,
  streamRng,
  summarise,
  variablePrefix,
  variables,
  writeComponent,
} from './pretrain-stages.js';
import { trainTextEncoder, type TextStageSummary } from './text-pretrain.js';
import { posteriorSample, trainVaeStage, VAE_DIR } from './pretrain-vae.js';
import { recipeReadme } from './pretrain-readme.js';
import { startDecoderProcess } from './pretrain-side.js';
import { PRETRAIN_DEFAULTS, type PretrainSettings } from './pretrain-settings.js';
import { writeMiniTokenizer } from './tokenizer-files.js';
import { caption, sampleScene } from './world.js';
import { PainterError, UsageError, checkpointParams, checkpointsDir, clipTextForward, clipTextParamShapes, diffusionLoss, encode, latestCheckpoint, loadWeights, noiseSchedule, readCheckpointMeta, saveModel, stratifiedTimesteps, train, unetParamShapes, vaeEncode, writeBytesAtomic, type ClipTokenizer, type ParamShapes, type Params, type SchedulerConfig, type StableDiffusion, type StepReport } from '../../src/index.js';

export { PRETRAIN_DEFAULTS, type PretrainSettings } from './pretrain-settings.js';

export type PretrainStage = 'vae' | 'vae-hires' | 'text' | 'ldm' | 'hires' | 'decoder';

export interface PretrainHooks {
  log?(line: string): void;
  onStep?(stage: PretrainStage, r: StepReport): void;
  /** Checked between steps: true saves a checkpoint and stops with an InterruptedError. */
  shouldStop?(): boolean;
}

export interface StageSummary {
  steps: number;
  firstLoss: number;
  /** Mean loss over the last tenth of the steps (at least one). */
  finalLoss: number;
}

export interface PretrainResult {
  out: string;
  configs: MiniConfigs;
  size: MiniSizeReport;
  scalingFactor: number;
  vae: StageSummary;
  /** Stage 1b, when the recipe has one. */
  vaeHires?: StageSummary;
  /** Stage 2, when the recipe has one. */
  text?: TextStageSummary;
  ldm: StageSummary;
  /** Stage 4, when the recipe has one. */
  hires?: StageSummary;
  /** Stage 5, when the recipe has one. */
  decoder?: StageSummary;
}

// ---------------------------------------------------------------------------------------------
// Stages

/** Stage 0: the BPE vocabulary of the world's captions. */
export function buildMiniBpe(s: Pick<PretrainSettings, 'seed' | 'bpeCaptions' | 'vocabSize'>): TrainedBpe {
  const rng = streamRng(s.seed, STAGE_SALT.tokenizer, 0);
  const texts = Array.from({ length: s.bpeCaptions }, () => caption(sampleScene(rng), rng));
  return trainClipBpe(texts, { vocabSize: s.vocabSize });
}

/** 1/std of sampled latents z = μ + σ·n over `scaleSamples` fresh scenes (diffusers' recipe). */
export async function measureScalingFactor(vae: Params, configs: MiniConfigs, s: PretrainSettings): Promise<number> {
  const rng = streamRng(s.seed, STAGE_SALT.scale, 0);
  const size = s.sizes.imageSize;
  let sum = 0;
  let sumSq = 0;
  let count = 0;
  for (let done = 0; done < s.scaleSamples; done += 16) {
    const n = Math.min(16, s.scaleSamples - done);
    const batch = await renderBatch(rng, n, size);
    const x = imagesToArray(batch.images, size);
    const noise = rng.normals(n * (size / 4) ** 2 * configs.vae.latent_channels);
    const z = tf.tidy(() => posteriorSample(vaeEncode(vae, configs.vae, tf.tensor4d(x, [n, size, size, 3])), noise));
    const values = z.dataSync();
    z.dispose();
    for (const v of values) {
      sum += v;
      sumSq += v * v;
    }
    count += values.length;
  }
  const mean = sum / count;
  const std = Math.sqrt(Math.max(sumSq / count - mean * mean, 1e-12));
  return 1 / std;
}

interface LdmWeights {
  unet: Params;
  textEncoder: Params;
  summary: StageSummary;
}

/** Stage 3 (the UNet at the recipe's size) or stage 4 (the same UNet at twice it). */
interface LdmPhase {
  stage: 'ldm' | 'hires';
  /** Image size; `configs` are the model's at this size. */
  size: number;
  steps: number;
  /** Stage 3's weights, which stage 4 starts from. */
  from?: LdmWeights;
}

const CAPTIONS_FILE = 'captions.json';

/**
 * A UNet stage records the captions it learns from when it begins; resuming or reusing it with
 * other captions is refused (a stage without the record was trained on full captions).
 */
function checkCaptionOmit(dir: string, omit: number): void {
  const file = path.join(dir, CAPTIONS_FILE);
  // Begun: a checkpoint or the finished stage (the scaling factor's record alone is not a start).
  if (![path.join(dir, CAPTIONS_FILE), path.join(dir, DONE_FILE), checkpointsDir(dir)].some((f) => fs.existsSync(f))) return;
  const was = fs.existsSync(file) ? (JSON.parse(fs.readFileSync(file, 'utf8')) as { captionOmit: number }).captionOmit : 0;
  if (was !== omit) throw new PainterError(`${dir}/ was trained with --caption-omit ${was}; keep it at that, or remove ${dir} to retrain it`);
}

/** Stage 4's images come from stage 3's data stream, past any index stage 3 could reach. */
const HIRES_BATCH_OFFSET = 2 ** 27;

/**
 * Stage 3 (or 4), the UNet. With `frozenText` (stage 2's text encoder) only the UNet trains;
 * without, a fresh text encoder (stage 4: stage 3's) trains jointly with it.
 */
async function trainLdm(s: PretrainSettings, configs: MiniConfigs, tokenizer: ClipTokenizer, vae: Params, frozenText: Params | undefined, phase: LdmPhase, hooks: PretrainHooks): Promise<LdmWeights> {
  const dir = path.join(s.runDir, phase.stage === 'ldm' ? 'ldm' : 'ldm-hires');
  const unetShapes = unetParamShapes(configs.unet);
  const textShapes = clipTextParamShapes(configs.textEncoder);
  const name = phase.stage === 'ldm' ? 'stage 3' : `stage 4 (${phase.size}×${phase.size})`;
  const what = `${name} (${frozenText ? 'unet, frozen text encoder' : 'text encoder + unet'})`;
  checkCaptionOmit(dir, s.captionOmit);
  const done = readDone(dir);
  if (done && done.steps >= phase.steps) {
    hooks.log?.(`${what}: finished earlier (${done.steps} steps), reusing ${dir}`);
    return {
      unet: loadWeights([path.join(dir, 'unet', 'diffusion_pytorch_model.safetensors')], unetShapes, 'painter-mini unet'),
      textEncoder: loadWeights([path.join(dir, 'text_encoder', 'model.safetensors')], textShapes, 'painter-mini text_encoder'),
      summary: done,
    };
  }
  const prefix = variablePrefix('ldm');
  const unetVars = variables(unetShapes, s.seed * 8 + 2, `${prefix}_unet`);
  const textVars = frozenText ? new Map<string, tf.Variable>() : variables(textShapes, s.seed * 8 + 3, `${prefix}_text`, clipEmbeddingScale);
  if (phase.from) {
    for (const [k, v] of unetVars) v.assign(phase.from.unet.get(k)!);
    for (const [k, v] of textVars) v.assign(phase.from.textEncoder.get(k)!);
  }
  const unet = { params: new Map(unetVars) as Params, config: configs.unet };
  const textParams: Params = frozenText ?? new Map(textVars);
  const size = phase.size;
  const data = new BatchStream(s.seed, STAGE_SALT.ldm, s.batch, size, phase.steps, {
    withMasks: s.objectLossWeight > 0,
    captionOmit: s.captionOmit,
    first: phase.stage === 'hires' ? HIRES_BATCH_OFFSET : 0,
  });
  const schedule = noiseSchedule(configs.scheduler);
  const T = configs.scheduler.num_train_timesteps;
  const sf = configs.vae.scaling_factor;
  const L = Math.min(tokenizer.modelMaxLength, configs.textEncoder.max_position_embeddings);
  const lh = size / 4;
  const latentShape: [number, number, number, number] = [s.batch, lh, lh, configs.vae.latent_channels];
  const latentElems = lh * lh * configs.vae.latent_channels;
  let k = 0;
  const task: Parameters<typeof train>[0] = {
    vars: new Map([...prefixed(textVars, 'text_encoder'), ...prefixed(unetVars, 'unet')]),
    prepareBatch(rng) {
      const batch = data.take(k);
      data.request(++k);
      const captions = batch.captions.map((c) => (rng.uniform() < s.emptyCaptionRate ? '' : c));
      const ids = captions.flatMap((c) => encode(tokenizer, c, { maxLength: L, padding: 'max_length', truncation: true }).ids);
      const posterior = rng.normals(s.batch * latentElems);
      // z₀ = (μ + σ·n)·scaling_factor, outside the tape: the VAE is frozen.
      const latents = tf.tidy(() => tf.mul(posteriorSample(vaeEncode(vae, configs.vae, tf.tensor4d(imagesToArray(batch.images, size), [s.batch, size, size, 3])), posterior), sf));
      const z0 = latents.dataSync() as Float32Array;
      latents.dispose();
      const timesteps = s.timesteps === 'stratified' ? stratifiedTimesteps(rng, s.batch, T) : captions.map(() => rng.int(T));
      const noise = rng.normals(s.batch * latentElems);
      const weights = batch.masks && Float32Array.from(batch.masks.flatMap((m) => Array.from(objectWeightMap(m, size, 4, s.objectLossWeight))));
      return () => {
        // A frozen text encoder's weights are not variables: the gradient tape leaves it out.
        const ehs = clipTextForward(textParams, configs.textEncoder, tf.tensor2d(ids, [s.batch, L], 'int32')).lastHiddenState;
        const positionWeights = weights && tf.tensor4d(weights, [s.batch, lh, lh, 1]);
        return diffusionLoss(unet, schedule, { latents: tf.tensor4d(z0, latentShape), noise: tf.tensor4d(noise, latentShape), timesteps, encoderHiddenStates: ehs, positionWeights }, { predictionType: configs.scheduler.prediction_type, minSnrGamma: s.minSnrGamma });
      };
    },
    saveState: () => ({ k }),
    restoreState(state) {
      k = (state as { k: number }).k;
    },
    async saveResult(runDir) {
      await writeComponent(path.join(runDir, 'unet'), configs.unet, 'diffusion_pytorch_model.safetensors', unet.params);
      await writeComponent(path.join(runDir, 'text_encoder'), configs.textEncoder, 'model.safetensors', textParams);
      return runDir;
    },
  };
  try {
    const partial = s.captionOmit > 0 ? `, colour, pattern and background each unnamed in ${Math.round(s.captionOmit * 100)}%` : '';
    hooks.log?.(`${what}: ${phase.steps} steps of ${s.batch} captioned images at ${size}×${size}, ${Math.round(s.emptyCaptionRate * 100)}% empty captions${partial}`);
    fs.mkdirSync(dir, { recursive: true });
    await writeBytesAtomic(path.join(dir, CAPTIONS_FILE), JSON.stringify({ captionOmit: s.captionOmit }));
    const cfg = engineConfig(s, phase.steps, s.lr, 0.01, STAGE_SALT.ldm);
    // Stage 4's noise and timesteps: a stream of their own.
    if (phase.stage === 'hires') cfg.seed += HIRES_BATCH_OFFSET;
    const losses = await runStage(phase.stage, s, data, task, cfg, dir, hooks, () => k);
    const summary = summarise(losses);
    await writeBytesAtomic(path.join(dir, DONE_FILE), JSON.stringify(summary));
    const clone = (vars: Map<string, tf.Variable>): Params => new Map([...vars].map(([key, v]) => [key, tf.clone(v)]));
    return { unet: clone(unetVars), textEncoder: frozenText ? new Map([...frozenText].map(([key, t]) => [key, tf.clone(t)])) : clone(textVars), summary };
  } finally {
    for (const v of [...unetVars.values(), ...textVars.values()]) v.dispose();
  }
}

/** `--snapshot`: the latest diffusion checkpoint as a pipeline (see PretrainSettings.snapshot). */
async function writeSnapshot(
  s: PretrainSettings,
  out: string,
  baseConfigs: MiniConfigs,
  hiresConfigs: MiniConfigs,
  tokenizer: ClipTokenizer,
  vae: { params: Params; summary: StageSummary },
  hooks: PretrainHooks,
): Promise<PretrainResult> {
  // Stage 4's latest checkpoint once it has one, else stage 3's.
  const hires = latestCheckpoint(path.join(s.runDir, 'ldm-hires'));
  const ckpt = hires ?? latestCheckpoint(path.join(s.runDir, 'ldm'));
  const configs = hires ? hiresConfigs : baseConfigs;
  if (!ckpt) throw new PainterError(`--snapshot: no diffusion-stage checkpoint in ${path.join(s.runDir, 'ldm', 'checkpoints')} yet`);
  const unet = paramsFromCheckpoint(ckpt.dir, 'unet', unetParamShapes(configs.unet));
  const textShapes = clipTextParamShapes(configs.textEncoder);
  const frozen = path.join(s.runDir, 'text', 'text_encoder', 'model.safetensors');
  // A checkpoint of a joint run holds the text encoder; a frozen one is stage 2's.
  const joint = readCheckpointMeta(ckpt.dir).config as { settings?: { textSteps?: number } };
  const textEncoder = (joint.settings?.textSteps ?? 0) > 0 && fs.existsSync(frozen) ? loadWeights([frozen], textShapes, 'painter-mini text_encoder') : paramsFromCheckpoint(ckpt.dir, 'text_encoder', textShapes);
  try {
    const model: StableDiffusion = {
      source: out,
      unet: { config: configs.unet, params: unet },
      vae: { config: configs.vae, params: vae.params },
      textEncoder: { config: configs.textEncoder, params: textEncoder },
      tokenizer,
      scheduler: configs.scheduler,
    };
    await saveModel(model, out, { half: false, overwrite: true });
    hooks.log?.(`snapshot of ${ckpt.dir} saved to ${out}`);
    const meta = readCheckpointMeta(ckpt.dir);
    const losses = meta.losses;
    return { out, configs, size: miniParamCounts(configs), scalingFactor: configs.vae.scaling_factor, vae: vae.summary, text: readDone(path.join(s.runDir, 'text')), ldm: summarise(losses) };
  } finally {
    for (const p of [unet, textEncoder]) for (const t of p.values()) t.dispose();
  }
}

/** One component's parameters (`<component>/<key>`) from an engine checkpoint, checked against `shapes`. */
function paramsFromCheckpoint(dir: string, component: string, shapes: ParamShapes): Params {
  const params = checkpointParams(dir, component);
  for (const [k, shape] of shapes) {
    const t = params.get(k);
    if (!t || t.shape.join(',') !== shape.join(',')) {
      for (const x of params.values()) x.dispose();
      throw new PainterError(`${dir}: ${component} "${k}" is ${t ? `[${t.shape.join(', ')}]` : 'missing'}, expected [${shape.join(', ')}]; the checkpoint is from another configuration`);
    }
  }
  return params;
}

// ---------------------------------------------------------------------------------------------
// The recipe

function tokenIds(bpe: TrainedBpe): MiniTokenIds {
  const id = (t: string) => {
    const v = bpe.vocab[t];
    if (v === undefined) throw new Error(`painter-mini vocabulary lacks ${t}`);
    return v;
  };
  return { vocabSize: Object.keys(bpe.vocab).length, bosTokenId: id(BOS_TOKEN), eosTokenId: id(EOS_TOKEN) };
}

/** The model's sizes in stage 4: twice the images, the same widths. */
function hiresSizes(s: PretrainSettings): MiniSizes {
  return { ...s.sizes, imageSize: 2 * s.sizes.imageSize };
}

/**
 * The diffusion stage is trained for one noise schedule, target and loss: the run folder records
 * them, and a run begun on others (an older recipe) is not resumed with this one.
 */
async function checkLdmSchedule(dir: string, scheduler: SchedulerConfig, s: Pick<PretrainSettings, 'objectLossWeight' | 'timesteps' | 'textSteps'>): Promise<void> {
  const file = path.join(dir, 'noise-schedule.json');
  interface Recipe {
    beta_schedule: string;
    beta_start: number;
    beta_end: number;
    prediction_type: string;
    timesteps?: string;
    object_loss_weight?: number;
    /** Steps of the frozen text encoder's own stage; absent or 0: trained jointly. */
    text_steps?: number;
  }
  const describe = (c: Recipe) =>
    `the ${c.beta_schedule} β schedule ${c.beta_start}–${c.beta_end} with ${c.prediction_type} targets, ${c.timesteps ?? 'uniform'} timesteps, object loss weight ${c.object_loss_weight ?? 0} and ${c.text_steps ? `a text encoder pretrained for ${c.text_steps} steps, frozen` : 'the text encoder trained jointly'}`;
  const want: Recipe = { beta_schedule: scheduler.beta_schedule, beta_start: scheduler.beta_start, beta_end: scheduler.beta_end, prediction_type: scheduler.prediction_type, timesteps: s.timesteps, object_loss_weight: s.objectLossWeight, text_steps: s.textSteps };
  const started = latestCheckpoint(dir) !== undefined || readDone(dir) !== undefined;
  if (fs.existsSync(file) || started) {
    // Runs from before this record: SD 1.x's schedule and ε targets.
    const had: Recipe = fs.existsSync(file) ? (JSON.parse(fs.readFileSync(file, 'utf8')) as Recipe) : { beta_schedule: 'scaled_linear', beta_start: 0.00085, beta_end: 0.012, prediction_type: 'epsilon' };
    if (describe(had) !== describe(want)) {
      throw new PainterError(`${dir}: that diffusion stage was trained with ${describe(had)}, this recipe uses ${describe(want)}; remove ${dir} to retrain it`);
    }
  }
  fs.mkdirSync(dir, { recursive: true });
  await writeBytesAtomic(file, JSON.stringify(want));
}

/** Whether the stage in `runDir/dir` has finished at least `steps` steps. */
function stageFinished(runDir: string, dir: string, steps: number): boolean {
  return (readDone(path.join(runDir, dir))?.steps ?? -1) >= steps;
}

/** What every stage after the VAE's starts from: the tokenizer, the finished VAE, its scaling factor. */
interface PreparedRun {
  s: PretrainSettings;
  tokenizer: ClipTokenizer;
  ids: MiniTokenIds;
  size: MiniSizeReport;
  vae: { params: Params; summary: StageSummary };
  vaeHires?: StageSummary;
  scalingFactor: number;
  /** The configs at stage 3's size and at the model's final size (stage 4's when there is one). */
  configs: MiniConfigs;
  finalConfigs: MiniConfigs;
  finalSize: number;
}

/**
 * Checks the settings and the run folder, builds the tokenizer, trains (or reuses) stages 1 and
 * 1b and measures the scaling factor. The caller disposes `vae.params`.
 */
async function prepareRun(settings: Partial<PretrainSettings>, hooks: PretrainHooks): Promise<PreparedRun> {
  const s: PretrainSettings = { ...PRETRAIN_DEFAULTS, ...settings };
  if (!Number.isInteger(s.seed) || s.seed < 0 || s.seed >= 2 ** 20) throw new UsageError(`--seed ${s.seed}: give a whole number in [0, ${2 ** 20})`);
  // The image size must divide into the VAE's and UNet's levels: check before anything is written.
  if (![32, 64].includes(s.sizes.imageSize)) throw new UsageError(`--size ${s.sizes.imageSize}: painter-mini trains at 32 or 64 pixels`);
  if (s.hiresSteps > 0 && s.sizes.imageSize !== 32) throw new UsageError(`--hires-steps ${s.hiresSteps}: stage 4 trains at twice --size, and painter-mini's largest size is 64; give --size 32`);
  if (s.vaeHiresSteps > 0 && s.hiresSteps === 0) throw new UsageError(`--vae-hires-steps ${s.vaeHiresSteps}: stage 1b trains the VAE at stage 4's size; give --hires-steps too (with --size 32)`);
  if (!s.resume && !s.snapshot && fs.existsSync(s.runDir) && fs.readdirSync(s.runDir).length > 0) {
    throw new PainterError(`${s.runDir}: a previous run is there; pass --resume to continue it, or remove the folder to start over`);
  }
  fs.mkdirSync(s.runDir, { recursive: true });
  const bpe = buildMiniBpe(s);
  const tokenizer = await writeMiniTokenizer(bpe, path.join(s.runDir, 'tokenizer'));
  const ids = tokenIds(bpe);
  const draft = miniConfigs(s.sizes, ids);
  const size = miniParamCounts(draft);
  hooks.log?.(describeMiniSize(size));
  if (size.float16Bytes > MINI_MAX_BYTES) throw new PainterError(`painter-mini: ${describeMiniSize(size)} is over the limit; choose smaller widths`);

  // What later stages learnt from a VAE that is not the one this recipe would now train is stale.
  const begun = (d: string) => latestCheckpoint(path.join(s.runDir, d)) !== undefined || readDone(path.join(s.runDir, d)) !== undefined;
  const finished = (d: string, steps: number) => stageFinished(s.runDir, d, steps);
  const stage1Ready = finished('vae', s.vaeSteps);
  const vaeReady = stage1Ready && (s.vaeHiresSteps === 0 ? !begun(VAE_DIR['vae-hires']) : finished(VAE_DIR['vae-hires'], s.vaeHiresSteps));
  const stale = [...(stage1Ready ? [] : [VAE_DIR['vae-hires']]), ...(vaeReady ? [] : ['ldm', VAE_DIR.decoder])].find(begun);
  if (stale) throw new PainterError(`${s.runDir}: ${stale}/ was trained on another VAE (--vae-steps, --vae-hires-steps); keep those at what they were, or remove ${path.join(s.runDir, stale)} to retrain it`);
  if (s.snapshot && !vaeReady) throw new PainterError(`--snapshot: the VAE stages in ${s.runDir} have not finished; snapshots are of the diffusion stage`);
  const vae1 = await trainVaeStage(s, draft, { stage: 'vae', size: s.sizes.imageSize, steps: s.vaeSteps }, hooks);
  const vaeHires = s.vaeHiresSteps > 0 ? await trainVaeStage(s, draft, { stage: 'vae-hires', size: hiresSizes(s).imageSize, steps: s.vaeHiresSteps, from: vae1.params }, hooks) : undefined;
  if (vaeHires) for (const t of vae1.params.values()) t.dispose();
  const vae = vaeHires ? { params: vaeHires.params, summary: vae1.summary } : vae1;
  try {
    // Measured once per VAE (a record without its VAE's steps is from before stage 1b).
    const scaleFile = path.join(s.runDir, 'ldm', 'scaling-factor.json');
    const measured = fs.existsSync(scaleFile) ? (JSON.parse(fs.readFileSync(scaleFile, 'utf8')) as { scalingFactor: number; vaeSteps?: number; vaeHiresSteps?: number }) : undefined;
    let scalingFactor: number;
    if (measured && (measured.vaeSteps === undefined || (measured.vaeSteps === s.vaeSteps && measured.vaeHiresSteps === s.vaeHiresSteps))) scalingFactor = measured.scalingFactor;
    else {
      scalingFactor = await measureScalingFactor(vae.params, draft, s);
      fs.mkdirSync(path.dirname(scaleFile), { recursive: true });
      await writeBytesAtomic(scaleFile, JSON.stringify({ scalingFactor, vaeSteps: s.vaeSteps, vaeHiresSteps: s.vaeHiresSteps }));
    }
    hooks.log?.(`scaling_factor ${scalingFactor.toPrecision(4)}`);
    const configs = miniConfigs(s.sizes, ids, scalingFactor);
    const hires = s.hiresSteps > 0;
    const finalConfigs = hires ? miniConfigs(hiresSizes(s), ids, scalingFactor) : configs;
    return { s, tokenizer, ids, size, vae, vaeHires: vaeHires?.summary, scalingFactor, configs, finalConfigs, finalSize: hires ? hiresSizes(s).imageSize : s.sizes.imageSize };
  } catch (e) {
    for (const t of vae.params.values()) t.dispose();
    throw e;
  }
}

/** Stage 5 of a run whose VAE stages have finished (the side process's job, pretrain-side.ts). */
export async function pretrainDecoder(settings: Partial<PretrainSettings>, hooks: PretrainHooks = {}): Promise<StageSummary> {
  // The first process has said all that preparing reports.
  const run = await prepareRun(settings, {});
  try {
    const decoder = await trainDecoder(run, hooks);
    for (const t of decoder.params.values()) t.dispose();
    return decoder.summary;
  } finally {
    for (const t of run.vae.params.values()) t.dispose();
  }
}

function trainDecoder(run: PreparedRun, hooks: PretrainHooks): ReturnType<typeof trainVaeStage> {
  const { s } = run;
  return trainVaeStage(s, run.finalConfigs, { stage: 'decoder', size: run.finalSize, steps: s.decoderSteps, from: run.vae.params }, hooks);
}

export async function pretrainMini(settings: Partial<PretrainSettings>, hooks: PretrainHooks = {}): Promise<PretrainResult> {
  const run = await prepareRun(settings, hooks);
  const { s, tokenizer, ids, size, vae, scalingFactor, configs, finalConfigs } = run;
  // Weights this function loaded or trained besides the VAE's, disposed at the end.
  const owned: Params[] = [];
  try {
    // A snapshot only reads the run, whatever recipe it was begun with.
    if (s.snapshot) return await writeSnapshot(s, s.snapshot, configs, miniConfigs(hiresSizes(s), ids, scalingFactor), tokenizer, vae, hooks);
    await checkLdmSchedule(path.join(s.runDir, 'ldm'), configs.scheduler, s);
    // Stage 4 starts from stage 3's result: one begun on a stage 3 that is gone or unfinished is stale.
    const hiresDir = path.join(s.runDir, 'ldm-hires');
    const stage3 = readDone(path.join(s.runDir, 'ldm'));
    if (fs.existsSync(hiresDir) && !(stage3 && stage3.steps >= s.ldmSteps)) {
      throw new PainterError(`${hiresDir}: stage 4 was begun from a finished stage 3 that ${path.join(s.runDir, 'ldm')} no longer holds; remove ${hiresDir} to retrain it`);
    }
    const side = s.jobs > 1 && s.decoderSteps > 0 && !stageFinished(s.runDir, VAE_DIR.decoder, s.decoderSteps) ? startDecoderProcess(s, hooks) : undefined;
    let text: Awaited<ReturnType<typeof trainTextEncoder>> | undefined;
    let ldm: LdmWeights;
    let hires: LdmWeights | undefined;
    try {
      text = s.textSteps > 0 ? await trainTextEncoder(s, configs, tokenizer, hooks) : undefined;
      if (text) owned.push(text.params);
      ldm = await trainLdm(s, configs, tokenizer, vae.params, text?.params, { stage: 'ldm', size: s.sizes.imageSize, steps: s.ldmSteps }, hooks);
      owned.push(ldm.unet, ldm.textEncoder);
      hires = s.hiresSteps > 0 ? await trainLdm(s, finalConfigs, tokenizer, vae.params, text?.params, { stage: 'hires', size: run.finalSize, steps: s.hiresSteps, from: ldm }, hooks) : undefined;
      if (hires) owned.push(hires.unet, hires.textEncoder);
    } catch (e) {
      await side?.stop();
      throw e;
    }
    // Stage 5 here: reused when the side process finished it, else resumed from its checkpoint.
    await side?.finished(hooks.shouldStop);
    const final = hires ?? ldm;
    const decoder = s.decoderSteps > 0 ? await trainDecoder(run, hooks) : undefined;
    if (decoder) owned.push(decoder.params);
    const model: StableDiffusion = {
      source: s.out,
      unet: { config: finalConfigs.unet, params: final.unet },
      vae: { config: finalConfigs.vae, params: (decoder ?? vae).params },
      textEncoder: { config: finalConfigs.textEncoder, params: final.textEncoder },
      tokenizer,
      scheduler: finalConfigs.scheduler,
    };
    await saveModel(model, s.out, { half: true, overwrite: true });
    const result = { configs: finalConfigs, size, scalingFactor, vae: vae.summary, vaeHires: run.vaeHires, text: text?.summary, ldm: ldm.summary, hires: hires?.summary, decoder: decoder?.summary };
    await writeBytesAtomic(path.join(s.out, 'README.md'), recipeReadme(s, result));
    hooks.log?.(`saved ${s.out}`);
    return { out: s.out, ...result };
  } finally {
    for (const p of [vae.params, ...owned]) for (const t of p.values()) t.dispose();
  }
}
