/**
 * LoRA files as other tools write them, read into painter's adapters (tfjs layout) and written
 * back in either naming:
 *
 * - diffusers (`save_lora_weights`, v0.30.3): `unet.<module>.lora.{down,up}.weight` for the
 *   attention projections to_q/to_k/to_v/to_out.0, `text_encoder.<module>.lora_linear_layer.
 *   {down,up}.weight` for CLIP's q/k/v/out_proj, peft's `lora_A`/`lora_B` for every other module
 *   (convert_state_dict_to_diffusers leaves those alone); no alphas (factor 1). Also read: peft
 *   files (`lora_A`/`lora_B` everywhere), unprefixed UNet files and the older attention-processor
 *   naming (`…attn1.processor.to_q_lora.down.weight`).
 * - kohya / sd-scripts (and A1111): `lora_unet_<module with . → _>` / `lora_te_…` (`lora_te1_`
 *   too, as diffusers accepts) with `.lora_down.weight`, `.lora_up.weight` and a scalar `.alpha`;
 *   in this naming also LyCORIS' LoCon Tucker cores, LoHa, LoKr and DoRA parts (read only; see
 *   lora-lycoris-files.ts).
 *
 * Tensors are stored in PyTorch layout (down [r, in], up [out, r]; conv [r, in, kh, kw] and
 * [out, r, 1, 1]) and converted once here. A `.bin`/`.pt` torch.save state dict is read with the
 * restricted pickle reader.
 */
import * as tf from '@tensorflow/tfjs';
import type { LoraAdapter, LoraComponent, LoraFormat, LoraWeights } from '../core/lora.js';
import { disposeLora, loraRank, loraScale } from '../core/lora.js';
import { PainterError } from '../errors.js';
import { bundledEmbeddingKey, takeBundledEmbeddings } from './lora-bundle.js';
import { tfjsToTorch } from './layout.js';
import { loadSafetensors, writeSafetensors, type TensorToWrite } from './safetensors.js';
import { readTorchFile } from './torch-file.js';
import { TorchTensor } from './torch-pickle.js';
import { looksLikeZip } from './zip.js';
import { readFileHead } from './file-head.js';
import { buildModule, MODULE_PARTS, type Built, type ModuleGroup, type RawTensor } from './lora-lycoris-files.js';

/** A module part, named by its kohya/LyCORIS key suffix (diffusers/peft names map onto these). */
type Part = (typeof MODULE_PARTS)[number];
interface ParsedKey {
  component: LoraComponent;
  module: string;
  part: Part;
  kohya: boolean;
  peft: boolean;
}

// Multi-word names in SD 1.x/2.x module paths: kohya's "." → "_" rewrite is undone by re-joining
// these (longest first); every other "_" was a ".".
const COMPOUND_NAMES = [
  ['time', 'emb', 'proj'],
  ['final', 'layer', 'norm'],
  ['conv', 'norm', 'out'],
  ['add', 'k', 'proj'],
  ['add', 'q', 'proj'],
  ['add', 'v', 'proj'],
  ['down', 'blocks'],
  ['up', 'blocks'],
  ['mid', 'block'],
  ['transformer', 'blocks'],
  ['to', 'q'],
  ['to', 'k'],
  ['to', 'v'],
  ['to', 'out'],
  ['proj', 'in'],
  ['proj', 'out'],
  ['conv', 'shortcut'],
  ['conv', 'in'],
  ['conv', 'out'],
  ['time', 'embedding'],
  ['linear', '1'],
  ['linear', '2'],
  ['text', 'model'],
  ['self', 'attn'],
  ['q', 'proj'],
  ['k', 'proj'],
  ['v', 'proj'],
  ['out', 'proj'],
  ['layer', 'norm1'],
  ['layer', 'norm2'],
  ['token', 'embedding'],
  ['position', 'embedding'],
  ['text', 'projection'],
  ['class', 'embedding'],
  ['add', 'embedding'],
];

/** kohya module name (after the lora_unet_/lora_te_ prefix) → diffusers module path. */
export function kohyaToModule(name: string): string {
  const words = name.split('_');
  const out: string[] = [];
  for (let i = 0; i < words.length; ) {
    const hit = COMPOUND_NAMES.find((c) => c.every((w, j) => words[i + j] === w));
    out.push(hit ? hit.join('_') : words[i]!);
    i += hit ? hit.length : 1;
  }
  return out.join('.');
}

