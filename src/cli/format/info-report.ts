/** `painter info`'s report as text, and `painter info FILE`'s as text or JSON. */
import type { FileInfo, InfoReport } from '../../app/info.js';
import { formatMemoryReport } from '../../app/memory-check.js';
import { describeBackend } from '../../backend/select.js';
import type { EmbeddingFormat } from '../../io/embeddings.js';
import type { EmbeddingFileInfo, LoraFileInfo } from '../../io/concept-info.js';
import type { LoraFormat } from '../../core/lora.js';
import type { ModelInfo } from '../../io/model-info.js';

const CONFIG_SUMMARY: Record<string, string[]> = {
  unet: ['block_out_channels', 'layers_per_block', 'cross_attention_dim', 'attention_head_dim', 'use_linear_projection', 'sample_size'],
  vae: ['block_out_channels', 'latent_channels', 'scaling_factor', 'sample_size'],
  text_encoder: ['hidden_size', 'num_hidden_layers', 'num_attention_heads', 'hidden_act', 'vocab_size'],
  scheduler: ['_class_name', 'beta_schedule', 'prediction_type', 'num_train_timesteps'],
  tokenizer: ['model_max_length'],
};

function formatCount(n: number): string {
  if (n >= 1e9) return `${(n / 1e9).toFixed(2)}B`;
  if (n >= 1e6) return `${(n / 1e6).toFixed(2)}M`;
  if (n >= 1e3) return `${(n / 1e3).toFixed(1)}k`;
  return String(n);
}

function modelLines(m: ModelInfo): string[] {
  const lines = [`model     ${m.path} (${m.layout} layout${m.family ? `, ${m.family}` : ''})`];
  for (const c of m.components) {
    const params = c.files.length > 0 ? `, ${formatCount(c.parameters)} parameters (${c.dtypes.join('/')})` : '';
    lines.push(`  ${c.name.padEnd(13)} ${c.className}${params}`);
    const summary = (CONFIG_SUMMARY[c.name] ?? []).filter((k) => c.config && k in c.config).map((k) => `${k}=${JSON.stringify(c.config![k])}`);
    if (summary.length > 0) lines.push(`  ${''.padEnd(13)} ${summary.join(' ')}`);
  }
  return lines;
}

export function formatInfoReport(r: InfoReport, backendLine: string): string[] {
  const lines = [
    `painter   ${r.painter}`,
    `node      ${r.node}`,
    `tfjs      ${r.tfjs}`,
    `backend   ${backendLine}`,
    `threads   ${r.threads}`,
    `default   ${r.defaultModel} (the model commands use without --model)`,
  ];
  if (r.model) lines.push(...modelLines(r.model));
  if (r.memory) lines.push(...formatMemoryReport(r.memory));
  return lines;
}

const EMBEDDING_FORMATS: Record<EmbeddingFormat, string> = {
  painter: 'painter (diffusers layout: one tensor named after its token, with painter metadata)',
  diffusers: 'diffusers (learned_embeds: one tensor named after its token)',
  'a1111-pt': 'AUTOMATIC1111 .pt (torch.save, string_to_param)',
  'a1111-safetensors': 'AUTOMATIC1111/kohya .safetensors (emb_params)',
};

const LORA_NAMINGS: Record<LoraFormat, string> = {
  diffusers: 'diffusers (unet.….lora.down.weight, text_encoder.….lora_linear_layer.…)',
  peft: 'peft (….lora_A.weight / ….lora_B.weight)',
  kohya: 'kohya (lora_unet_… / lora_te_… with .alpha per module)',
};

// kohya's ss_* keys worth a line; the rest (tag frequencies, dataset folders…) only go to --json.
const KOHYA_KEYS = [
  'ss_network_module', 'ss_network_dim', 'ss_network_alpha', 'ss_network_args', 'ss_base_model_version', 'ss_v2',
  'ss_sd_model_name', 'ss_sd_model_hash', 'ss_new_sd_model_hash', 'ss_output_name', 'ss_steps', 'ss_epoch',
  'ss_resolution', 'ss_learning_rate', 'ss_clip_skip', 'modelspec.architecture', 'modelspec.title',
];
const VALUE_CHARS = 100;

