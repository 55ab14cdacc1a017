/**
 * Single files without --config: the family (SD 1.x / 2.x 512 / 2.x 768-v / inpainting) from the
 * keys and shapes as diffusers' from_single_file tells it, the layer sizes from the tensors, the
 * rest from the configs painter ships; single files painter writes carry their own configs and
 * generate the same image as the folder they came from; what cannot be told is one error that
 * names the file and suggests --config.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { disposeModel, type StableDiffusion } from '../src/core/model.js';
import { clipTextParamShapes } from '../src/core/models/clip-text.js';
import type { ParamShapes } from '../src/core/params.js';
import { parseUNetConfig, unetParamShapes } from '../src/core/models/unet.js';
import { parseVaeConfig, vaeParamShapes } from '../src/core/models/vae.js';
import { bundledConfigJson, bundledConfigsDir, type SdFamily } from '../src/io/bundled-configs.js';
import { openWeightSource } from '../src/io/open-weights.js';
import { torchShape } from '../src/io/layout.js';
import { loadModel } from '../src/io/load-model.js';
import { describeModel } from '../src/io/model-info.js';
import { readConfigs, type ModelConfigs } from '../src/io/pipeline-configs.js';
import { writeSingleFile, singleFileTensors, type ComponentSources } from '../src/io/single-file.js';
import { inferConfigJson, inferFamily, type ShapeMap } from '../src/io/single-file-infer.js';
import { singleFileMetadata, singleFileSetup } from '../src/io/single-file-setup.js';
import { weightView, type ViewEntry } from '../src/io/weight-source.js';
import { FIXTURES, runCli, TINY_SD_A, useBackend } from './helpers.js';
import { disposeGeneration, generate, loadInteropReference } from './interop-helpers.js';

const SINGLE = path.join(FIXTURES, 'tiny-sd-a-single-file', 'tiny-sd-a.safetensors');
const INPAINT = path.join(FIXTURES, 'tiny-sd-a-inpaint');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'painter-infer-'));
const at = (name: string) => path.join(tmp, name);
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

/** The tensor shapes of a single file for `configs`, without any data (LDM keys, PyTorch layout). */
function singleFileShapes(configs: ModelConfigs, arch: 'sd1' | 'sd2', extra: Record<string, number[]> = {}): ShapeMap {
  const view = (shapes: ParamShapes) =>
    weightView('shapes', new Map([...shapes].map(([k, s]): [string, ViewEntry] => [k, { dtype: 'F16', shape: torchShape(k, s), fileKey: k, read: () => { throw new Error('no data'); } }])));
  const parts: ComponentSources = { unet: view(unetParamShapes(configs.unet)), vae: view(vaeParamShapes(configs.vae)), text_encoder: view(clipTextParamShapes(configs.textEncoder)) };
  const out = new Map([...singleFileTensors(parts, configs, arch, () => 'F16')].map(([k, t]) => [k, { shape: t.shape }]));
  for (const [k, shape] of Object.entries(extra)) out.set(k, { shape });
  return out;
}

const bundled = (family: SdFamily) => readConfigs(path.join(bundledConfigsDir(), family));

/** OpenCLIP ViT-H's last layer and projection, which original SD 2.x files carry beside the 23 layers SD 2 uses. */
function openClipTower(width = 1024): Record<string, number[]> {
  const p = 'cond_stage_model.model.';
  const last = `${p}transformer.resblocks.23.`;
  return {
    [`${p}text_projection`]: [width, width],
    [`${last}attn.in_proj_weight`]: [3 * width, width],
    [`${last}attn.in_proj_bias`]: [3 * width],
    [`${last}mlp.c_fc.weight`]: [4 * width, width],
  };
}

