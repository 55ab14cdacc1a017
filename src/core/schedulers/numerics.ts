/**
 * Bit-level emulation of the few torch/numpy numerics that diffusers' schedulers are built from,
 * so painter's noise schedules, timesteps and sigmas equal diffusers' to the last float32 bit.
 * Every scalar expression in the scheduler files mirrors one torch float32 op: `f32` rounds
 * its double result to float32, exactly as the 0-dim float32 tensor op would.
 */

/** Rounds a double to the nearest float32 (one torch float32 scalar op). */
export const f32 = Math.fround;

/** x ** 0.5 on a float32 scalar (IEEE sqrt is correctly rounded in both precisions). */
export function sqrt32(x: number): number {
  return f32(Math.sqrt(x));
}

/**
 * torch.linspace(start, end, steps, dtype=torch.float32) as ATen's CPU kernel computes it on
 * x86 with AVX2: the first half counts up from `start`, the second half down from `end`; the
 * body runs in 8-lane vectors (two per iteration) whose lane j is base + j·step, with the
 * vector base (and each scalar-tail element) fused as one multiply-add. The stored betas of
 * the reference pipelines match this bit for bit; a plain start + i·step is off by one ulp in
 * about a quarter of the elements.
 */
export function torchLinspaceF32(start: number, end: number, steps: number): Float32Array {
  const out = new Float32Array(steps);
  if (steps === 1) {
    out[0] = f32(start);
    return out;
  }
  const s = f32(start);
  const e = f32(end);
  const step = f32(f32(e - s) / (steps - 1));
  const halfway = Math.floor(steps / 2);
  const fused = (i: number): number => (i < halfway ? f32(s + step * i) : f32(e - step * (steps - i - 1)));
  const lanes = 8;
  const vectorEnd = Math.floor(steps / (2 * lanes)) * 2 * lanes;
  for (let idx = 0; idx < vectorEnd; idx += lanes) {
    const base = fused(idx);
    for (let j = 0; j < lanes; j++) out[idx + j] = f32(base + f32(j * step));
  }
  for (let i = vectorEnd; i < steps; i++) out[i] = fused(i);
  return out;
}

/** torch.cumprod over float32 on CPU: the running product is kept in double, each output rounded. */
export function cumprodF32(a: Float32Array): Float32Array {
  const out = new Float32Array(a.length);
  let acc = 1;
  for (let i = 0; i < a.length; i++) {
    acc *= a[i]!;
    out[i] = acc;
  }
  return out;
}

/** np.round / np.rint: halves go to the even neighbour (499.5 → 500, 832.5 → 832). */
export function roundHalfEven(x: number): number {
  const r = Math.round(x);
  return Math.abs(x % 1) === 0.5 ? 2 * Math.round(x / 2) : r;
}

/** np.linspace(start, stop, num) in float64: i·step + start, with the endpoint set exactly. */
export function npLinspace(start: number, stop: number, num: number): number[] {
  if (num === 1) return [start];
  const step = (stop - start) / (num - 1);
  const out = Array.from({ length: num }, (_, i) => i * step + start);
  out[num - 1] = stop;
  return out;
}

/**
 * np.arange(start, stop, step) for float arguments: length ceil((stop − start)/step), element i
 * = start + i·delta where delta = (start + step) − start (numpy's fill rule).
 */
export function npArange(start: number, stop: number, step: number): number[] {
  const length = Math.max(0, Math.ceil((stop - start) / step));
  const delta = start + step - start;
  return Array.from({ length }, (_, i) => (i === 0 ? start : start + i * delta));
}

/** np.interp(x, xp, fp) in float64 with xp increasing (numpy's formula, slope·(x − xp[j]) + fp[j]). */
export function npInterp(x: number, xp: ArrayLike<number>, fp: ArrayLike<number>): number {
  const n = xp.length;
  if (x < xp[0]!) return fp[0]!;
  if (x >= xp[n - 1]!) return fp[n - 1]!;
  let lo = 0;
  let hi = n - 1;
  while (hi - lo > 1) {
    const mid = (lo + hi) >> 1;
    if (xp[mid]! <= x) lo = mid;
    else hi = mid;
  }
  if (x === xp[lo]) return fp[lo]!;
  const slope = (fp[lo + 1]! - fp[lo]!) / (xp[lo + 1]! - xp[lo]!);
  return slope * (x - xp[lo]!) + fp[lo]!;
}