export function moduleToKohya(component: LoraComponent, module: string): string {
  return `${component === 'unet' ? 'lora_unet' : 'lora_te'}_${module.replaceAll('.', '_')}`;
}

const KOHYA_KEY = /^lora_(unet|te|te1|te2)_([^.]+)\.(.+)$/;
// LyCORIS module types painter does not read: OFT/BOFT, IA³, GLoRA, norm and full-weight diffs.
const LYCORIS_UNSUPPORTED = /^(oft_blocks|oft_diag|rescale|on_input|weight|bias|diff|diff_b|w_norm|b_norm|[ab][12]\.weight|lokr_t1)$/;
// In diffusers/peft naming: PEFT's DoRA and LoHa/LoKr, full-weight diffs and biases.
const UNSUPPORTED = /(hada_w|hada_t|lokr_w|lokr_t|lora_mid|dora_scale|lora_magnitude_vector|\.diff$|\.diff_b$|\.bias$)/;
// The older attention-processor naming (diffusers < 0.21): to_q_lora → to_q (UNet) / q_proj (CLIP).
const OLD_PROCESSOR = /^(.*?)(?:\.processor)?\.(to_q|to_k|to_v|to_out)_lora\.(down|up)\.weight$/;

const READS = 'painter reads LoRA/LoCon, LyCORIS LoHa and LoKr, and DoRA (dora_scale) in kohya naming, and diffusers/peft LoRA';

function parseKey(file: string, key: string): ParsedKey {
  const k = KOHYA_KEY.exec(key);
  if (k) {
    if (k[1] === 'te2') throw new PainterError(`${file}: key ${JSON.stringify(key)} targets SDXL's second text encoder; this LoRA is for SDXL, not SD 1.x/2.x`);
    const part = k[3]!;
    if (LYCORIS_UNSUPPORTED.test(part)) {
      throw new PainterError(`${file}: key ${JSON.stringify(key)} belongs to a LyCORIS module type painter does not read (OFT/BOFT, IA³, GLoRA, norm or full-weight diffs, biases); ${READS}`);
    }
    if (!(MODULE_PARTS as readonly string[]).includes(part)) throw new PainterError(`${file}: unknown kohya-style LoRA key ${JSON.stringify(key)}; ${READS}`);
    return { component: k[1] === 'unet' ? 'unet' : 'text_encoder', module: kohyaToModule(k[2]!), part: part as Part, kohya: true, peft: false };
  }
  if (key.startsWith('lora_')) throw new PainterError(`${file}: unknown kohya-style LoRA key ${JSON.stringify(key)}; ${READS}`);
  if (UNSUPPORTED.test(key)) {
    throw new PainterError(`${file}: key ${JSON.stringify(key)} belongs to a LoRA variant painter does not read in this naming (PEFT DoRA or LyCORIS factors, full-weight diffs or biases); ${READS}`);
  }
  let rest = key.replace(/^base_model\.model\./, '');
  let component: LoraComponent;
  if (rest.startsWith('unet.')) [component, rest] = ['unet', rest.slice(5)];
  else if (rest.startsWith('text_encoder.')) [component, rest] = ['text_encoder', rest.slice(13)];
  else if (/^(text_encoder_2|transformer|prior)\./.test(rest)) {
    throw new PainterError(`${file}: key ${JSON.stringify(key)} is for another pipeline (SDXL / transformer models), not SD 1.x/2.x`);
  } else component = rest.startsWith('text_model.') ? 'text_encoder' : 'unet';
  const old = OLD_PROCESSOR.exec(rest);
  if (old) {
    const [, parent, proj, part] = old;
    const name = component === 'unet' ? (proj === 'to_out' ? 'to_out.0' : proj!) : `${proj === 'to_out' ? 'out' : proj!.slice(3)}_proj`;
    return { component, module: `${parent}.${name}`, part: part === 'down' ? 'lora_down.weight' : 'lora_up.weight', kohya: false, peft: false };
  }
  const m = /^(.+?)\.(lora\.down\.weight|lora\.up\.weight|lora_linear_layer\.down\.weight|lora_linear_layer\.up\.weight|lora_A\.weight|lora_B\.weight|alpha)$/.exec(rest);
  if (!m) {
    throw new PainterError(`${file}: unknown LoRA key ${JSON.stringify(key)}; painter reads diffusers/peft (…lora.down.weight, …lora_A.weight) and kohya (lora_unet_….lora_down.weight) files`);
  }
  const suffix = m[2]!;
  const part: Part = suffix === 'alpha' ? 'alpha' : /down|lora_A/.test(suffix) ? 'lora_down.weight' : 'lora_up.weight';
  return { component, module: m[1]!, part, kohya: false, peft: suffix.startsWith('lora_A') || suffix.startsWith('lora_B') };
}

