/** `painter info`: versions, compute backend and threads, and what a model holds. */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { bundledModelPath } from '../default-model.js';
import * as tf from '@tensorflow/tfjs';
import { parseInfotext } from '../../core/infotext.js';
import { PainterError } from '../../errors.js';
import { describeModel, type ModelInfo } from '../../io/model-info.js';
import { readPngText } from '../../io/png-text.js';
import { formatMemoryReport, memoryReport } from '../memory-check.js';
import { backendFromArgs, describeBackend } from '../backend-option.js';
import type { Args } from '../main.js';
import { packageVersion } from '../version.js';

const CONFIG_SUMMARY: Record<string, string[]> = {
  unet: ['block_out_channels', 'layers_per_block', 'cross_attention_dim', 'attention_head_dim', 'use_linear_projection', 'sample_size'],
  vae: ['block_out_channels', 'latent_channels', 'scaling_factor', 'sample_size'],
  text_encoder: ['hidden_size', 'num_hidden_layers', 'num_attention_heads', 'hidden_act', 'vocab_size'],
  scheduler: ['_class_name', 'beta_schedule', 'prediction_type', 'num_train_timesteps'],
  tokenizer: ['model_max_length'],
};

async function threads(backend: string): Promise<string> {
  if (backend === 'wasm') {
    const wasm = (await import('@tensorflow/tfjs-backend-wasm')) as unknown as { getThreadsCount?: () => number };
    return `${wasm.getThreadsCount?.() ?? 1} (wasm; SIMD ${tf.env().getBool('WASM_HAS_SIMD_SUPPORT') ? 'on' : 'off'})`;
  }
  if (backend === 'tensorflow') return `TensorFlow thread pool (${os.cpus().length} cores)`;
  return '1 (pure JavaScript)';
}

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
    const keys = CONFIG_SUMMARY[c.name] ?? [];
    const summary = keys.filter((k) => c.config && k in c.config).map((k) => `${k}=${JSON.stringify(c.config![k])}`);
    if (summary.length > 0) lines.push(`  ${''.padEnd(13)} ${summary.join(' ')}`);
  }
  return lines;
}

/** `painter info FILE.png`: the generation parameters stored in the image. */
function pngInfo(file: string, json: boolean): void {
  let text: Record<string, string>;
  try {
    text = readPngText(fs.readFileSync(file));
  } catch (e) {
    throw new PainterError(`${file}: cannot read PNG metadata (${(e as Error).message})`);
  }
  const params = text['parameters'];
  if (params === undefined) throw new PainterError(`${file}: no generation parameters stored in this PNG (no "parameters" text chunk)`);
  if (json) {
    process.stdout.write(JSON.stringify({ file, parameters: parseInfotext(params), text: params }, null, 2) + '\n');
  } else {
    process.stdout.write(params + '\n');
  }
}

export async function infoCommand(args: Args): Promise<void> {
  const file = args['file'] as string | undefined;
  if (file && /\.png$/i.test(file) && args['model'] === undefined) return pngInfo(file, Boolean(args['json']));
  const backend = await backendFromArgs(args);
  const target = (args['model'] as string | undefined) ?? file;
  const model = target ? describeModel(path.resolve(target)) : undefined;
  const memory = target && model ? memoryReport(path.resolve(target), backend) : undefined;
  const report = {
    painter: packageVersion(),
    node: process.version,
    tfjs: tf.version_core,
    backend: { name: backend.name, package: backend.package, gpu: backend.gpu, reason: backend.reason, failed: backend.failed },
    threads: await threads(backend.name),
    defaultModel: bundledModelPath(),
    model,
    memory,
  };
  if (args['json']) {
    process.stdout.write(JSON.stringify(report, null, 2) + '\n');
    return;
  }
  const lines = [
    `painter   ${report.painter}`,
    `node      ${report.node}`,
    `tfjs      ${report.tfjs}`,
    `backend   ${describeBackend(backend)}`,
    `threads   ${report.threads}`,
    `default   ${report.defaultModel} (the model commands use without --model)`,
  ];
  if (model) lines.push(...modelLines(model));
  if (memory) lines.push(...formatMemoryReport(memory));
  process.stdout.write(lines.join('\n') + '\n');
}
