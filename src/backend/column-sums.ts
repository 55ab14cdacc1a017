/**
 * Column sums of row-major float32 data (per-channel statistics of NHWC tensors, bias gradients),
 * accumulated in float64.
 */

/**
 * Per-column Σa and Σa·b over the rows [start, end) of row-major data with `c` columns
 * (channel-last tensors: per channel; b = a gives Σa²).
 * Four channels at a time, down the rows, in local accumulators: ~2.5× faster in V8 than
 * updating per-channel arrays row by row.
 */
export function columnMoments(a: Float32Array, b: Float32Array, start: number, end: number, c: number, sumA: Float64Array, sumAB: Float64Array): void {
  let ch = 0;
  for (; ch + 4 <= c; ch += 4) {
    let s0 = 0, s1 = 0, s2 = 0, s3 = 0, p0 = 0, p1 = 0, p2 = 0, p3 = 0; // prettier-ignore
    for (let off = start + ch; off < end; off += c) {
      const a0 = a[off]!, a1 = a[off + 1]!, a2 = a[off + 2]!, a3 = a[off + 3]!; // prettier-ignore
      s0 += a0;
      s1 += a1;
      s2 += a2;
      s3 += a3;
      p0 += a0 * b[off]!;
      p1 += a1 * b[off + 1]!;
      p2 += a2 * b[off + 2]!;
      p3 += a3 * b[off + 3]!;
    }
    sumA[ch] = s0;
    sumA[ch + 1] = s1;
    sumA[ch + 2] = s2;
    sumA[ch + 3] = s3;
    sumAB[ch] = p0;
    sumAB[ch + 1] = p1;
    sumAB[ch + 2] = p2;
    sumAB[ch + 3] = p3;
  }
  for (; ch < c; ch++) {
    let s = 0;
    let p = 0;
    for (let off = start + ch; off < end; off += c) {
      s += a[off]!;
      p += a[off]! * b[off]!;
    }
    sumA[ch] = s;
    sumAB[ch] = p;
  }
}

/** Per-column Σa over the rows [start, end) of row-major data with `c` columns. */
export function columnSums(a: Float32Array, start: number, end: number, c: number, sum: Float64Array): void {
  let ch = 0;
  for (; ch + 4 <= c; ch += 4) {
    let s0 = 0, s1 = 0, s2 = 0, s3 = 0; // prettier-ignore
    for (let off = start + ch; off < end; off += c) {
      s0 += a[off]!;
      s1 += a[off + 1]!;
      s2 += a[off + 2]!;
      s3 += a[off + 3]!;
    }
    sum[ch] = s0;
    sum[ch + 1] = s1;
    sum[ch + 2] = s2;
    sum[ch + 3] = s3;
  }
  for (; ch < c; ch++) {
    let s = 0;
    for (let off = start + ch; off < end; off += c) s += a[off]!;
    sum[ch] = s;
  }
}
