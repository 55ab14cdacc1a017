/**
 * The memory check the commands run before loading a model: estimate what the command needs
 * (core/memory), compare it with what the backend can hold (io/memory-budget), and refuse with
 * one line (the estimate, the limit, what would make it fit) instead of failing minutes later in
 * an allocation. Also the per-command table `painter info --model` prints.
 */
import type { BackendReport } from '../backend/select.js';
import { estimatePlans, fitsIn, fitSuggestions, HEADROOM } from '../core/memory/advice.js';
import { defaultResolution, type CommandSettings, type MemoryBackend, type MemoryEstimate, type ModelDescription } from '../core/memory/estimate.js';
import { PainterError } from '../errors.js';
import { availableSystemMemory, backendCapacity, describeModelMemory, type Capacity } from '../io/memory-budget.js';
import { defaultsFor, type ConfigValues } from './config.js';

export type BudgetCommand = 'generate' | 'invert' | 'dreambooth';

/** Training images assumed when the command has not counted its folder yet. */
const ASSUMED_IMAGES = 10;

export interface MemoryCheck {
  estimate: MemoryEstimate;
  capacity: Capacity;
  /** Undefined when the capacity is unknown (GPU memory not reported). */
  fits: boolean | undefined;
  /**
   * Generation only: 'phased' when the whole pipeline does not fit but one component at a time
   * does; the command should then load text encoder → UNet → VAE one after the other.
   */
  plan: 'resident' | 'phased';
}

function num(cfg: ConfigValues, key: string, fallback: number): number {
  const v = cfg[key];
  return typeof v === 'number' && Number.isFinite(v) ? v : fallback;
}

function bool(cfg: ConfigValues, key: string, fallback: boolean): boolean {
  const v = cfg[key];
  return typeof v === 'boolean' ? v : fallback;
}

/** The estimate's settings from a command's resolved config (defaults fill what is missing). */
export function settingsFromConfig(command: BudgetCommand, model: ModelDescription, passed: ConfigValues, extra: { images?: number } = {}): CommandSettings {
  const cfg = { ...defaultsFor(command), ...passed };
  const size = defaultResolution(model.unet, model.vae);
  const batch = num(cfg, 'batch', 1);
  switch (command) {
    case 'generate':
      return {
        command,
        width: num(cfg, 'width', size),
        height: num(cfg, 'height', size),
        batch: Math.min(batch, num(cfg, 'count', batch)),
        guidance: num(cfg, 'guidance', 7.5),
      };
    case 'invert':
    case 'dreambooth': {
      const common = {
        resolution: num(cfg, 'resolution', size),
        batch,
        gradAccum: num(cfg, 'gradAccum', 1),
        images: extra.images ?? ASSUMED_IMAGES,
        centerCrop: bool(cfg, 'centerCrop', true),
        flip: bool(cfg, 'flip', true),
        validation: num(cfg, 'validationEvery', 0) > 0,
      };
      if (command === 'invert') return { command, ...common, vectors: num(cfg, 'vectors', 1) };
      return {
        command,
        ...common,
        mode: cfg['mode'] === 'full' ? 'full' : 'lora',
        rank: num(cfg, 'rank', 4),
        trainTextEncoder: bool(cfg, 'trainTextEncoder', false),
        priorPreservation: bool(cfg, 'priorPreservation', true),
        classImages: num(cfg, 'classImages', 200),
      };
    }
  }
}

export function formatBytes(n: number): string {
  if (n >= 1e10) return `${(n / 1e9).toFixed(1)} GB`;
  if (n >= 1e9) return `${(n / 1e9).toFixed(2)} GB`;
  if (n >= 1e7) return `${Math.round(n / 1e6)} MB`;
  return `${(n / 1e6).toFixed(1)} MB`;
}

function memoryBackend(b: Pick<BackendReport, 'name'>): MemoryBackend {
  return b.name;
}

function sizeText(s: CommandSettings): string {
  return s.command === 'generate' ? `${s.width}×${s.height} px, batch ${s.batch}` : `${s.resolution} px, batch ${s.batch}`;
}

/** "weights 4.26 GB + wasm weight copies 6.69 GB + … , peak during the training step". */
function breakdown(e: MemoryEstimate): string {
  const p = e.phases.find((x) => x.name === e.peakPhase)!;
  const parts = [`weights ${formatBytes(p.weights)}`];
  if (p.packed > 0) parts.push(`wasm weight copies ${formatBytes(p.packed)}`);
  if (p.state > 0) parts.push(`${e.trainableBytes > 0 ? 'optimizer state and cached latents' : 'cached latents'} ${formatBytes(p.state)}`);
  parts.push(`activations ${formatBytes(p.activations)}`);
  return `${parts.join(' + ')}, peak during ${p.name}`;
}

/** The one line a refused command prints. */
export function refusalMessage(e: MemoryEstimate, phased: boolean, capacity: Capacity, suggestions: string[]): string {
  const what = `${e.label} needs about ${formatBytes(e.peak)} at ${sizeText(e.settings)} (${breakdown(e)}${phased ? ', even holding one component at a time' : ''})`;
  const bytes = capacity.bytes ?? 0;
  const limit = `only ${formatBytes(bytes * HEADROOM)} can be used (${Math.round(HEADROOM * 100)}% of ${capacity.what}: ${formatBytes(bytes)})`;
  const fix = suggestions.length > 0 ? `to fit, use ${suggestions.join(', or ')}` : 'no setting painter offers brings it under that; use a machine with more memory';
  return `not enough memory: ${what}, but ${limit}; ${fix}. Nothing was loaded or written (PAINTER_MEMORY_CHECK=off skips this check)`;
}

