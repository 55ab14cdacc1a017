/**
 * How much memory a compute backend can hold: the wasm heap cap, free system memory, free GPU
 * memory (nvidia-smi), or the lower limit the user sets with PAINTER_MEMORY_LIMIT. The backend
 * table (table.ts) says which of these applies to which backend.
 */
import { execFileSync } from 'node:child_process';
import * as os from 'node:os';
import { PainterError } from '../errors.js';

export interface Capacity {
  /** Bytes the backend can hold; undefined when it cannot be found out. */
  bytes?: number;
  /** What limits it, for messages: "the wasm backend's heap", "free system memory". */
  what: string;
}

/**
 * tfjs-backend-wasm 4.22's getHeapMax(): 65535 pages of 64 KiB, the most a wasm32 memory can
 * grow to. Every tensor of the wasm backend lives in this one heap.
 */
export const WASM_HEAP_MAX = 4294901760;

/** Memory the system can still give this process: MemAvailable, within a cgroup limit if any. */
export function availableSystemMemory(): number {
  let free = os.freemem();
  const constrained = (process as unknown as { constrainedMemory?: () => number | undefined }).constrainedMemory?.();
  // Without a limit Node reports 0 or a huge number.
  if (constrained && constrained > 0 && constrained < os.totalmem()) free = Math.min(free, constrained - process.memoryUsage().rss);
  return Math.max(0, free);
}

/**
 * Free memory of the GPU TensorFlow uses, plus what this process already holds there, from
 * `nvidia-smi` CSV output (MiB): `index, memory.free` per GPU and `pid, used_memory` per process.
 */
export function parseNvidiaSmi(gpus: string, apps: string, pid: number, device: number): number | undefined {
  const row = gpus
    .trim()
    .split('\n')
    .map((l) => l.split(',').map((v) => Number(v.trim())))
    .find((r) => r[0] === device);
  if (!row || !Number.isFinite(row[1])) return undefined;
  let own = 0;
  for (const line of apps.trim().split('\n')) {
    const [p, used] = line.split(',').map((v) => Number(v.trim()));
    if (p === pid && Number.isFinite(used)) own += used!;
  }
  return (row[1]! + own) * 2 ** 20;
}

/** Free GPU memory for TensorFlow's first visible device, if nvidia-smi can tell. */
export function freeGpuMemory(): number | undefined {
  const visible = process.env['CUDA_VISIBLE_DEVICES']?.split(',')[0]?.trim();
  const device = visible && /^\d+$/.test(visible) ? Number(visible) : 0;
  const run = (args: string[]) => execFileSync('nvidia-smi', args, { encoding: 'utf8', timeout: 5000, stdio: ['ignore', 'pipe', 'ignore'] });
  try {
    const gpus = run(['--query-gpu=index,memory.free', '--format=csv,noheader,nounits']);
    const apps = run(['--query-compute-apps=pid,used_memory', '--format=csv,noheader,nounits']);
    return parseNvidiaSmi(gpus, apps, process.pid, device);
  } catch {
    return undefined;
  }
}

/** PAINTER_MEMORY_LIMIT ("512MB", "3GiB", bytes): a lower limit the user sets for painter. */
export function memoryLimitOverride(value = process.env['PAINTER_MEMORY_LIMIT']): number | undefined {
  if (!value) return undefined;
  const m = /^\s*(\d+(?:\.\d+)?)\s*(b|kb|kib|mb|mib|gb|gib)?\s*$/i.exec(value);
  if (!m) throw new PainterError(`PAINTER_MEMORY_LIMIT=${value}: give a size such as 3GB or 512MiB`);
  const unit = (m[2] ?? 'b').toLowerCase();
  const scale: Record<string, number> = { b: 1, kb: 1e3, kib: 1024, mb: 1e6, mib: 2 ** 20, gb: 1e9, gib: 2 ** 30 };
  return Math.floor(Number(m[1]) * scale[unit]!);
}

/** The wasm heap: it grows into free system memory up to its 4 GiB cap. */
export function wasmHeapCapacity(): Capacity {
  const system = availableSystemMemory();
  if (system < WASM_HEAP_MAX) return { bytes: system, what: 'free system memory, which the wasm heap grows into' };
  return { bytes: WASM_HEAP_MAX, what: "the wasm backend's 4 GiB heap" };
}

export function systemMemoryCapacity(): Capacity {
  return { bytes: availableSystemMemory(), what: 'free system memory' };
}

export function nvidiaGpuCapacity(): Capacity {
  const gpu = freeGpuMemory();
  return gpu === undefined ? { what: 'GPU memory, which nvidia-smi did not report' } : { bytes: gpu, what: 'free GPU memory' };
}
