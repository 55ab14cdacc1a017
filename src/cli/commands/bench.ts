/**
 * `painter bench [--model DIR] [--json] [--runs N] [--warmup N] [--only ITEMS] [--profile]
 * [--compare]`: how fast this machine trains and generates with a model on the selected backend
 * (default model: the bundled tiny-sd-a pipeline). --compare runs the suite twice, with painter's
 * fast kernels off and on. Progress goes to stderr, the report to stdout.
 */
import * as path from 'node:path';
import { disposeModel } from '../../core/model.js';
import { BENCH_ITEMS, runBench, type BenchItem, type BenchReport } from '../../bench/run-bench.js';
import { loadModel } from '../../io/load-model.js';
import { PainterError } from '../../errors.js';
import { setFastKernels } from '../../backend/kernels.js';
import { backendFromArgs, describeBackend } from '../backend-option.js';
import { packageRoot } from '../config.js';
import type { Args } from '../main.js';

function positiveInt(args: Args, name: string, min: number): number | undefined {
  const v = args[name];
  if (v === undefined) return undefined;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min) throw new PainterError(`--${name} ${String(v)}: give an integer ≥ ${min}`);
  return v;
}

function parseItems(v: unknown): BenchItem[] | undefined {
  if (v === undefined) return undefined;
  const list = (Array.isArray(v) ? v : [v]).flatMap((s) => String(s).split(','));
  const bad = list.filter((s) => !(BENCH_ITEMS as readonly string[]).includes(s));
  if (bad.length > 0) throw new PainterError(`--only ${bad.join(',')}: unknown item; choose from ${BENCH_ITEMS.join(', ')}`);
  return list as BenchItem[];
}

const MiB = (b: number): string => `${(b / 2 ** 20).toFixed(0)} MiB`;
const ms = (v: number): string => (v >= 100 ? v.toFixed(0) : v.toFixed(1));

function formatReport(r: BenchReport, backendLine: string, model: string): string {
  const lines = [`backend   ${backendLine}`, `model     ${model}`, `tfjs      ${r.tfjs}`, ''];
  lines.push(`${'item'.padEnd(16)} ${'median ms'.padStart(10)} ${'p25–p75'.padStart(16)} ${'min–max'.padStart(16)} ${'cpu ms'.padStart(8)}  runs  what`);
  for (const x of r.results) {
    const t = x.timing;
    lines.push(
      `${x.item.padEnd(16)} ${ms(t.median).padStart(10)} ${`${ms(t.p25)}–${ms(t.p75)}`.padStart(16)} ${`${ms(t.min)}–${ms(t.max)}`.padStart(16)} ${ms(x.cpu.median).padStart(8)}  ${String(t.runs).padStart(4)}  ${x.detail}`,
    );
  }
  lines.push('(median ms: wall clock; cpu ms: median CPU time of this process, steadier on a shared machine)');
  lines.push('');
  const th = r.throughput;
  const gf = (v: number | undefined): string => (v === undefined ? '–' : `${v.toFixed(2)} GFLOP/s`);
  lines.push(`UNet training step: ${(th.trainingStepFlops / 1e9).toFixed(2)} GFLOP (3× forward), achieved ${gf(th.trainingGflops)}`);
  lines.push(`UNet forward:       ${(th.unetForwardFlops / 1e9).toFixed(2)} GFLOP, achieved ${gf(th.forwardGflops)}`);
  lines.push(`large matmul:       ${gf(th.matmulGflops)} (the backend's best case)`);
  const m = r.memory;
  lines.push(`peak RSS ${MiB(m.peakRss)}${m.wasmHeap !== undefined ? `, wasm heap ${MiB(m.wasmHeap)}` : ''}`);
  if (m.liveTensors) {
    const lt = m.liveTensors;
    lines.push(`live tensors over ${lt.steps} training steps: ${lt.before} → ${lt.after} (drift ${lt.drift})`);
  }
  if (r.profile) {
    const total = r.profile.reduce((s, k) => s + k.ms, 0);
    lines.push('', `kernels of one training step (${ms(total)} ms in kernels):`);
    for (const k of r.profile.slice(0, 15)) {
      lines.push(`  ${k.kernel.padEnd(26)} ${ms(k.ms).padStart(8)} ms ${((100 * k.ms) / total).toFixed(1).padStart(5)}%  ${String(k.calls).padStart(5)} calls`);
    }
  }
  return lines.join('\n') + '\n';
}

function formatComparison(off: BenchReport, on: BenchReport): string {
  const lines = ['', `painter's fast kernels off → on (median ms, wall clock):`];
  for (const x of on.results) {
    const before = off.results.find((r) => r.item === x.item);
    if (!before) continue;
    const speedup = before.timing.median / x.timing.median;
    lines.push(`  ${x.item.padEnd(16)} ${ms(before.timing.median).padStart(8)} → ${ms(x.timing.median).padStart(8)}  ${speedup.toFixed(2)}×`);
  }
  return lines.join('\n') + '\n';
}

export async function benchCommand(args: Args): Promise<void> {
  const backend = await backendFromArgs(args);
  const modelDir = path.resolve((args['model'] as string | undefined) ?? path.join(packageRoot(), 'fixtures', 'tiny-sd-a'));
  const json = Boolean(args['json']);
  const runs = positiveInt(args, 'runs', 1);
  const warmup = positiveInt(args, 'warmup', 0);
  const items = parseItems(args['only']);
  const compare = Boolean(args['compare']);
  const model = loadModel(modelDir);
  const run = (label: string): BenchReport =>
    runBench(model, {
      ...(runs !== undefined ? { runs } : {}),
      ...(warmup !== undefined ? { warmup } : {}),
      ...(items ? { items } : {}),
      profile: Boolean(args['profile']),
      onProgress: (what) => process.stderr.write(`bench${label}: ${what}\n`),
    });
  let report: BenchReport;
  let baseline: BenchReport | undefined;
  try {
    if (compare) {
      setFastKernels(false);
      try {
        baseline = run(' (fast kernels off)');
      } finally {
        setFastKernels(true);
      }
    }
    report = run('');
  } finally {
    disposeModel(model);
  }
  const backendInfo = { name: backend.name, package: backend.package, gpu: backend.gpu };
  if (json) {
    const out = baseline ? { ...report, backend: backendInfo, model: modelDir, fastKernelsOff: baseline } : { ...report, backend: backendInfo, model: modelDir };
    process.stdout.write(JSON.stringify(out, null, 2) + '\n');
    return;
  }
  process.stdout.write(formatReport(report, describeBackend(backend), modelDir) + (baseline ? formatComparison(baseline, report) : ''));
}
