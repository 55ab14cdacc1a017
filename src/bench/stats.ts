/**
 * Timing statistics for benchmarks: warm-up runs first (kernel set-up, weight packing, heap
 * growth), then repeated runs summarised by their median and spread. The median resists the
 * noise of a shared machine; min/max and the quartiles show how noisy the runs were.
 */

export interface TimingStats {
  /** Milliseconds per run. */
  median: number;
  min: number;
  max: number;
  /** Quartiles (linear interpolation), for the interquartile spread. */
  p25: number;
  p75: number;
  runs: number;
}

function quantile(sorted: number[], q: number): number {
  if (sorted.length === 0) return NaN;
  const pos = (sorted.length - 1) * q;
  const lo = Math.floor(pos);
  const hi = Math.ceil(pos);
  return sorted[lo]! + (sorted[hi]! - sorted[lo]!) * (pos - lo);
}

export function summarize(samplesMs: number[]): TimingStats {
  const s = [...samplesMs].sort((a, b) => a - b);
  return {
    median: quantile(s, 0.5),
    min: s[0] ?? NaN,
    max: s[s.length - 1] ?? NaN,
    p25: quantile(s, 0.25),
    p75: quantile(s, 0.75),
    runs: s.length,
  };
}

export interface RunTimes {
  /** Wall-clock milliseconds per run. */
  wall: TimingStats;
  /**
   * CPU milliseconds this process used per run (user + system). On a machine shared with other
   * work the wall time includes waiting for a core; the CPU time does not, so it is the steadier
   * figure there (it counts every thread, so it exceeds wall time on a multithreaded backend).
   */
  cpu: TimingStats;
}

/** Runs `fn` `warmup` times untimed, then `runs` times timed (each run ends when its promise does). */
export async function timeRuns(fn: () => Promise<void>, warmup: number, runs: number): Promise<RunTimes> {
  for (let i = 0; i < warmup; i++) await fn();
  const wall: number[] = [];
  const cpu: number[] = [];
  for (let i = 0; i < runs; i++) {
    const c0 = process.cpuUsage();
    const t0 = performance.now();
    await fn();
    wall.push(performance.now() - t0);
    const c = process.cpuUsage(c0);
    cpu.push((c.user + c.system) / 1000);
  }
  return { wall: summarize(wall), cpu: summarize(cpu) };
}
