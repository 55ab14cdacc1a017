/**
 * Reads a training run folder — config.json (or, for runs that have none, such as painter-mini's
 * pretrain stages, the config their checkpoints store), train.log, samples/, the results and
 * checkpoints — into the RunReport its page is built from.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { bundledModelPath } from '../../io/paths.js';
import { latestCheckpoint, readCheckpointMeta } from '../../train/engine.js';
import { generateLine, trainingCommandLine, type ResultUse } from './command-line.js';
import type { RunOutput, RunReport, RunSample, RunState } from './run-page.js';
import { parseTrainLog } from './train-log.js';

export const TRAIN_LOG = 'train.log';
export const REPORT_FILE = 'index.html';

/** What the caller knows beyond the folder (a live run: its settings, total and results). */
export interface RunContext {
  /** The run's config when the folder has no config.json (the engine's fullConfig). */
  config?: unknown;
  totalSteps?: number;
  /** Results outside painter's known layouts (absolute paths), e.g. a pretrain stage's component folder. */
  outputs?: readonly string[];
  elapsedMs?: number;
  now?: Date;
}

type Config = Record<string, unknown>;

function readJsonObject(file: string): Config | undefined {
  try {
    const v: unknown = JSON.parse(fs.readFileSync(file, 'utf8'));
    return typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as Config) : undefined;
  } catch {
    return undefined;
  }
}

/** The run's config: config.json (invert, dreambooth), else the one given, else the latest checkpoint's. */
function runConfig(runDir: string, given: unknown): Config | undefined {
  const file = readJsonObject(path.join(runDir, 'config.json'));
  if (file) return file;
  if (typeof given === 'object' && given !== null) return given as Config;
  const latest = latestCheckpoint(runDir);
  if (!latest) return undefined;
  try {
    const c = readCheckpointMeta(latest.dir).config;
    return typeof c === 'object' && c !== null ? (c as Config) : undefined;
  } catch {
    return undefined;
  }
}

/** A setting's value as one line of text. */
function text(v: unknown): string {
  if (typeof v === 'string') return v;
  if (Array.isArray(v)) return v.length > 4 ? `${v.length} items` : v.map(text).join(', ');
  return JSON.stringify(v) ?? String(v);
}

/** Every setting, nested objects (a pretrain stage's settings) flattened to "a.b". */
function flatten(config: Config, prefix = ''): [string, string][] {
  return Object.entries(config).flatMap(([k, v]): [string, string][] =>
    typeof v === 'object' && v !== null && !Array.isArray(v) ? flatten(v as Config, `${prefix}${k}.`) : v === undefined ? [] : [[`${prefix}${k}`, text(v)]],
  );
}

const KEY_SETTINGS: [string, string][] = [
  ['model', 'model'],
  ['modelHash', 'model hash'],
  ['backend', 'backend'],
  ['seed', 'seed'],
  ['steps', 'steps'],
  ['lr', 'learning rate'],
  ['batch', 'batch'],
  ['resolution', 'resolution'],
  ['token', 'token'],
  ['vectors', 'vectors'],
  ['identifier', 'identifier'],
  ['class', 'class'],
  ['mode', 'mode'],
  ['priorPreservation', 'prior preservation'],
  ['emaDecay', 'EMA decay'],
  ['stage', 'stage'],
];

function keySettings(config: Config): [string, string][] {
  // An option that is off (no EMA) says nothing worth a row.
  const rows = KEY_SETTINGS.filter(([k]) => config[k] !== undefined && config[k] !== '' && !(k === 'emaDecay' && config[k] === 0)).map(([k, label]): [string, string] => [label, text(config[k])]);
  const images = config['images'];
  if (Array.isArray(images)) rows.push(['training images', `${images.length}`]);
  const heldOut = config['heldOut'];
  if (Array.isArray(heldOut) && heldOut.length > 0) rows.push(['held-out images', `${heldOut.length}`]);
  return rows;
}

function title(config: Config | undefined, runDir: string): string {
  const c = config ?? {};
  if (c['command'] === 'invert') return `painter invert ${text(c['token'] ?? '')}`.trim();
  if (c['command'] === 'dreambooth') return `painter dreambooth ${text(c['identifier'] ?? '')} ${text(c['class'] ?? '')}`.trim();
  if (typeof c['stage'] === 'string') return `pretrain stage ${c['stage']}`;
  return path.basename(runDir);
}