describe('the family, as diffusers tells it', () => {
  it('full-size SD 1.x, 1.x inpainting, 2.x 512, 2.x 768-v and 2.x inpainting checkpoints', () => {
    expect(inferFamily(singleFileShapes(bundled('sd1'), 'sd1'))).toBe('sd1');
    expect(inferFamily(singleFileShapes(bundled('sd1-inpaint'), 'sd1'))).toBe('sd1-inpaint');
    const sd2 = singleFileShapes(bundled('sd2-v'), 'sd2', openClipTower());
    // diffusers: v-prediction unless the checkpoint was saved at SD 2.0-base's step 875000.
    expect(inferFamily(sd2)).toBe('sd2-v');
    expect(inferFamily(sd2, 470000)).toBe('sd2-v');
    expect(inferFamily(sd2, 875000)).toBe('sd2');
    expect(inferFamily(sd2, undefined, 'epsilon')).toBe('sd2');
    expect(inferFamily(sd2, 875000, 'v_prediction')).toBe('sd2-v');
    expect(inferFamily(singleFileShapes(bundled('sd2-inpaint'), 'sd2'))).toBe('sd2-inpaint');
  });

  it.each(['sd1', 'sd1-inpaint', 'sd2', 'sd2-v', 'sd2-inpaint'] as const)('%s at full size: every inferred config equals the shipped one', (family) => {
    const want = bundled(family);
    const sd2 = family.startsWith('sd2');
    const shapes = singleFileShapes(want, sd2 ? 'sd2' : 'sd1', sd2 ? openClipTower() : {});
    const base = { unet: {}, vae: {}, textEncoder: {} };
    const got = inferConfigJson(shapes, family, base);
    expect(got.problems).toEqual([]);
    const sizes = (c: Record<string, unknown>, keys: string[]) => Object.fromEntries(keys.map((k) => [k, c[k]]));
    const unetKeys = ['in_channels', 'out_channels', 'block_out_channels', 'layers_per_block', 'down_block_types', 'up_block_types', 'cross_attention_dim', 'use_linear_projection', 'transformer_layers_per_block', 'mid_block_type'];
    expect(sizes(got.unet, unetKeys)).toEqual(sizes(want.unet as never, unetKeys));
    if (sd2) expect(got.unet['attention_head_dim']).toEqual([5, 10, 20, 20]);
    const vaeKeys = ['in_channels', 'out_channels', 'latent_channels', 'block_out_channels', 'layers_per_block'];
    expect(sizes(got.vae, vaeKeys)).toEqual(sizes(want.vae as never, vaeKeys));
    const textKeys = ['vocab_size', 'hidden_size', 'intermediate_size', 'num_hidden_layers', 'num_attention_heads', 'max_position_embeddings'];
    expect(sizes(got.textEncoder, textKeys)).toEqual(sizes(want.textEncoder as never, textKeys));
  });

  it('an SD 2.x file converted from diffusers (23 OpenCLIP layers, no projection) keeps all 23', () => {
    const got = inferConfigJson(singleFileShapes(bundled('sd2-v'), 'sd2'), 'sd2-v', { unet: {}, vae: {}, textEncoder: {} });
    expect(got.textEncoder['num_hidden_layers']).toBe(23);
  });
});

describe('the tiny reference single file (no configs inside)', () => {
  it('is SD 1.x; the UNet and VAE sizes come from its tensors, equal to the folder\'s configs', () => {
    const setup = () => singleFileSetup(SINGLE);
    expect(setup).toThrow(/tiny-sd-a\.safetensors: looks like SD 1\.x, but painter cannot tell the text encoder's attention heads .*32 wide.*; nor its tokenizer \(the text encoder has 1000 tokens, not CLIP's 49408\) from the checkpoint; pass --config DIR/);
    const src = openWeightSource(SINGLE);
    try {
      expect(inferFamily(src.entries, src.globalStep)).toBe('sd1');
      const got = inferConfigJson(src.entries, 'sd1', bundledConfigJson('sd1'));
      const folder = readConfigs(TINY_SD_A);
      // Only the sample sizes (the default picture size) cannot be seen in tensors.
      expect({ ...parseUNetConfig(got.unet, 'unet'), sample_size: 32 }).toEqual(folder.unet);
      expect({ ...parseVaeConfig(got.vae, 'vae'), sample_size: 64 }).toEqual(folder.vae);
      const text = got.textEncoder;
      expect([text['vocab_size'], text['hidden_size'], text['intermediate_size'], text['num_hidden_layers']]).toEqual([1000, 32, 37, 5]);
    } finally {
      src.close();
    }
  });
});

