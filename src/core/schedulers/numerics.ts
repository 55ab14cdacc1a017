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

const F32_BOX = new Float32Array(1);
const U32_BOX = new Uint32Array(F32_BOX.buffer);

function float32FromBits(bits: number): number {
  U32_BOX[0] = bits;
  return F32_BOX[0]!;
}

/** The float32 next to `x` (a float32) towards +∞ (`up`) or −∞. */
function adjacentF32(x: number, up: boolean): number {
  if (x === 0) return up ? 2 ** -149 : -(2 ** -149);
  F32_BOX[0] = x;
  U32_BOX[0] += (x > 0) === up ? 1 : -1;
  return F32_BOX[0]!;
}

/**
 * A float32 fused multiply-add, round(a·b + c) with one rounding, for float32 a, b, c. The
 * product is exact in double; the double sum s and its error e (TwoSum) decide the one case a
 * plain f32(s) gets wrong: s exactly halfway between two float32s while e ≠ 0.
 */
export function fma32(a: number, b: number, c: number): number {
  const p = a * b;
  const s = p + c;
  const bv = s - p;
  const err = p - (s - bv) + (c - bv);
  const r = f32(s);
  if (err === 0 || r === s) return r;
  const other = adjacentF32(r, s > r);
  if (s - r !== other - s) return r;
  return err > 0 ? Math.max(r, other) : Math.min(r, other);
}

// numpy's float32 log kernel constants (npy_simd_data.h, npy_math.h), as float32 bit patterns.
const LOG_P = [0x00000000, 0x3f800000, 0x4007361c, 0x3fbd70a9, 0x3ec30333, 0x3cd42bcd].map(float32FromBits);
const LOG_Q = [0x3f800000, 0x4027361c, 0x401cfe0d, 0x3f7c8ae4, 0x3e1e5bf3, 0x3bc083df].map(float32FromBits);
const LOGE2_F32 = float32FromBits(0x3f317218);
const SQRT1_2_F32 = float32FromBits(0x3f3504f3);
const FLT_MIN = 2 ** -126;

/**
 * np.log of float32 values as numpy's AVX2/AVX-512 kernel computes it (simd_log_FLOAT in
 * loops_exponent_log.dispatch.c.src; up to 3.8 ulp from the exact log, so 1 ulp off a correctly
 * rounded log for about a fifth of inputs): x = 2^k·m with m ∈ (√½, √2], y = m − 1, then
 * k·ln 2 + P(y)/Q(y), a 5/5 rational minimax fit, each step a float32 FMA. Zero, subnormal,
 * negative and non-finite inputs take the plain log (the kernel's special lanes agree there, bar
 * subnormals, which σ tables never hold).
 */
export function npLogF32(value: number): number {
  const x = f32(value);
  if (!(x >= FLT_MIN) || x === Infinity) return f32(Math.log(x));
  F32_BOX[0] = x;
  const bits = U32_BOX[0]!;
  let exponent = (bits >>> 23) - 126;
  let m = float32FromBits((bits & 0x7fffff) | 0x3f000000);
  if (m <= SQRT1_2_F32) {
    m += m;
    exponent -= 1;
  }
  const y = f32(m - 1);
  let num = fma32(LOG_P[5]!, y, LOG_P[4]!);
  let den = fma32(LOG_Q[5]!, y, LOG_Q[4]!);
  for (let k = 3; k >= 0; k--) {
    num = fma32(num, y, LOG_P[k]!);
    den = fma32(den, y, LOG_Q[k]!);
  }
  return fma32(exponent, LOGE2_F32, f32(num / den));
}
