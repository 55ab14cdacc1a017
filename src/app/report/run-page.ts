/**
 * A training run's report page (index.html in the run folder): its state, the results and how to
 * use them, the loss chart, the validation samples as a timeline, timings and settings. Pure: the
 * data in, the page out (read-run.ts reads a run folder into a RunReport).
 */
import { formatDuration } from '../duration.js';
import { copyLine, escapeHtml, fileHref, htmlPage, keyValueTable } from './html.js';
import { lossChartLegend, lossChartSvg } from './loss-chart.js';
import { runTimings, type LogRecord } from './train-log.js';

/** Where a run stands, as the page says it. */
export type RunState =
  /** Training now: the page reloads itself every `reloadSeconds`. */
  | { kind: 'live'; reloadSeconds: number }
  | { kind: 'finished' }
  /** Stopped by the user with a checkpoint; `message` says how to go on. */
  | { kind: 'interrupted'; message: string }
  | { kind: 'failed'; message: string }
  /** Read from the folder by `painter report`: not finished, and not known to be running. */
  | { kind: 'stopped' };

export interface RunOutput {
  /** "embedding", "LoRA", "model folder", "checkpoint"… */
  label: string;
  /** Relative to the run folder. */
  file: string;
  /** The `painter generate` line that uses it. */
  generate?: string;
}

export interface RunSample {
  step: number;
  /** Relative to the run folder. */
  file: string;
}

export interface RunReport {
  /** "painter invert <cat>" */
  title: string;
  runDir: string;
  state: RunState;
  /** The steps the run trains to (the config's --steps). */
  totalSteps?: number;
  records: LogRecord[];
  /** The training command line, reconstructed from the run's config. */
  commandLine?: string;
  /** The settings people look for first (model, hash, backend, seed…), values as text. */
  settings: [string, string][];
  /** Every setting the run recorded, values as text. */
  allSettings: [string, string][];
  /** The prompt the validation samples show. */
  samplePrompt?: string;
  samples: RunSample[];
  outputs: RunOutput[];
  /** Wall-clock time since the run (or its resume) started, when known. */
  elapsedMs?: number;
  /** When this page was written (ISO time). */
  updated: string;
}

/** The state's badge (inside the title) and what the page says under the title. */
function stateLine(r: RunReport, step: number): { badge: string; detail: string } {
  const of = r.totalSteps !== undefined ? ` of ${r.totalSteps}` : '';
  const s = r.state;
  const notice = (m: string) => `<div class="notice">${escapeHtml(m)}</div>`;
  switch (s.kind) {
    case 'live':
      return { badge: '<span class="badge live">running</span>', detail: `<p class="sub">step ${step}${of} · this page reloads every ${s.reloadSeconds} s while the run goes on</p>` };
    case 'finished':
      return { badge: '<span class="badge finished">finished</span>', detail: `<p class="sub">${step} steps</p>` };
    case 'interrupted':
      return { badge: '<span class="badge interrupted">interrupted</span>', detail: `<p class="sub">stopped at step ${step}${of}</p>${notice(s.message)}` };
    case 'failed':
      return { badge: '<span class="badge failed">failed</span>', detail: `<p class="sub">stopped at step ${step}${of}</p>${notice(s.message)}` };
    case 'stopped':
      // Without a total (a pretrain stage's config names none) whether the run ended is unknown.
      return {
        badge: `<span class="badge">${r.totalSteps !== undefined ? 'not finished' : `step ${step}`}</span>`,
        detail: `<p class="sub">step ${step}${of} when this page was written; a run still training rewrites it at its next checkpoint</p>`,
      };
  }
}

function outputsSection(r: RunReport): string {
  if (r.outputs.length === 0) return '';
  const items = r.outputs.map((o) => `<p><strong>${escapeHtml(o.label)}</strong>: <a href="${fileHref(o.file)}">${escapeHtml(o.file)}</a></p>${o.generate ? copyLine(o.generate) : ''}`);
  return `<h2>Results</h2>${items.join('\n')}`;
}

function timingsSection(r: RunReport): string {
  const t = runTimings(r.records, r.totalSteps, r.state.kind === 'live');
  const rows: [string, string][] = [['steps logged', `${r.records.filter((x) => x.loss !== undefined).length}${r.totalSteps !== undefined ? ` of ${r.totalSteps}` : ''}`]];
  if (t.stepsPerSecond !== undefined) rows.push(['speed', `${t.stepsPerSecond.toFixed(2)} steps/s (last ${Math.min(50, r.records.length)} steps)`]);
  if (t.etaMs !== undefined) rows.push(['time left', `about ${formatDuration(t.etaMs)}`]);
  rows.push(['training time', `${formatDuration(t.trainingMs)} (the steps' own time, without sampling and checkpoints)`]);
  if (r.elapsedMs !== undefined) rows.push([r.state.kind === 'live' ? 'elapsed' : 'total', formatDuration(r.elapsedMs)]);
  rows.push(['page written', r.updated.replace('T', ' ').replace(/(\.\d+)?Z$/, ' UTC')]);
  return `<h2>Timings</h2>${keyValueTable(rows.map(([k, v]) => [k, escapeHtml(v)]))}`;
}

function samplesSection(r: RunReport): string {
  if (r.samples.length === 0) return `<h2>Validation samples</h2><p class="sub">${r.state.kind === 'live' ? 'none yet (a grid every --validation-every steps)' : 'none: this run wrote no validation grid'}</p>`;
  const prompt = r.samplePrompt !== undefined ? `<div class="prompt">${escapeHtml(r.samplePrompt)}</div>` : '';
  const figures = r.samples.map(
    (s) => `<figure><img src="${fileHref(s.file)}" alt="validation samples at step ${s.step}" loading="lazy"><figcaption><div class="step">step ${s.step}</div>${prompt}</figcaption></figure>`,
  );
  return `<h2>Validation samples</h2><p class="sub">the same prompt and seeds at each step, oldest first</p><div class="timeline">${figures.join('\n')}</div>`;
}

function settingsSection(r: RunReport): string {
  const command = r.commandLine ? `<p class="sub">the command line of this run (options at their defaults left out)</p>${copyLine(r.commandLine)}` : '';
  const all = r.allSettings.length > 0 ? `<details><summary>every recorded setting (${r.allSettings.length})</summary>${keyValueTable(r.allSettings.map(([k, v]) => [k, escapeHtml(v)]))}</details>` : '';
  return `<h2>Settings</h2>${command}${keyValueTable(r.settings.map(([k, v]) => [k, escapeHtml(v)]))}${all}`;
}

/** The report page of a run. */
export function runReportHtml(r: RunReport): string {
  const step = r.records.at(-1)?.step ?? 0;
  const state = stateLine(r, step);
  const body = [
    `<header><h1>${escapeHtml(r.title)}${state.badge}</h1>${state.detail}</header>`,
    `<p class="sub">${escapeHtml(r.runDir)}</p>`,
    outputsSection(r),
    `<h2>Loss</h2><div class="chart">${lossChartSvg(r.records)}</div>${lossChartLegend(r.records)}`,
    samplesSection(r),
    timingsSection(r),
    settingsSection(r),
    `<footer>written by painter; <code>painter report ${escapeHtml(r.runDir)}</code> writes it again from the run's files</footer>`,
  ];
  return htmlPage({ title: `${r.title} — ${r.state.kind === 'live' ? `step ${step}` : r.state.kind}`, reloadSeconds: r.state.kind === 'live' ? r.state.reloadSeconds : undefined }, body.join('\n'));
}
