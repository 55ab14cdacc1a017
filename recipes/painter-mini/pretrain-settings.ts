/**
 * painter-mini's recipe settings (pretrain.ts) and the defaults that built the shipped model:
 * `npm run pretrain:mini` with no flags reproduces fixtures/painter-mini.
 */
import * as os from 'node:os';
import { MINI_SIZES, type MiniSizes } from './mini-config.js';

export interface PretrainSettings {
  seed: number;
  /** The finished pipeline (diffusers folder, float16). */
  out: string;
  /** Stage folders, checkpoints and logs. */
  runDir: string;
  vaeSteps: number;
  ldmSteps: number;
  vaeBatch: number;
  batch: number;
  vaeLr: number;
  lr: number;
  /**
   * Steps of the text-encoder stage (text-pretrain.ts), of `textBatch` captions at `textLr`; the
   * diffusion stage then keeps the text encoder frozen. 0: no such stage, the text encoder is
   * trained jointly with the UNet (the first painter-mini, whose object words collapsed).
   */
  textSteps: number;
  textBatch: number;
  textLr: number;
  warmupSteps: number;
  checkpointEvery: number;
  /**
   * Min-SNR-γ loss weighting of the diffusion stage (0: none, the recipe's choice). Measured in
   * x₀ error, min-SNR weighs a timestep by min(SNR, γ) for ε and v targets alike, and the plain
   * v loss by SNR + 1: at the high-noise steps that lay out the scene from the caption (SNR
   * 1e-4 to 1e-2), min-SNR leaves almost no gradient, the plain v loss a weight of about 1.
   */
  minSnrGamma: number;
  /**
   * Extra diffusion-loss weight on the latent pixels around the object (`objectWeightMap`; 0:
   * none, the recipe's choice). Tried because the plain loss leaves the object word unused: after
   * 1,700 steps, swapping it in a caption changed the loss by under 1% at every timestep (the
   * colour word: 20–60%, `bench/caption-probe.mjs`) and every object kind was drawn as the same
   * blob. With weight 3 and stratified timesteps it was still under 0.5% after 1,000 steps.
   */
  objectLossWeight: number;
  /** How each batch draws its timesteps: uniformly (the recipe's choice) or one per stratum. */
  timesteps: 'uniform' | 'stratified';
  /** Weight of the mean per-latent-element KL term against the mean per-pixel reconstruction. */
  klWeight: number;
  /** Fraction of captions replaced by "" (classifier-free guidance's unconditional model). */
  emptyCaptionRate: number;
  /**
   * Stages 3–4: how often each of the colour, the pattern and the background goes unnamed in a
   * caption (`caption`'s `omit`), so that "a photo of a dog" has a class prior to sample from.
   * Measured with 0.25 (build/mini-v9, bench:concepts seed 0): "a photo of a car" varied in colour
   * and background, and DreamBooth without prior learnt the subject (exact 13%, likeness 48%;
   * full captions: 0%, 36%), but prompt fidelity fell: colour 73% (seed 1, 150 captions: 77%)
   * against 82% (82%), object 50% (49%) against 43% (61%). 0 by default: colour is a target.
   */
  captionOmit: number;
  /** Captions the BPE vocabulary is learnt from, and its size. */
  bpeCaptions: number;
  vocabSize: number;
  /** Images whose latents measure the scaling factor. */
  scaleSamples: number;
  sizes: MiniSizes;
  /**
   * Stage 4 (0: none): after stage 3 at `sizes.imageSize`, the UNet goes on for this many steps
   * at twice that size — Stable Diffusion's progressive resolution (256 px, then 512 px): the
   * cheap low-resolution steps learn what a caption draws, the last ones the detail. The VAE is
   * convolutional and is kept as stage 1 trained it.
   */
  hiresSteps: number;
  /**
   * Stage 1b (0: none; only with stage 4): the whole VAE goes on for this many steps at twice
   * `sizes.imageSize`, before any latent is used (pretrain-vae.ts).
   */
  vaeHiresSteps: number;
  /**
   * Stage 5 (0: none): the VAE's decoder fine-tuned for this many steps at the model's final
   * size, the encoder frozen (pretrain-vae.ts); batch and learning rate are stage 1's.
   */
  decoderSteps: number;
  /**
   * Processes the recipe may run at once (1: one stage after another). With 2, stage 5 — which
   * needs only the finished VAE — trains in a second process beside stages 2–4
   * (pretrain-side.ts): wasm computes on one thread, so on two cores it is done by the time stage
   * 4 is, and the weights are the same either way.
   */
  jobs: number;
  /** Continue each stage from its latest checkpoint (a finished stage is kept). */
  resume: boolean;
  /**
   * Instead of training: write the diffusion stage's latest checkpoint, with the finished VAE, as
   * a diffusers folder (float32) here, to try the model while its run goes on.
   */
  snapshot?: string;
}

/**
 * Sized to stay under 3 hours on a shared 2-core machine (wasm backend, one thread per process;
 * measured per step: VAE 0.9 s for 8 images at 32×32 and 3.2 s at 64×64, text encoder ≈ 0.8 s
 * for 64 captions, UNet ≈ 0.95 s for 16 images at 32×32 and ≈ 3.2 s at 64×64 against the frozen
 * text encoder, decoder alone 2.8 s at 64×64): the VAE and most UNet steps at 32×32, then each
 * goes on at 64×64 (stages 1b and 4), as SD trains at 256 px before 512 px; the decoder alone
 * (stage 5) trains in a second process beside stages 2–4 (`jobs`):
 * 1600 × 0.9 + 200 × 3.2 + max(600 × 0.8 + 5500 × 0.95 + 500 × 3.2, 1200 × 2.8) s ≈ 2 h 45 min
 * (one after another, ≈ 3 h 40). VAE PSNR on 64×64 held-out scenes: 800 steps at 32×32 alone
 * 20.9 dB (dots lost); 1600 steps 22.1; + stage 1b 24.0; + stage 5: 300 steps 24.6, 600 steps
 * 25.0, 1200 steps 25.5.
 */
export const PRETRAIN_DEFAULTS: PretrainSettings = {
  seed: 0,
  out: 'fixtures/painter-mini',
  runDir: 'build/painter-mini-run',
  vaeSteps: 1600,
  ldmSteps: 5500,
  vaeBatch: 8,
  batch: 16,
  vaeLr: 5e-4,
  lr: 5e-4,
  textSteps: 600,
  textBatch: 64,
  textLr: 1e-3,
  warmupSteps: 100,
  checkpointEvery: 250,
  minSnrGamma: 0,
  objectLossWeight: 0,
  timesteps: 'uniform',
  klWeight: 1e-5,
  emptyCaptionRate: 0.1,
  captionOmit: 0,
  bpeCaptions: 5000,
  vocabSize: 1000,
  scaleSamples: 256,
  sizes: { ...MINI_SIZES, imageSize: 32 },
  hiresSteps: 500,
  vaeHiresSteps: 200,
  decoderSteps: 1200,
  jobs: Math.min(2, os.availableParallelism()),
  resume: false,
};