/** Every tensor of a safetensors or torch.save state dict, as float32. */
function readStateDict(file: string): { tensors: Map<string, RawTensor>; metadata: Record<string, string> } {
  let head: Uint8Array;
  try {
    head = readFileHead(file, 4);
  } catch (e) {
    throw new PainterError(`${file}: cannot read LoRA file (${(e as NodeJS.ErrnoException).code ?? String(e)}); check the path`);
  }
  const tensors = new Map<string, RawTensor>();
  if (looksLikeZip(head)) {
    const value = readTorchFile(file);
    if (!(value instanceof Map)) throw new PainterError(`${file}: torch file does not hold a state dict`);
    for (const [k, v] of value) {
      if (typeof k !== 'string') throw new PainterError(`${file}: state dict has a non-string key`);
      if (v instanceof TorchTensor) tensors.set(k, { shape: v.shape, data: v.data });
      else if (typeof v === 'number') tensors.set(k, { shape: [], data: Float32Array.of(v) });
      else throw new PainterError(`${file}: state dict entry ${JSON.stringify(k)} is not a tensor`);
    }
    return { tensors, metadata: {} };
  }
  const st = loadSafetensors(file);
  for (const [k, t] of st.tensors) {
    const data = t.dtype === 'I64' ? Float32Array.from(t.data, (v) => Number(v)) : Float32Array.from(t.data);
    tensors.set(k, { shape: t.shape, data });
  }
  return { tensors, metadata: st.metadata };
}

/**
 * Reads a LoRA file (diffusers, peft or kohya naming; safetensors or torch.save), LyCORIS
 * LoHa/LoKr/LoCon and DoRA modules included (lora-lycoris-files.ts). Unknown keys, incomplete
 * modules and unsupported variants are errors naming the file and key.
 */
export function readLoraFile(file: string): LoraWeights {
  const { tensors, metadata } = readStateDict(file);
  const embeddings = takeBundledEmbeddings(file, tensors);
  if (tensors.size === 0) throw new PainterError(`${file}: holds no tensors; not a LoRA file`);
  const groups = new Map<string, ModuleGroup>();
  let kohya = 0;
  let peft = 0;
  for (const [key, t] of tensors) {
    const p = parseKey(file, key);
    if (p.kohya) kohya++;
    if (p.peft) peft++;
    const id = `${p.component}/${p.module}`;
    const g = groups.get(id) ?? { component: p.component, module: p.module, parts: new Map() };
    const known = g.parts.get(p.part);
    if (known) throw new PainterError(`${file}: keys ${JSON.stringify(known[0])} and ${JSON.stringify(key)} both give the ${p.part} of ${p.component} module ${JSON.stringify(p.module)}`);
    g.parts.set(p.part, [key, t]);
    groups.set(id, g);
  }
  if (kohya > 0 && kohya < tensors.size) throw new PainterError(`${file}: mixes kohya (lora_unet_…) and diffusers key names; painter reads one naming per file`);
  const built: Built = { adapters: [], lycoris: [] };
  try {
    for (const g of groups.values()) {
      const down = g.parts.get('lora_down.weight');
      const up = g.parts.get('lora_up.weight');
      // A plain pair missing its other half: say which.
      if (!down !== !up) throw new PainterError(`${file}: ${JSON.stringify((down ?? up)![0])} has no matching ${down ? 'up' : 'down'} matrix; the LoRA file is incomplete`);
      buildModule(file, g, built);
    }
  } catch (e) {
    const weights: LoraWeights = { file, format: 'kohya', adapters: built.adapters, lycoris: built.lycoris, metadata };
    disposeLora(weights);
    throw e;
  }
  const format: LoraFormat = kohya > 0 ? 'kohya' : peft > 0 ? 'peft' : 'diffusers';
  return { file, format, adapters: built.adapters, ...(built.lycoris.length > 0 ? { lycoris: built.lycoris } : {}), ...(embeddings.length > 0 ? { embeddings } : {}), metadata };
}

