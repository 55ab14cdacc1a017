#!/usr/bin/env node
// Before/after table of painter's fast kernels on tiny-sd-a, next to the PyTorch peer figures
// (diffusers 0.30.3, PyTorch 1.13 CPU, one thread, same machine kind). Runs `painter bench
// --compare --json` REPEATS times in fresh processes and reports the median of the per-run
// medians, so one noisy run on a shared machine does not decide the table.
// Usage: npm run build && node bench/speed.mjs [REPEATS=3] [RUNS=10] [backend=wasm]
import { spawnSync } from 'node:child_process';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const cli = path.join(here, '..', 'bin', 'painter');
const [repeats = '3', runs = '10', backend = 'wasm'] = process.argv.slice(2);

// Peer: tiny-sd-a, batch 2, 32×32 latents (UNet step with AdamW; forward at batch 2; 10-step DDIM, guidance).
const PEER_MS = { 'unet-train-step': 277, 'unet-forward': 85.5, generate: 890 };

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};

const samples = {};
let last;
for (let i = 0; i < Number(repeats); i++) {
  process.stderr.write(`run ${i + 1}/${repeats}…\n`);
  const r = spawnSync(process.execPath, [cli, 'bench', '--compare', '--json', '--runs', runs, '--backend', backend], { encoding: 'utf8', maxBuffer: 1 << 26 });
  if (r.status !== 0) {
    process.stderr.write(r.stderr);
    process.exit(1);
  }
  last = JSON.parse(r.stdout);
  for (const [label, report] of [['off', last.fastKernelsOff], ['on', last]]) {
    for (const x of report.results) (samples[`${x.item}/${label}`] ??= []).push(x.timing.median);
  }
}

const fmt = (v) => (v === undefined ? '–' : v >= 100 ? v.toFixed(0) : v.toFixed(1));
console.log(`backend ${last.backend.name}, tfjs ${last.tfjs}, ${repeats} processes × ${runs} runs (median of medians, ms)\n`);
console.log('| item | fast kernels off | fast kernels on | speed-up | PyTorch peer | on ÷ peer |');
console.log('|---|---|---|---|---|---|');
for (const x of last.results) {
  const off = median(samples[`${x.item}/off`]);
  const on = median(samples[`${x.item}/on`]);
  const peer = PEER_MS[x.item];
  console.log(`| ${x.item} | ${fmt(off)} | ${fmt(on)} | ${(off / on).toFixed(2)}× | ${fmt(peer)} | ${peer ? (on / peer).toFixed(2) + '×' : '–'} |`);
}
const t = last.throughput;
console.log(`\ntraining step ${(t.trainingStepFlops / 1e9).toFixed(2)} GFLOP at ${t.trainingGflops.toFixed(2)} GFLOP/s; large matmul ${t.matmulGflops.toFixed(2)} GFLOP/s`);
console.log(`peak RSS ${(last.memory.peakRss / 2 ** 20).toFixed(0)} MiB; live tensors drift over ${last.memory.liveTensors.steps} steps: ${last.memory.liveTensors.drift}`);
