/**
 * A full-size Stable Diffusion 1.5 on the webgpu backend (opt-in: `npm run test:sd15`; minutes on
 * lavapipe). SD-1.5's exact UNet, VAE and CLIP ViT-L/14 configs with random weights and CLIP's real
 * 49408-token BPE vocabulary: it generates an image, takes one Textual Inversion step and one LoRA
 * DreamBooth step (with prior preservation) at 64 px, with finite losses and only the intended
 * weights changed; the peak of live tensor bytes and of the GPU buffers held are compared with
 * the memory estimate (±15% each); on wasm the same model is refused before loading.
 *
 * Without a WebGPU adapter the file is skipped with one line saying why.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { checkMemoryBudget } from '../../src/app/memory-check.js';
import { selectBackend } from '../../src/backend/select.js';
import { BACKENDS } from '../../src/backend/table.js';
import { adapterLine, shutdownWebgpu, webgpuAdapter } from '../../src/backend/webgpu.js';
import { TOKEN_EMBEDDING_KEY } from '../../src/core/embeddings.js';
import { estimateMemory, type CommandSettings } from '../../src/core/memory/estimate.js';
import { disposeModel, type StableDiffusion } from '../../src/core/model.js';
import { clipTextParamShapes, parseClipTextConfig } from '../../src/core/models/clip-text.js';
import { parseUNetConfig, unetParamShapes } from '../../src/core/models/unet.js';
import { parseVaeConfig, vaeParamShapes } from '../../src/core/models/vae.js';
import { initParams, type Params } from '../../src/core/params.js';
import { decodeLatents, denoiseAll, encodePrompts } from '../../src/core/pipeline/text-to-image.js';
import { Rng } from '../../src/core/random.js';
import { rowParts } from '../../src/core/row-chunks.js';
import { createScheduler } from '../../src/core/schedulers/index.js';
import { parseSchedulerConfig } from '../../src/core/schedulers/common.js';
import { createClipTokenizer, encode } from '../../src/core/tokenizer/clip-tokenizer.js';
import { AdamW } from '../../src/backend/fused-adamw.js';
import { PainterError } from '../../src/errors.js';
import { describeModelMemory } from '../../src/io/memory-budget.js';
import { createDreamBooth } from '../../src/train/dreambooth.js';
import { createInversion } from '../../src/train/textual-inversion.js';
import { ROOT } from '../helpers.js';
import { SD15_SCHEDULER, SD15_TEXT, SD15_UNET, SD15_VAE, sd15TokenizerFiles, writeSd15Folder } from '../sd15.js';

const SIZE = 64;
const CLIP = path.join(ROOT, '..', 'shared', 'clip');

async function webgpuProblem(): Promise<string | undefined> {
  try {
    await selectBackend('webgpu');
    return undefined;
  } catch (e) {
    return (e as Error).message.split('\n')[0]!;
  }
}
const problem = await webgpuProblem();
if (problem !== undefined) console.warn(`SD-1.5 on webgpu skipped: ${problem}; ../shared/tools/webgpu-cpu.sh installs lavapipe`);

/**
 * Peak bytes of live tensor buffers (each buffer once, however many tensors share it, wherever
 * it is held: tfjs keeps a weight's values on the host until a kernel first uses it), and of the
 * GPU buffers tfjs allocated.
 */
function meter() {
  type Info = { bytes: number; backend: unknown };
  const engine = tf.engine() as unknown as {
    state: { tensorInfo: WeakMap<object, Info> };
    trackTensor: (a: { dataId: object; size: number; dtype: string }, backend: unknown) => void;
    removeDataId: (dataId: object, backend: unknown) => void;
  };
  const buffers = (tf.backend() as unknown as { bufferManager: { numBytesAllocated: number; acquireBuffer: (...a: unknown[]) => unknown } }).bufferManager;
  // Made before any tensor of the test exists: every buffer is seen from its creation.
  let live = 0;
  let peak = 0;
  let allocated = 0;
  const track = engine.trackTensor.bind(engine);
  const remove = engine.removeDataId.bind(engine);
  const acquire = buffers.acquireBuffer.bind(buffers);
  engine.trackTensor = (a, backend) => {
    const fresh = !engine.state.tensorInfo.has(a.dataId);
    track(a, backend);
    if (fresh) live += engine.state.tensorInfo.get(a.dataId)!.bytes;
    peak = Math.max(peak, live);
  };
  engine.removeDataId = (dataId, backend) => {
    const info = engine.state.tensorInfo.get(dataId);
    remove(dataId, backend);
    if (info && !engine.state.tensorInfo.has(dataId)) live -= info.bytes;
  };
  buffers.acquireBuffer = (...a) => {
    const r = acquire(...a);
    allocated = Math.max(allocated, buffers.numBytesAllocated);
    return r;
  };
  return {
    reset() {
      peak = live;
      allocated = buffers.numBytesAllocated;
    },
    get peak() {
      return peak;
    },
    get allocated() {
      return allocated;
    },
  };
}