function row(label: string, value: string): string {
  return `  ${label.padEnd(13)} ${value}`;
}

function metadataRows(metadata: Record<string, string>, shown: (key: string) => boolean): string[] {
  const keys = Object.keys(metadata).sort();
  const lines = keys.filter(shown).map((k, i) => {
    const v = metadata[k]!;
    return row(i === 0 ? 'metadata' : '', `${k} = ${v.length > VALUE_CHARS ? `${v.slice(0, VALUE_CHARS)}…` : v}`);
  });
  const hidden = keys.filter((k) => !shown(k)).length;
  if (hidden > 0) lines.push(row(lines.length === 0 ? 'metadata' : '', `(${hidden} more key${hidden > 1 ? 's' : ''}; --json shows every one)`));
  return lines;
}

function embeddingLines(e: EmbeddingFileInfo): string[] {
  const width = e.base
    ? `${e.width} (${e.base} text encoder)`
    : `${e.width} (not an SD 1.x (768) or SD 2.x (1024) embedding: it fits a text encoder ${e.width} wide)`;
  const lines = [
    `embedding ${e.file}`,
    row('format', EMBEDDING_FORMATS[e.format]),
    row('token', e.tokenFrom === 'file' ? `${e.token} (named in the file)` : `${e.token} (the file name, as AUTOMATIC1111 triggers it)`),
    row('vectors', String(e.vectors)),
    row('width', width),
  ];
  const t = e.training;
  if (t) {
    const parts = [
      t.steps !== undefined ? `${t.steps} steps` : '',
      t.baseModelName ? `on ${t.baseModelName}` : '',
      t.baseModelHash ? `base model hash ${t.baseModelHash}` : '',
      t.initToken ? `from init token "${t.initToken}"` : '',
    ];
    lines.push(row('trained', parts.filter(Boolean).join(', ')));
  }
  return [...lines, ...metadataRows(e.metadata, () => true)];
}

function list(values: number[], none: string): string {
  return values.length > 0 ? values.join(', ') : none;
}

function loraLines(l: LoraFileInfo): string[] {
  const alpha = l.alphas.length > 0 ? `${list(l.alphas, '')} (scale alpha/rank = ${list(l.scales, '')})` : 'none stored (scale 1, as diffusers applies it)';
  const lines = [
    `lora      ${l.file}`,
    row('naming', LORA_NAMINGS[l.naming]),
    row('rank', list(l.ranks, '-')),
    row('alpha', alpha),
  ];
  for (const c of l.components) {
    lines.push(row(c.component, `${c.modules} modules: ${c.targets.join(' ')}`));
  }
  return [...lines, ...metadataRows(l.metadata, (k) => !k.startsWith('ss_') || KOHYA_KEYS.includes(k))];
}

/** `painter info FILE` as text lines. */
export function formatFileInfo(r: FileInfo): string[] {
  switch (r.kind) {
    case 'png':
      return [r.text, '', 'flags' in r.rerun ? `painter generate --from-png ${r.file} makes it again (${r.rerun.flags})` : `painter cannot make it again: ${r.rerun.problem}`];
    case 'embedding':
      return embeddingLines(r);
    case 'lora':
      return loraLines(r);
    case 'model':
      return formatInfoReport(r, describeBackend(r.backendReport));
  }
}

/** `painter info FILE --json`: a PNG's parameters, the embedding/LoRA description, or the model report. */
export function fileInfoJson(r: FileInfo): unknown {
  switch (r.kind) {
    case 'png':
      return { file: r.file, parameters: r.parameters, text: r.text, rerun: r.rerun };
    case 'embedding':
    case 'lora':
      return r;
    case 'model': {
      const { kind: _kind, backendReport: _backend, ...report } = r;
      return report;
    }
  }
}
