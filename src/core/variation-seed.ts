/**
 * AUTOMATIC1111's variation seed ("Variation seed", "Variation seed strength"): the initial
 * noise of the image's seed moved toward the noise of a second seed by spherical interpolation
 * (Shoemake's slerp), so a small strength gives a close variant of the same picture.
 *
 * A1111 (processing.py slerp) normalises along dim 1 of the per-image noise [C, h, w], i.e.
 * each column (c, ·, x) is one vector, and falls back to a blend written as low·t + high·(1 − t)
 * when the vectors are nearly parallel; both are kept as they are, so the same two noises give
 * A1111's result.
 */

/**
 * slerp(t, low, high) of two noises laid out [C, h, w] (NCHW of one image), in double precision
 * per column vector (c, ·, x), as A1111's slerp(val, low, high).
 */
export function slerpNoise(t: number, low: Float32Array, high: Float32Array, shape: readonly [number, number, number]): Float32Array {
  const [c, h, w] = shape;
  if (low.length !== c * h * w || high.length !== low.length) throw new RangeError(`slerpNoise: noises of ${low.length} and ${high.length} values for shape [${shape}]`);
  const at = (ci: number, y: number, x: number) => (ci * h + y) * w + x;
  // Per column: the norms and the dot product of the normalised vectors.
  const columns = c * w;
  const dots = new Float64Array(columns);
  const normLow = new Float64Array(columns);
  const normHigh = new Float64Array(columns);
  for (let ci = 0; ci < c; ci++) {
    for (let x = 0; x < w; x++) {
      let a = 0;
      let b = 0;
      for (let y = 0; y < h; y++) {
        a += low[at(ci, y, x)]! ** 2;
        b += high[at(ci, y, x)]! ** 2;
      }
      normLow[ci * w + x] = Math.sqrt(a);
      normHigh[ci * w + x] = Math.sqrt(b);
    }
  }
  let meanDot = 0;
  for (let ci = 0; ci < c; ci++) {
    for (let x = 0; x < w; x++) {
      const k = ci * w + x;
      let d = 0;
      for (let y = 0; y < h; y++) d += (low[at(ci, y, x)]! / normLow[k]!) * (high[at(ci, y, x)]! / normHigh[k]!);
      dots[k] = d;
      meanDot += d / columns;
    }
  }
  const out = new Float32Array(low.length);
  if (meanDot > 0.9995) {
    for (let i = 0; i < out.length; i++) out[i] = low[i]! * t + high[i]! * (1 - t);
    return out;
  }
  for (let ci = 0; ci < c; ci++) {
    for (let x = 0; x < w; x++) {
      const omega = Math.acos(Math.min(1, Math.max(-1, dots[ci * w + x]!)));
      const so = Math.sin(omega);
      const wl = Math.sin((1 - t) * omega) / so;
      const wh = Math.sin(t * omega) / so;
      for (let y = 0; y < h; y++) out[at(ci, y, x)] = wl * low[at(ci, y, x)]! + wh * high[at(ci, y, x)]!;
    }
  }
  return out;
}