export interface WriteLoraOptions {
  format: 'diffusers' | 'kohya';
  /** kohya only: the alpha to store (default: each adapter's own, else its rank); up is rescaled to keep the effect. */
  alpha?: number;
  /** Extra `__metadata__` entries. */
  metadata?: Record<string, string>;
  /** kohya only: `ss_network_args` (e.g. LoCon's conv_dim and conv_alpha). */
  networkArgs?: Record<string, string>;
  /** kohya only: embeddings to bundle (A1111's bundle_emb.NAME.string_to_param.*), e.g. from pivotal tuning. */
  bundle?: { token: string; vectors: tf.Tensor }[];
}

/** diffusers 0.30.3's key suffixes (PEFT_TO_DIFFUSERS): attention projections get legacy names. */
function diffusersSuffixes(module: string): [string, string] {
  if (/(^|\.)(q_proj|k_proj|v_proj|out_proj)$/.test(module)) return ['lora_linear_layer.down.weight', 'lora_linear_layer.up.weight'];
  if (/(^|\.)(to_q|to_k|to_v|to_out\.0)$/.test(module)) return ['lora.down.weight', 'lora.up.weight'];
  return ['lora_A.weight', 'lora_B.weight'];
}

async function torchLayout(t: tf.Tensor, factor = 1): Promise<TensorToWrite> {
  const data = (await t.data()) as Float32Array;
  const scaled = factor === 1 ? data : data.map((v) => v * factor);
  const converted = tfjsToTorch('lora.weight', { shape: t.shape, data: scaled });
  return { dtype: 'F32', shape: converted.shape, data: converted.data };
}

/** Python's str(float): kohya's metadata writes alpha as "2.0". */
function pyFloat(x: number): string {
  return Number.isInteger(x) ? `${x}.0` : String(x);
}

/**
 * Writes adapters as a LoRA `.safetensors` in diffusers or kohya naming (atomic). The stored
 * weights always have the same effect as the adapters: diffusers files have no alpha, so α/r
 * is folded into up; kohya files store alpha per module.
 */
export async function writeLoraFile(file: string, adapters: readonly LoraAdapter[], opts: WriteLoraOptions): Promise<void> {
  if (adapters.length === 0) throw new PainterError(`${file}: no LoRA adapters to write`);
  const decomposed = adapters.find((a) => a.dora);
  if (decomposed) throw new PainterError(`${file}: ${JSON.stringify(decomposed.key)} is a DoRA module, which a plain LoRA file cannot hold`);
  const out = new Map<string, TensorToWrite>();
  const ranks = new Set<number>();
  const alphas = new Set<number>();
  for (const a of adapters) {
    const rank = loraRank(a);
    // kohya's network dim and alpha are those of the Linear / 1×1 modules; LoCon's are in network_args.
    const mainModule = a.down.rank === 2 || (a.down.shape[0] === 1 && a.down.shape[1] === 1);
    if (mainModule) ranks.add(rank);
    if (opts.format === 'diffusers') {
      const [down, up] = diffusersSuffixes(a.module);
      const base = `${a.component}.${a.module}`;
      out.set(`${base}.${down}`, await torchLayout(a.down));
      out.set(`${base}.${up}`, await torchLayout(a.up, loraScale(a)));
    } else {
      const alpha = opts.alpha ?? (a.alpha || rank);
      if (!(alpha > 0)) throw new Error(`writeLoraFile: alpha must be positive (got ${alpha})`);
      if (mainModule) alphas.add(alpha);
      const name = moduleToKohya(a.component, a.module);
      out.set(`${name}.lora_down.weight`, await torchLayout(a.down));
      out.set(`${name}.lora_up.weight`, await torchLayout(a.up, loraScale(a) / (alpha / rank)));
      out.set(`${name}.alpha`, { dtype: 'F32', shape: [], data: Float32Array.of(alpha) });
    }
  }
  for (const e of opts.bundle ?? []) {
    if (opts.format !== 'kohya') throw new Error('writeLoraFile: embeddings are bundled in kohya files only');
    out.set(bundledEmbeddingKey(e.token), { dtype: 'F32', shape: e.vectors.shape, data: (await e.vectors.data()) as Float32Array });
  }
  const metadata: Record<string, string> =
    opts.format === 'diffusers'
      ? { format: 'pt' }
      : {
          ss_network_module: 'networks.lora',
          ...(ranks.size === 1 ? { ss_network_dim: String([...ranks][0]) } : {}),
          ...(alphas.size === 1 ? { ss_network_alpha: pyFloat([...alphas][0]!) } : {}),
          ...(opts.networkArgs ? { ss_network_args: JSON.stringify(opts.networkArgs) } : {}),
        };
  await writeSafetensors(file, out, { ...metadata, ...opts.metadata });
}