export interface MemoryCheckOptions {
  /** Training images, once counted (default: 10). */
  images?: number;
  /**
   * Generation can hold one component at a time (text encoder → UNet → VAE). Only then is the
   * 'phased' plan offered; otherwise the whole pipeline must fit.
   */
  phasedGeneration?: boolean;
}

/**
 * Estimates `command` on `modelPath` with the resolved config `cfg` before anything is loaded.
 * Throws a PainterError (exit 1) with one line when it cannot fit; returns the estimate
 * otherwise, or undefined when the check is switched off (PAINTER_MEMORY_CHECK=off) or the
 * model cannot be described (the loader then reports the problem in its own words).
 */
export function checkMemoryBudget(
  command: BudgetCommand,
  modelPath: string,
  cfg: ConfigValues,
  backend: Pick<BackendReport, 'name' | 'gpu'>,
  opts: MemoryCheckOptions = {},
): MemoryCheck | undefined {
  if (/^(0|off|false|no)$/i.test(process.env['PAINTER_MEMORY_CHECK'] ?? '')) return undefined;
  let model: ModelDescription;
  try {
    model = describeModelMemory(modelPath, typeof cfg['config'] === 'string' ? cfg['config'] : undefined);
  } catch (e) {
    if (e instanceof PainterError) return undefined;
    throw e;
  }
  const settings = settingsFromConfig(command, model, cfg, opts);
  const kind = memoryBackend(backend);
  const capacity = backendCapacity(backend);
  const plans = estimatePlans(model, settings, kind);
  const resident = plans.resident;
  const phased = opts.phasedGeneration ? plans.phased : undefined;
  if (capacity.bytes === undefined) return { estimate: resident, capacity, fits: undefined, plan: 'resident' };
  if (fitsIn(resident.peak, capacity.bytes)) return { estimate: resident, capacity, fits: true, plan: 'resident' };
  if (phased && fitsIn(phased.peak, capacity.bytes)) return { estimate: phased, capacity, fits: true, plan: 'phased' };
  const best = phased && phased.peak < resident.peak ? phased : resident;
  const alternative = kind === 'wasm' ? { backend: 'tensorflow' as const, capacity: availableSystemMemory(), flags: '--backend tensorflow (needs @tensorflow/tfjs-node)' } : undefined;
  const suggestions = fitSuggestions(model, settings, kind, capacity.bytes, alternative, opts.phasedGeneration).map((s) => s.flags);
  throw new PainterError(refusalMessage(best, best === phased, capacity, suggestions));
}

// ---------------------------------------------------------------------------------------------
// painter info --model
// ---------------------------------------------------------------------------------------------

export interface MemoryReportRow {
  /** "generate", "invert", "dreambooth full", "dreambooth lora". */
  label: string;
  peak: number;
  peakPhase: string;
  /** Generation: the peak holding one component at a time. */
  phasedPeak?: number;
  fits?: boolean;
}

export interface MemoryReport {
  backend: MemoryBackend;
  resolution: number;
  capacity: Capacity;
  rows: MemoryReportRow[];
}

/**
 * Estimates of every command at its defaults and the model's native resolution. `configDir`:
 * --config for a single-file checkpoint; `phasedGeneration` as in checkMemoryBudget.
 */
export function memoryReport(modelPath: string, backend: Pick<BackendReport, 'name' | 'gpu'>, configDir?: string, phasedGeneration = false): MemoryReport | undefined {
  let model: ModelDescription;
  try {
    model = describeModelMemory(modelPath, configDir);
  } catch (e) {
    if (e instanceof PainterError) return undefined;
    throw e;
  }
  const kind = memoryBackend(backend);
  const capacity = backendCapacity(backend);
  const cases: [BudgetCommand, ConfigValues][] = [
    ['generate', {}],
    ['invert', {}],
    ['dreambooth', { mode: 'full' }],
    ['dreambooth', { mode: 'lora' }],
  ];
  const rows = cases.map(([command, cfg]): MemoryReportRow => {
    const plans = estimatePlans(model, settingsFromConfig(command, model, cfg), kind);
    const resident = plans.resident;
    const phased = phasedGeneration ? plans.phased : undefined;
    const row: MemoryReportRow = { label: resident.label, peak: resident.peak, peakPhase: resident.peakPhase };
    const best = phased && phased.peak < resident.peak ? phased.peak : resident.peak;
    if (phased && phased.peak < resident.peak) row.phasedPeak = phased.peak;
    if (capacity.bytes !== undefined) row.fits = fitsIn(best, capacity.bytes);
    return row;
  });
  return { backend: kind, resolution: defaultResolution(model.unet, model.vae), capacity, rows };
}

/** Lines for `painter info --model`. */
export function formatMemoryReport(r: MemoryReport): string[] {
  const limit = r.capacity.bytes === undefined ? r.capacity.what : `${formatBytes(r.capacity.bytes * HEADROOM)}, ${Math.round(HEADROOM * 100)}% of ${r.capacity.what}`;
  const lines = [`memory    estimated peak on ${r.backend} at ${r.resolution} px, batch 1, default settings (limit: ${limit})`];
  for (const row of r.rows) {
    const verdict = row.fits === undefined ? '' : row.fits ? 'fits' : 'does not fit';
    const phased = row.phasedPeak !== undefined ? `; ${formatBytes(row.phasedPeak)} holding one component at a time` : '';
    lines.push(`  ${row.label.padEnd(16)} ${formatBytes(row.peak).padStart(9)}  ${verdict}${verdict ? ' ' : ''}(peak: ${row.peakPhase}${phased})`);
  }
  return lines;
}
