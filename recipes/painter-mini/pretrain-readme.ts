/** The README that `pretrain:mini` writes beside painter-mini's weights: its architecture and recipe. */
import { effectiveWarmup } from './pretrain-stages.js';
import type { PretrainResult, PretrainSettings } from './pretrain.js';
import { TEXT_HEAD_NAMES } from './text-pretrain.js';
import { COLOUR_NAMES, FEATURE_KINDS, HELD_OUT_COMBINATIONS, OBJECT_KINDS } from './world.js';

export function recipeReadme(s: PretrainSettings, r: Omit<PretrainResult, 'out'>): string {
  const f = (x: number) => x.toPrecision(4);
  const warmup = (steps: number) => effectiveWarmup(s, steps);
  const w = s.sizes;
  const image = r.configs.vae.sample_size;
  return `# painter-mini

A miniature Stable Diffusion trained from scratch on painter's procedural world (\`src/mini/\`) by
\`npm run pretrain:mini\` (\`src/mini/pretrain.ts\`). Diffusers layout, float16 weights. Held-out
subjects and accessories never appeared in its training data.

| component | architecture | parameters |
|---|---|---|
| vae | AutoencoderKL, block_out_channels [${w.vaeChannels.join(', ')}], latent factor 4, 4 latent channels | ${r.size.vae} |
| text_encoder | CLIPTextModel, ${w.textLayers} layers, hidden ${w.textHidden}, ${w.textHeads} heads, vocabulary ${r.configs.textEncoder.vocab_size} (BPE of ${s.bpeCaptions} world captions) | ${r.size.textEncoder} |
| unet | UNet2DConditionModel, block_out_channels [${w.unetChannels.join(', ')}], ${w.unetLayersPerBlock} layer(s) per block | ${r.size.unet} |
| total | ${image}×${image} images, ${image / 4}×${image / 4}×4 latents | ${r.size.total} (${(r.size.float16Bytes / 2 ** 20).toFixed(1)} MiB as float16) |

## Recipe

- seed ${s.seed}
- stage 0: BPE vocabulary from ${s.bpeCaptions} captions: ${r.configs.textEncoder.vocab_size} tokens (asked for at most ${s.vocabSize}; pairs seen once are not merged)
- stage 1 (vae): ${r.vae.steps} steps × ${s.vaeBatch} images at ${w.imageSize}×${w.imageSize}, AdamW lr ${s.vaeLr} (cosine, warmup ${warmup(r.vae.steps)}), loss MSE + L1 + ${s.klWeight}·KL; loss ${f(r.vae.firstLoss)} → ${f(r.vae.finalLoss)} (mean of the last tenth)
${r.vaeHires ? `- stage 1b (vae at ${image}×${image}): stage 1's weights, ${r.vaeHires.steps} more steps × ${s.vaeBatch} images at twice the size, before any latent is taken (the same loss and optimiser, a new cosine schedule, warmup ${warmup(r.vaeHires.steps)}); loss ${f(r.vaeHires.firstLoss)} → ${f(r.vaeHires.finalLoss)}
` : ''}- scaling_factor ${f(r.scalingFactor)} = 1/std of the latents of ${s.scaleSamples} scenes
${r.text ? `- stage 2 (text encoder): ${r.text.steps} steps × ${s.textBatch} captions, AdamW lr ${s.textLr} (cosine, warmup ${warmup(r.text.steps)}, weight decay 0.01); attention-pooling heads read ${TEXT_HEAD_NAMES.join(', ')} from its states (cross-entropy ${f(r.text.firstLoss)} → ${f(r.text.finalLoss)}${r.text.accuracy ? `; accuracy on fresh captions ${TEXT_HEAD_NAMES.map((h) => `${h} ${Math.round(r.text!.accuracy![h] * 100)}%`).join(', ')}` : ''}); the heads are dropped and the text encoder is frozen from here on, as SD's CLIP
- stage 3 (unet)` : '- stage 2 (text encoder + unet)'}: ${r.ldm.steps} steps × ${s.batch} images, AdamW lr ${s.lr} (cosine, warmup ${warmup(r.ldm.steps)}, weight decay 0.01), ${r.configs.scheduler.prediction_type === 'v_prediction' ? 'v' : 'ε'}-prediction MSE${s.minSnrGamma ? ` with min-SNR-${s.minSnrGamma} weighting` : ''}${s.objectLossWeight ? `, weighted ${1 + s.objectLossWeight}× on the latent pixels around the object` : ''}, ${s.timesteps} timesteps, ${Math.round(s.emptyCaptionRate * 100)}% empty captions${s.captionOmit ? ` and the colour, the pattern and the background each left out of ${Math.round(s.captionOmit * 100)}% (partial captions, as people write them: "a photo of a dog" has a class prior)` : ''}, at ${w.imageSize}×${w.imageSize}; loss ${f(r.ldm.firstLoss)} → ${f(r.ldm.finalLoss)}
${r.hires ? `- stage 4 (unet at ${image}×${image}): stage 3's weights, ${r.hires.steps} more steps × ${s.batch} images at twice the size, as SD trains at 256 px then 512 px (same optimiser settings, a new cosine schedule, warmup ${warmup(r.hires.steps)}); the VAE encodes its images at that size; loss ${f(r.hires.firstLoss)} → ${f(r.hires.finalLoss)}
` : ''}${r.decoder ? `- stage 5 (vae decoder at ${image}×${image}): ${r.vaeHires ? 'stage 1b' : 'stage 1'}'s decoder and post_quant_conv, ${r.decoder.steps} more steps × ${s.vaeBatch} images at the model's size with the encoder frozen, as Stability fine-tuned SD's decoder (sd-vae-ft-mse): the latents, the scaling factor and the UNet trained on them are unchanged (AdamW lr ${s.vaeLr}, cosine, warmup ${warmup(r.decoder.steps)}); loss MSE + L1 ${f(r.decoder.firstLoss)} → ${f(r.decoder.finalLoss)}
` : ''}- scheduler: PNDM, 1000 steps (as SD 1.x), ${r.configs.scheduler.prediction_type}, ${r.configs.scheduler.beta_schedule} β schedule ${r.configs.scheduler.beta_start}–${r.configs.scheduler.beta_end}: on 16×16 latents SD's scaled_linear schedule leaves the mean colour readable at every timestep, and an ε loss gives the high-noise steps, where the caption decides the picture, almost no weight

## What it has seen

Captions such as "a small red striped cat on a blue background": ${OBJECT_KINDS.join(', ')}; colours
${COLOUR_NAMES.join(', ')}; plain, striped or dotted; solid, gradient or striped backgrounds; three
sizes, three positions. Never: the held-out subjects (${HELD_OUT_COMBINATIONS.map((c) => `${c.colour} ${c.pattern} ${c.object}`).join(', ')})
and any accessory (${FEATURE_KINDS.join(', ')}) — what \`painter invert\` and \`painter dreambooth\` can teach it,
and what \`npm run bench:concepts\` measures.

## Use

painter uses it when no \`--model\` is given (or \`--model painter-mini\`):

    npx painter generate "a small red striped cat on a blue background" --count 4
    npx painter invert fixtures/cat-photos --token "<cat>"
    npx painter generate "a photo of <cat> on a green background"

The folder is in the diffusers layout (model_index.json, one float16 safetensors file per component),
as painter writes every model.
`;
}
