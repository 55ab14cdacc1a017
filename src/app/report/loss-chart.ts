/**
 * The loss chart of a run report, as inline SVG: every logged step's loss (one polyline point per
 * step), its moving average, and the validation loss where the log has it. The raw Textual
 * Inversion loss is mostly the noise of each step's timestep draw; the average and the validation
 * loss are the curves that show learning.
 */
import { movingAverage, smoothingWindow } from '../../train/loss-curve.js';
import { escapeHtml } from './html.js';
import type { LogRecord } from './train-log.js';

export interface ChartSize {
  width: number;
  height: number;
}

/** About `count` round tick values within [lo, hi] (steps of 1, 2 or 5 × 10ⁿ). */
export function niceTicks(lo: number, hi: number, count: number): number[] {
  if (!(hi > lo)) return [lo];
  const raw = (hi - lo) / Math.max(1, count);
  const mag = 10 ** Math.floor(Math.log10(raw));
  // The round step whose tick count comes nearest the one asked for.
  const candidates = [1, 2, 5, 10].map((m) => m * mag);
  const step = candidates.reduce((best, s) => (Math.abs((hi - lo) / s - count) < Math.abs((hi - lo) / best - count) ? s : best));
  const out: number[] = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(Number(v.toPrecision(12)));
  return out;
}

const fmt = (v: number) => v.toFixed(1);
// Not Math.min(...values): a long run logs more steps than a call takes arguments.
const min = (values: readonly number[]) => values.reduce((a, b) => (b < a ? b : a), Infinity);
const max = (values: readonly number[]) => values.reduce((a, b) => (b > a ? b : a), -Infinity);
const points = (pts: readonly (readonly [number, number])[]) => pts.map(([x, y]) => `${fmt(x)},${fmt(y)}`).join(' ');

/** The loss chart of `records`; a chart with a note when no step has a loss yet. */
export function lossChartSvg(records: readonly LogRecord[], size: ChartSize = { width: 900, height: 340 }): string {
  const { width, height } = size;
  const pad = { left: 62, right: 18, top: 16, bottom: 38 };
  const w = width - pad.left - pad.right;
  const h = height - pad.top - pad.bottom;
  const open = `<svg xmlns="http://www.w3.org/2000/svg" class="loss-chart" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="system-ui, sans-serif" font-size="11" role="img" aria-label="training loss">`;
  const losses = records.filter((r) => r.loss !== undefined) as (LogRecord & { loss: number })[];
  const vals = records.filter((r) => r.val_loss !== undefined) as (LogRecord & { val_loss: number })[];
  if (losses.length === 0 && vals.length === 0) {
    return [open, `<rect width="100%" height="100%" fill="#fff"/>`, `<text x="${width / 2}" y="${height / 2}" text-anchor="middle" fill="#888">no step logged yet</text>`, '</svg>'].join('\n');
  }
  const steps = [...losses, ...vals].map((r) => r.step);
  const x0 = min(steps);
  const x1 = max(steps);
  const ys = [...losses.map((r) => r.loss), ...vals.map((r) => r.val_loss)];
  const yTicks = niceTicks(min(ys), max(ys), 5);
  const lo = Math.min(yTicks[0]!, min(ys));
  const hi = Math.max(yTicks.at(-1)!, max(ys));
  const x = (step: number) => pad.left + (x1 === x0 ? w / 2 : ((step - x0) / (x1 - x0)) * w);
  const y = (v: number) => pad.top + h - (hi === lo ? 0.5 : (v - lo) / (hi - lo)) * h;
  const window = smoothingWindow(losses.length);
  const average = movingAverage(
    losses.map((r) => r.loss),
    window,
  );
  const xTicks = niceTicks(x0, x1, 6).filter((s) => Number.isInteger(s));
  const parts = [
    open,
    `<rect width="100%" height="100%" fill="#fff"/>`,
    ...yTicks.map((v) => `<line x1="${pad.left}" x2="${pad.left + w}" y1="${fmt(y(v))}" y2="${fmt(y(v))}" stroke="#eef0f3"/><text x="${pad.left - 6}" y="${fmt(y(v) + 4)}" text-anchor="end" fill="#5d6678">${v}</text>`),
    ...xTicks.map((s) => `<text x="${fmt(x(s))}" y="${pad.top + h + 16}" text-anchor="middle" fill="#5d6678">${s}</text>`),
    `<text x="${pad.left + w}" y="${height - 4}" text-anchor="end" fill="#5d6678">step</text>`,
    `<line x1="${pad.left}" y1="${pad.top + h}" x2="${pad.left + w}" y2="${pad.top + h}" stroke="#999"/>`,
    `<line x1="${pad.left}" y1="${pad.top}" x2="${pad.left}" y2="${pad.top + h}" stroke="#999"/>`,
  ];
  if (losses.length > 0) {
    parts.push(
      `<polyline class="loss" data-points="${losses.length}" fill="none" stroke="#9fb3c8" stroke-width="1" points="${points(losses.map((r) => [x(r.step), y(r.loss)]))}"><title>training loss, ${losses.length} steps</title></polyline>`,
      `<polyline class="loss-average" data-window="${window}" fill="none" stroke="#c33" stroke-width="2.2" points="${points(losses.map((r, i) => [x(r.step), y(average[i]!)]))}"><title>moving average of ${window} step(s)</title></polyline>`,
    );
  }
  if (vals.length > 0) {
    parts.push(
      `<polyline class="val-loss" data-points="${vals.length}" fill="none" stroke="#27a" stroke-width="2" points="${points(vals.map((r) => [x(r.step), y(r.val_loss)]))}"/>`,
      ...vals.map((r) => `<circle cx="${fmt(x(r.step))}" cy="${fmt(y(r.val_loss))}" r="3.5" fill="#27a"><title>${escapeHtml(`step ${r.step}: validation loss ${r.val_loss.toPrecision(4)}`)}</title></circle>`),
    );
  }
  parts.push('</svg>');
  return parts.join('\n');
}

/** The chart's legend (HTML), naming what each line is. */
export function lossChartLegend(records: readonly LogRecord[]): string {
  const n = records.filter((r) => r.loss !== undefined).length;
  const items = [
    `<span><i style="background:#9fb3c8"></i>training loss (${n} step${n === 1 ? '' : 's'})</span>`,
    `<span><i style="background:#c33"></i>moving average of ${smoothingWindow(n)} step(s)</span>`,
  ];
  const v = records.filter((r) => r.val_loss !== undefined).length;
  if (v > 0) items.push(`<span><i style="background:#27a"></i>validation loss (held-out images, fixed timesteps and noise; ${v} point${v === 1 ? '' : 's'})</span>`);
  return `<div class="legend">${items.join('')}</div>`;
}
