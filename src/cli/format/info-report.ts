/** `painter info`'s report as text. */
import type { InfoReport } from '../../app/info.js';
import { formatMemoryReport } from '../../app/memory-check.js';
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
  const lines = [`model     ${m.path} (${m.layout} layout)`];
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
