/**
 * The run's loss curve as a small standalone SVG: raw losses, their moving average and, when the
 * run has held-out images, the validation loss at its steps.
 */

/** A validation loss and the step it was measured after. */
export interface ValidationPoint {
  step: number;
  loss: number;
}

/** The window of the moving average a loss curve draws over `n` steps: a twentieth of the run. */
export function smoothingWindow(n: number): number {
  return Math.max(1, Math.round(n / 20));
}

/** The mean of each value and the `window − 1` before it (fewer at the start). */
export function movingAverage(values: number[], window: number): number[] {
  const out: number[] = [];
  let sum = 0;
  for (let i = 0; i < values.length; i++) {
    sum += values[i]!;
    if (i >= window) sum -= values[i - window]!;
    out.push(sum / Math.min(i + 1, window));
  }
  return out;
}

export function lossCurveSvg(losses: number[], valLosses: readonly ValidationPoint[] = [], width = 640, height = 320): string {
  const pad = { left: 56, right: 16, top: 24, bottom: 36 };
  const w = width - pad.left - pad.right;
  const h = height - pad.top - pad.bottom;
  const finite = [...losses, ...valLosses.map((p) => p.loss)].filter(Number.isFinite);
  const lo = finite.length ? Math.min(...finite) : 0;
  const hi = finite.length ? Math.max(...finite) : 1;
  const span = hi - lo || 1;
  const x = (i: number) => pad.left + (losses.length <= 1 ? 0 : (i / (losses.length - 1)) * w);
  const y = (v: number) => pad.top + h - ((v - lo) / span) * h;
  const line = (vals: number[]) => vals.map((v, i) => `${x(i).toFixed(1)},${y(v).toFixed(1)}`).join(' ');
  const smooth = movingAverage(losses, smoothingWindow(losses.length));
  const ticks = [lo, lo + span / 2, hi];
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif" font-size="11">`,
    `<rect width="100%" height="100%" fill="white"/>`,
    `<text x="${pad.left}" y="16" font-size="13">training loss (${losses.length} steps)</text>`,
    `<line x1="${pad.left}" y1="${pad.top + h}" x2="${pad.left + w}" y2="${pad.top + h}" stroke="#888"/>`,
    `<line x1="${pad.left}" y1="${pad.top}" x2="${pad.left}" y2="${pad.top + h}" stroke="#888"/>`,
    ...ticks.map((v) => `<text x="${pad.left - 6}" y="${y(v) + 4}" text-anchor="end">${v.toPrecision(3)}</text>`),
    `<text x="${pad.left + w}" y="${height - 10}" text-anchor="end">step ${losses.length}</text>`,
    `<polyline fill="none" stroke="#9ab" stroke-width="1" points="${line(losses)}"/>`,
    `<polyline fill="none" stroke="#c33" stroke-width="2" points="${line(smooth)}"/>`,
    ...(valLosses.length > 0
      ? [
          `<polyline fill="none" stroke="#27a" stroke-width="2" points="${valLosses.map((p) => `${x(p.step - 1).toFixed(1)},${y(p.loss).toFixed(1)}`).join(' ')}"/>`,
          ...valLosses.map((p) => `<circle cx="${x(p.step - 1).toFixed(1)}" cy="${y(p.loss).toFixed(1)}" r="3" fill="#27a"/>`),
          `<text x="${pad.left + w}" y="16" text-anchor="end" fill="#27a">validation loss (held-out images, fixed t and noise)</text>`,
        ]
      : []),
    `</svg>`,
  ].join('\n');
}