const GB = (n: number) => `${(n / 1e9).toFixed(2)} GB`;
const measured: string[] = [];

function images(n: number, seed: number) {
  const rng = new Rng(seed);
  return Array.from({ length: n }, (_, i) => ({ file: `img-${seed}-${i}.png`, width: SIZE, height: SIZE, rgb: Buffer.from(Array.from({ length: SIZE * SIZE * 3 }, () => rng.int(256))) }));
}

/** A few values of every weight of a component: enough to see whether any changed. */
async function fingerprint(p: Params): Promise<Map<string, number[]>> {
  const out = new Map<string, number[]>();
  for (const [k, t] of p) {
    const corner = t.slice(Array(t.rank).fill(0), t.shape.map((d) => Math.min(d, 2)));
    out.set(k, Array.from((await corner.data()) as Float32Array));
    corner.dispose();
  }
  return out;
}

function changed(a: Map<string, number[]>, b: Map<string, number[]>): string[] {
  return [...a.keys()].filter((k) => a.get(k)!.join() !== b.get(k)!.join());
}

describe.skipIf(problem !== undefined)(`SD-1.5 on webgpu${problem === undefined ? ` (${adapterLine(webgpuAdapter()!)})` : ''}`, () => {
  let model: StableDiffusion;
  let dir: string;
  let m: ReturnType<typeof meter>;
  const base = { resolution: SIZE, batch: 1, gradAccum: 1, centerCrop: true, flip: false, validation: false };
  /** Training as painter runs it without validation grids: what the step does not use is freed. */
  const method = { resolution: SIZE, batch: 1, centerCrop: true, flip: false, minSnrGamma: 0, noiseOffset: 0, validationPrompt: '', baseModelHash: 'random', releaseUnused: true };

  beforeAll(() => {
    m = meter();
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'painter-sd15-'));
    writeSd15Folder(path.join(dir, 'headers'));
    const unet = parseUNetConfig(SD15_UNET, 'unet');
    const vae = parseVaeConfig(SD15_VAE, 'vae');
    const text = parseClipTextConfig(SD15_TEXT, 'text_encoder');
    model = {
      source: 'sd15-random',
      unet: { config: unet, params: initParams(unetParamShapes(unet), 1) },
      vae: { config: vae, params: initParams(vaeParamShapes(vae), 2) },
      textEncoder: { config: text, params: initParams(clipTextParamShapes(text), 3) },
      tokenizer: createClipTokenizer(sd15TokenizerFiles()),
      scheduler: parseSchedulerConfig(SD15_SCHEDULER, 'scheduler'),
    };
  }, 600_000);

  afterAll(async () => {
    if (model) disposeModel(model);
    fs.rmSync(dir, { recursive: true, force: true });
    console.log(`SD-1.5 on webgpu, ${SIZE} px: ${measured.join('; ')}`);
    await shutdownWebgpu();
  });

  /** Estimated vs measured peak, within ±15%. */
  function expectNearEstimate(what: string, settings: CommandSettings): void {
    const e = estimateMemory(describeModelMemory(path.join(dir, 'headers')), settings, BACKENDS.webgpu);
    const ratio = e.peak / m.peak;
    measured.push(`${what}: estimate ${GB(e.peak)} (${e.peakPhase}), measured ${GB(m.peak)} live tensors, ${GB(m.allocated)} GPU buffers (ratio ${ratio.toFixed(3)})`);
    const line = measured[measured.length - 1];
    expect(ratio, line).toBeGreaterThan(0.85);
    expect(ratio, line).toBeLessThan(1.15);
    // What the device holds (freed buffers of 4 MiB and more are given back: limitBufferPool).
    expect(e.peak / m.allocated, line).toBeGreaterThan(0.85);
    expect(e.peak / m.allocated, line).toBeLessThan(1.15);
  }

  it('tokenizes with CLIP ViT-L/14 ids (OpenAI reference) and holds the 152 MB token table within the adapter binding limit', () => {
    const refs = JSON.parse(fs.readFileSync(path.join(CLIP, 'reference-ids.json'), 'utf8')) as { cases: { text: string; ids: number[] }[] };
    // Reference ids come without <|startoftext|> and <|endoftext|>.
    for (const c of refs.cases.filter((x) => x.ids.length <= 75)) expect(encode(model.tokenizer, c.text).ids.slice(1, 1 + c.ids.length), c.text).toEqual(c.ids);
    const parts = rowParts(model.textEncoder.params, TOKEN_EMBEDDING_KEY);
    const limit = webgpuAdapter()!.limits.maxStorageBufferBindingSize;
    expect(parts.reduce((n, p) => n + p.tensor.shape[0]!, 0)).toBe(49408);
    for (const p of parts) expect(p.tensor.size * 4).toBeLessThanOrEqual(limit);
  });

  it('generates a finite image (2 DDIM steps, guidance 7.5)', async () => {
    m.reset();
    const promptEmbeds = encodePrompts(model, ['a photo of a cat']);
    const negativeEmbeds = encodePrompts(model, ['']);
    const latents = tf.randomNormal([1, SIZE / 8, SIZE / 8, 4], 0, 1, 'float32', 5) as tf.Tensor4D;
    const out = denoiseAll(model, { scheduler: createScheduler('ddim', model.scheduler, 2), promptEmbeds, negativeEmbeds, guidance: 7.5, latents });
    const image = decodeLatents(model, out);
    const pixels = (await image.data()) as Float32Array;
    expect(image.shape).toEqual([1, SIZE, SIZE, 3]);
    expect(pixels.every(Number.isFinite)).toBe(true);
    tf.dispose([promptEmbeds, negativeEmbeds, latents, out, image]);
    expectNearEstimate('generate', { command: 'generate', width: SIZE, height: SIZE, batch: 1, guidance: 7.5 });
  }, 900_000);

  it('takes a Textual Inversion step: finite loss, only the new embedding changes', async () => {
    const before = await fingerprint(model.unet.params);
    m.reset();
    const inv = createInversion(model, images(1, 1), {
      token: '<sd15-cat>',
      initToken: 'cat',
      vectors: 1,
      mode: 'object',
      ...method,
      seed: 1,
      format: 'diffusers',
    });
    expect(model.vae.params.size, 'the VAE is freed once the image is encoded').toBe(0);
    const start = (await inv.rows.data()).slice();
    const opt = new AdamW({ lr: 5e-3, weightDecay: 0 });
    const vars = [...inv.task.vars.values()];
    const { value, grads } = tf.variableGrads(inv.task.prepareBatch(new Rng(1)), vars);
    opt.applyGradients(vars, grads);
    const loss = (await value.data())[0]!;
    tf.dispose([value, ...Object.values(grads)]);
    expect(Number.isFinite(loss)).toBe(true);
    const after = await inv.rows.data();
    expect(Array.from(after).some((v, i) => v !== start[i])).toBe(true);
    expect(changed(before, await fingerprint(model.unet.params))).toEqual([]);
    opt.dispose();
    inv.dispose();
    expectNearEstimate('invert', { command: 'invert', ...base, images: 1, vectors: 1 });
    // The next test encodes images again.
    for (const [k, t] of initParams(vaeParamShapes(model.vae.config), 2)) model.vae.params.set(k, t);
  }, 900_000);

  it('takes a checkpointed LoRA DreamBooth step with prior preservation: finite loss, only the adapters change', async () => {
    const before = await fingerprint(model.unet.params);
    m.reset();
    const db = createDreamBooth(model, images(1, 2), images(1, 3), {
      identifier: 'sks',
      className: 'dog',
      instancePrompt: 'a photo of sks dog',
      classPrompt: 'a photo of dog',
      priorPreservation: true,
      priorWeight: 1,
      mode: 'lora',
      rank: 4,
      alpha: 4,
      trainTextEncoder: false,
      format: 'diffusers',
      ...method,
      gradientCheckpointing: true,
      seed: 2,
    });
    expect([model.vae.params.size, model.textEncoder.params.size], 'VAE and frozen text encoder freed').toEqual([0, 0]);
    const vars = [...db.task.vars.values()];
    const start = await Promise.all(vars.map(async (v) => (await v.data()).slice()));
    const opt = new AdamW({ lr: 1e-3, weightDecay: 0 });
    const { value, grads } = tf.variableGrads(db.task.prepareBatch(new Rng(2)), vars);
    opt.applyGradients(vars, grads);
    const loss = (await value.data())[0]!;
    tf.dispose([value, ...Object.values(grads)]);
    expect(Number.isFinite(loss)).toBe(true);
    const moved = await Promise.all(vars.map(async (v, i) => Array.from(await v.data()).some((x, j) => x !== start[i]![j])));
    // The up matrices start at zero: the first step moves them (the down matrices' gradient is
    // zero until then).
    expect(moved.filter(Boolean).length).toBeGreaterThan(0.45 * vars.length);
    expect(changed(before, await fingerprint(model.unet.params))).toEqual([]);
    opt.dispose();
    db.dispose();
    expectNearEstimate('dreambooth lora', {
      command: 'dreambooth',
      ...base,
      images: 1,
      mode: 'lora',
      rank: 4,
      trainTextEncoder: false,
      priorPreservation: true,
      classImages: 1,
      gradientCheckpointing: true,
    });
  }, 900_000);

  it('is refused on wasm before loading, with the clear message', () => {
    expect(() => checkMemoryBudget({ command: 'invert', options: {} }, path.join(dir, 'headers'), { name: 'wasm', gpu: false })).toThrow(PainterError);
    expect(() => checkMemoryBudget({ command: 'invert', options: {} }, path.join(dir, 'headers'), { name: 'wasm', gpu: false })).toThrow(/^not enough memory: invert needs about/);
  });
});