describe('single files painter writes stand alone', () => {
  let folder: StableDiffusion;
  beforeAll(async () => {
    await useBackend();
    folder = loadModel(TINY_SD_A);
  });
  afterAll(() => disposeModel(folder));

  async function write(file: string, arch: 'sd1' | 'sd2', model = folder): Promise<void> {
    const configs = { unet: model.unet.config, vae: model.vae.config, textEncoder: model.textEncoder.config };
    const params = { unet: model.unet.params, vae: model.vae.params, textEncoder: model.textEncoder.params };
    await writeSingleFile(file, params, configs, arch, singleFileMetadata({ ...configs, scheduler: model.scheduler }, model.tokenizer));
  }

  it.each(['sd1', 'sd2'] as const)('%s layout: loads without --config and generates the image of the folder, bit for bit', async (arch) => {
    const file = at(`tiny-${arch}.safetensors`);
    await write(file, arch);
    const setup = singleFileSetup(file);
    expect(setup.from).toBe('file');
    expect(setup.family).toBe(arch === 'sd1' ? 'sd1' : 'sd2-v');
    expect(describeModel(file).family).toBe(arch === 'sd1' ? 'SD 1.x' : 'SD 2.x 768 (v-prediction)');
    expect(setup.configs).toEqual(readConfigs(TINY_SD_A));
    const reference = loadInteropReference();
    const single = loadModel(file);
    try {
      const [a, b] = [folder, single].map((m) => generate(m, 'a photo of a cat', reference));
      const diff = tf.tidy(() => tf.max(tf.abs(tf.sub(a!.image!, b!.image!))).dataSync()[0]!);
      expect(diff).toBe(0);
      disposeGeneration(a!);
      disposeGeneration(b!);
    } finally {
      disposeModel(single);
      tf.dispose([...reference.values()]);
    }
  });

  it('an inpainting pipeline (9-channel conv_in) is told as SD 1.x inpainting', async () => {
    const model = loadModel(INPAINT);
    try {
      const file = at('tiny-inpaint.safetensors');
      await write(file, 'sd1', model);
      const setup = singleFileSetup(file);
      expect(setup.family).toBe('sd1-inpaint');
      expect(setup.configs.unet.in_channels).toBe(9);
    } finally {
      disposeModel(model);
    }
  });

  it('--prediction-type overrides what the scheduler config says, for folders and files', async () => {
    const m = loadModel(TINY_SD_A, { predictionType: 'v_prediction', parts: [] });
    expect(m.scheduler.prediction_type).toBe('v_prediction');
    expect(m.scheduler._use_default_values).not.toContain('prediction_type');
    const file = at('tiny-sd1.safetensors');
    if (!fs.existsSync(file)) await write(file, 'sd1');
    const s = loadModel(file, { predictionType: 'v_prediction' });
    expect(s.scheduler.prediction_type).toBe('v_prediction');
    disposeModel(s);
  });

  it('on the command line: generate --model x.safetensors without --config; the reference file asks for --config', async () => {
    const file = at('tiny-cli.safetensors');
    await write(file, 'sd1');
    const ok = await runCli(['generate', 'a cat', '--model', file, '--steps', '1', '--width', '32', '--height', '32', '--out', at('cli-out'), '--json']);
    expect(ok.code, ok.stderr).toBe(0);
    expect(fs.readdirSync(at('cli-out')).some((f) => f.endsWith('.png'))).toBe(true);
    const refused = await runCli(['generate', 'a cat', '--model', SINGLE, '--steps', '1', '--out', at('cli-refused')]);
    expect(refused.code).toBe(1);
    expect(refused.stderr.trim().split('\n')).toHaveLength(1);
    expect(refused.stderr).toMatch(/tiny-sd-a\.safetensors: .*pass --config DIR/);
  });
});