function samples(runDir: string): RunSample[] {
  const dir = path.join(runDir, 'samples');
  if (!fs.existsSync(dir)) return [];
  return fs
    .readdirSync(dir)
    .map((f) => ({ m: /^step-(\d+)\.png$/.exec(f), f }))
    .filter(({ m }) => m !== null)
    .map(({ m, f }) => ({ step: Number(m![1]), file: `samples/${f}` }))
    .sort((a, b) => a.step - b.step);
}

/** The results painter's training commands write into a run folder, each with the line that uses it. */
function results(runDir: string, config: Config | undefined, extra: readonly string[]): RunOutput[] {
  const c = config ?? {};
  const command = c['command'];
  const model = typeof c['model'] === 'string' && path.resolve(c['model']) !== path.resolve(bundledModelPath()) ? c['model'] : undefined;
  const prompt = typeof c['samplePrompt'] === 'string' ? c['samplePrompt'] : command === 'invert' ? text(c['token'] ?? '') : `${text(c['identifier'] ?? '')} ${text(c['class'] ?? '')}`.trim();
  const out: RunOutput[] = [];
  const entries = fs.existsSync(runDir) ? fs.readdirSync(runDir, { withFileTypes: true }).sort((a, b) => a.name.localeCompare(b.name)) : [];
  const ema = (name: string) => (/-ema(\.[^.]+)?$/.test(name) ? ' (EMA weights)' : '');
  for (const e of entries) {
    const abs = path.join(runDir, e.name);
    let use: ResultUse | undefined;
    let label = '';
    if (e.isFile() && e.name.endsWith('.safetensors') && command === 'invert') [use, label] = [{ kind: 'embedding', file: abs }, 'embedding'];
    else if (e.isFile() && e.name.endsWith('.safetensors') && command === 'dreambooth') [use, label] = [{ kind: 'lora', file: abs }, 'LoRA'];
    else if (e.isDirectory() && command === 'dreambooth' && fs.existsSync(path.join(abs, 'model_index.json'))) [use, label] = [{ kind: 'model', dir: abs }, 'model folder'];
    if (use) out.push({ label: label + ema(e.name), file: e.name, generate: generateLine(prompt, use, model) });
  }
  for (const file of extra) {
    const rel = path.relative(runDir, file);
    // A result that is the run folder itself has nothing more to link.
    if (rel !== '' && !out.some((o) => o.file === rel)) out.push({ label: fs.existsSync(file) && fs.statSync(file).isDirectory() ? 'result folder' : 'result', file: rel });
  }
  const latest = latestCheckpoint(runDir);
  const resume = command === 'invert' || command === 'dreambooth' ? '; continue with --resume latest' : '';
  if (latest) out.push({ label: `latest checkpoint (step ${latest.step}${resume})`, file: path.relative(runDir, latest.dir) });
  return out;
}

/** Reads `runDir` into a report in the given state. */
export function readRunReport(runDir: string, state: RunState, context: RunContext = {}): RunReport {
  const dir = path.resolve(runDir);
  const config = runConfig(dir, context.config);
  const logFile = path.join(dir, TRAIN_LOG);
  const records = fs.existsSync(logFile) ? parseTrainLog(fs.readFileSync(logFile, 'utf8')) : [];
  const steps = config?.['steps'];
  // The bundled model is the default wherever the command runs (the embeddings folder's default depends on the folder: it stays in).
  const defaults = { model: bundledModelPath() };
  return {
    title: title(config, dir),
    runDir: dir,
    state,
    totalSteps: context.totalSteps ?? (typeof steps === 'number' ? steps : undefined),
    records,
    commandLine: config ? trainingCommandLine(config, defaults) : undefined,
    settings: config ? keySettings(config) : [],
    allSettings: config ? flatten(config) : [],
    samplePrompt: typeof config?.['samplePrompt'] === 'string' ? config['samplePrompt'] : undefined,
    samples: samples(dir),
    outputs: results(dir, config, context.outputs ?? []),
    elapsedMs: context.elapsedMs,
    updated: (context.now ?? new Date()).toISOString(),
  };
}

/** Whether a run has reached its last step: its log and its newest checkpoint both at the config's --steps. */
export function runFinished(report: RunReport): boolean {
  const last = report.records.at(-1)?.step;
  return report.totalSteps !== undefined && last === report.totalSteps && latestCheckpoint(report.runDir)?.step === last;
}
