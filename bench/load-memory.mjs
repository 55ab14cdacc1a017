#!/usr/bin/env node
// Peak resident memory while loading a synthetic float32 checkpoint of N bytes, side by side
// with N: painter's strict loader must stay below 2N above the process baseline.
// Usage: npm run build && node bench/load-memory.mjs [MB=300] [backend=wasm]
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const dist = path.join(here, '..', 'dist', 'src');
const [, , mode, file, backend = 'wasm'] = process.argv;

if (mode === '--child') {
  const { selectBackend } = await import(path.join(dist, 'backend', 'select.js'));
  const { loadWeights } = await import(path.join(dist, 'io', 'load-weights.js'));
  const { openSafetensors, closeSafetensors } = await import(path.join(dist, 'io', 'safetensors.js'));
  await selectBackend(backend);
  const f = openSafetensors(file);
  const shapes = new Map([...f.entries.values()].map((e) => [e.name, [e.shape[1], e.shape[0]]]));
  closeSafetensors(f);
  global.gc?.();
  const baseline = process.memoryUsage().rss;
  let peak = baseline;
  const timer = setInterval(() => (peak = Math.max(peak, process.memoryUsage().rss)), 5);
  const t0 = performance.now();
  const params = loadWeights([file], shapes, 'synthetic');
  const ms = performance.now() - t0;
  clearInterval(timer);
  // resourceUsage().maxRSS is the kernel's high-water mark (KiB), which also sees what the
  // sampling timer cannot (the load is synchronous).
  peak = Math.max(peak, process.resourceUsage().maxRSS * 1024);
  console.log(JSON.stringify({ baseline, peak, ms, tensors: params.size }));
  process.exit(0);
}

const mb = Number(mode ?? 300);
const backendName = file ?? 'wasm';
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'painter-bench-'));
const ckpt = path.join(tmp, 'synthetic.safetensors');
const { writeSafetensors } = await import(path.join(dist, 'io', 'safetensors.js'));
const per = 1024 * 1024; // one [1024, 1024] float32 Linear weight = 4 MiB
const count = Math.max(1, Math.round((mb * 1024 * 1024) / (per * 4)));
const tensors = {};
for (let i = 0; i < count; i++) tensors[`blocks.${i}.proj.weight`] = { shape: [1024, 1024], data: new Float32Array(per).fill(i / count) };
await writeSafetensors(ckpt, tensors);
const n = fs.statSync(ckpt).size;
const r = spawnSync(process.execPath, ['--expose-gc', fileURLToPath(import.meta.url), '--child', ckpt, backendName], { encoding: 'utf8' });
fs.rmSync(tmp, { recursive: true, force: true });
if (r.status !== 0) {
  console.error(r.stderr);
  process.exit(1);
}
const m = JSON.parse(r.stdout.trim().split('\n').pop());
const MiB = (b) => `${(b / 2 ** 20).toFixed(0)} MiB`;
console.log(`backend ${backendName}: checkpoint N = ${MiB(n)} (${m.tensors} tensors), loaded in ${(m.ms / 1000).toFixed(1)} s`);
console.log(`baseline RSS ${MiB(m.baseline)} | peak RSS ${MiB(m.peak)} | peak − baseline ${MiB(m.peak - m.baseline)} | 2N ${MiB(2 * n)} | ratio ${((m.peak - m.baseline) / n).toFixed(2)}×N`);
process.exit(m.peak - m.baseline < 2 * n ? 0 : 1);
