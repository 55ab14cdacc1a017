/** `painter bench`'s report as text. */
import type { BenchReport } from '../../bench/run-bench.js';

const MiB = (b: number): string => `${(b / 2 ** 20).toFixed(0)} MiB`;
const ms = (v: number): string => (v >= 100 ? v.toFixed(0) : v.toFixed(1));

export function formatBenchReport(r: BenchReport, backendLine: string, model: string): string {
  const lines = [`backend   ${backendLine}`, `threads   ${r.threads}`, `model     ${model}`, `tfjs      ${r.tfjs}`, ''];
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

export function formatBenchComparison(off: BenchReport, on: BenchReport): string {
  const lines = ['', `painter's fast kernels off → on (median ms, wall clock):`];
  for (const x of on.results) {
    const before = off.results.find((r) => r.item === x.item);
    if (!before) continue;
    const speedup = before.timing.median / x.timing.median;
    lines.push(`  ${x.item.padEnd(16)} ${ms(before.timing.median).padStart(8)} → ${ms(x.timing.median).padStart(8)}  ${speedup.toFixed(2)}×`);
  }
  return lines.join('\n') + '\n';
}
