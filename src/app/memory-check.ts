/**
 * The memory check a command runs before loading a model: estimate what it needs (core/memory),
 * compare it with what the backend can hold (the backend table's capacity), and refuse with one
 * line (the estimate, the limit, what would make it fit) instead of failing minutes later in an
 * allocation. Also the per-command table `painter info --model` prints.
 */
import type { BackendReport } from '../backend/select.js';
import { BACKENDS, type BackendName, type BackendSpec } from '../backend/table.js';
import { memoryLimitOverride, type Capacity } from '../backend/capacity.js';
import { estimatePlans, fitsIn, fitSuggestions, HEADROOM } from '../core/memory/advice.js';
import type { CommandSettings, MemoryEstimate, ModelDescription } from '../core/memory/estimate.js';
import { defaultImageSize } from '../core/sizes.js';
import { PainterError } from '../errors.js';
import { describeModelMemory } from '../io/memory-budget.js';
import { defaultsFor } from '../options/resolve.js';
import type { OptionInput } from '../options/types.js';

/** Training images assumed when the command has not counted its folder yet. */
const ASSUMED_IMAGES = 10;

/** A command and the options it runs with (missing ones take their defaults). */
export type MemoryRequest =
  | { command: 'generate'; options: OptionInput<'generate'> }
  | { command: 'invert'; options: OptionInput<'invert'>; images?: number }
  | { command: 'dreambooth'; options: OptionInput<'dreambooth'>; images?: number };

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

/** Data and step settings both training commands share. */
function trainingCommon(o: OptionInput<'invert'> | OptionInput<'dreambooth'>, size: number, images = ASSUMED_IMAGES) {
  return {
    resolution: o.resolution ?? size,
    batch: o.batch ?? 1,
    gradAccum: o.gradAccum ?? 1,
    images,
    centerCrop: o.centerCrop ?? true,
    flip: o.flip ?? true,
    validation: (o.validationEvery ?? 0) > 0,
    gradientCheckpointing: o.gradientCheckpointing ?? false,
  };
}

/** The estimate's settings for a command's options (defaults fill what is missing). */
export function memorySettings(r: MemoryRequest, model: ModelDescription): CommandSettings {
  const size = defaultImageSize(model.unet, model.vae);
  switch (r.command) {
    case 'generate': {
      const o = { ...defaultsFor('generate'), ...r.options };
      const batch = o.batch ?? 1;
      return { command: 'generate', width: o.width ?? size, height: o.height ?? size, batch: Math.min(batch, o.count ?? batch), guidance: o.guidance ?? 7.5 };
    }
    case 'invert': {
      const o = { ...defaultsFor('invert'), ...r.options };
      return { command: 'invert', ...trainingCommon(o, size, r.images), vectors: o.vectors ?? 1 };
    }
    case 'dreambooth': {
      const o = { ...defaultsFor('dreambooth'), ...r.options };
      return {
        command: 'dreambooth',
        ...trainingCommon(o, size, r.images),
        mode: o.mode ?? 'lora',
        rank: o.rank ?? 4,
        trainTextEncoder: o.trainTextEncoder ?? false,
        priorPreservation: o.priorPreservation ?? true,
        classImages: o.classImages ?? 200,
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

function sizeText(s: CommandSettings): string {
  return s.command === 'generate' ? `${s.width}×${s.height} px, batch ${s.batch}` : `${s.resolution} px, batch ${s.batch}`;
}

/** "weights 4.26 GB + wasm weight copies 6.69 GB + … , peak during the training step". */
function breakdown(e: MemoryEstimate): string {
  const p = e.phases.find((x) => x.name === e.peakPhase)!;
  const parts = [`weights ${formatBytes(p.weights)}`];
  if (p.packed > 0) parts.push(`${e.backend.name} weight copies ${formatBytes(p.packed)}`);
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
  /** --config of a single-file checkpoint. */
  configDir?: string;
  /**
   * Generation can hold one component at a time (text encoder → UNet → VAE). Only then is the
   * 'phased' plan offered; otherwise the whole pipeline must fit.
   */
  phasedGeneration?: boolean;
}

type BackendOf = Pick<BackendReport, 'name' | 'gpu'>;

/** What the backend can hold, or the lower limit the user set with PAINTER_MEMORY_LIMIT. */
function capacityOf(spec: BackendSpec, gpu: boolean): Capacity {
  const limit = memoryLimitOverride();
  return limit !== undefined ? { bytes: limit, what: 'the PAINTER_MEMORY_LIMIT you set' } : spec.capacity(gpu);
}

function describe(modelPath: string, configDir?: string): ModelDescription | undefined {
  try {
    return describeModelMemory(modelPath, configDir);
  } catch (e) {
    // The loader reports the problem in its own words.
    if (e instanceof PainterError) return undefined;
    throw e;
  }
}

/**
 * Estimates a command on `modelPath` before anything is loaded. Throws a PainterError (exit 1)
 * with one line when it cannot fit; returns the estimate otherwise, or undefined when the check
 * is switched off (PAINTER_MEMORY_CHECK=off) or the model cannot be described.
 */
export function checkMemoryBudget(request: MemoryRequest, modelPath: string, backend: BackendOf, opts: MemoryCheckOptions = {}): MemoryCheck | undefined {
  if (/^(0|off|false|no)$/i.test(process.env['PAINTER_MEMORY_CHECK'] ?? '')) return undefined;
  const model = describe(modelPath, opts.configDir);
  if (!model) return undefined;
  const settings = memorySettings(request, model);
  const spec = BACKENDS[backend.name];
  const capacity = capacityOf(spec, backend.gpu);
  let plans: ReturnType<typeof estimatePlans>;
  try {
    plans = estimatePlans(model, settings, spec);
  } catch (e) {
    // A size the model cannot take: the command says so in its own words.
    if (e instanceof RangeError) return undefined;
    throw e;
  }
  const resident = plans.resident;
  const phased = opts.phasedGeneration ? plans.phased : undefined;
  if (capacity.bytes === undefined) return { estimate: resident, capacity, fits: undefined, plan: 'resident' };
  if (fitsIn(resident.peak, capacity.bytes)) return { estimate: resident, capacity, fits: true, plan: 'resident' };
  if (phased && fitsIn(phased.peak, capacity.bytes)) return { estimate: phased, capacity, fits: true, plan: 'phased' };
  const best = phased && phased.peak < resident.peak ? phased : resident;
  const roomier = spec.roomier;
  const alternative = roomier
    ? { backend: BACKENDS[roomier.backend], capacity: BACKENDS[roomier.backend].capacity(false).bytes ?? 0, flags: `--backend ${roomier.backend} (${roomier.needs})` }
    : undefined;
  const suggestions = fitSuggestions(model, settings, spec, capacity.bytes, alternative, opts.phasedGeneration).map((s) => s.flags);
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
  /** Training: the peak with the leanest settings that train the same way (LEAN_FLAGS). */
  leanPeak?: number;
  leanFits?: boolean;
}

/** Settings that lower a training run's peak without changing what it learns. */
export const LEAN_FLAGS = '--gradient-checkpointing --validation-every 0';

export interface MemoryReport {
  backend: BackendName;
  resolution: number;
  capacity: Capacity;
  rows: MemoryReportRow[];
}

/** Estimates of every command at its defaults and the model's native resolution. */
export function memoryReport(modelPath: string, backend: BackendOf, opts: MemoryCheckOptions = {}): MemoryReport | undefined {
  const model = describe(modelPath, opts.configDir);
  if (!model) return undefined;
  const spec = BACKENDS[backend.name];
  const capacity = capacityOf(spec, backend.gpu);
  const cases: MemoryRequest[] = [
    { command: 'generate', options: {} },
    { command: 'invert', options: {} },
    { command: 'dreambooth', options: { mode: 'full' } },
    { command: 'dreambooth', options: { mode: 'lora' } },
  ];
  const rows = cases.map((request): MemoryReportRow => {
    const plans = estimatePlans(model, memorySettings(request, model), spec);
    const resident = plans.resident;
    const phased = opts.phasedGeneration ? plans.phased : undefined;
    const row: MemoryReportRow = { label: resident.label, peak: resident.peak, peakPhase: resident.peakPhase };
    const best = phased && phased.peak < resident.peak ? phased.peak : resident.peak;
    if (phased && phased.peak < resident.peak) row.phasedPeak = phased.peak;
    if (capacity.bytes !== undefined) row.fits = fitsIn(best, capacity.bytes);
    const settings = memorySettings(request, model);
    if (settings.command !== 'generate') {
      row.leanPeak = estimatePlans(model, { ...settings, gradientCheckpointing: true, validation: false }, spec).resident.peak;
      if (capacity.bytes !== undefined) row.leanFits = fitsIn(row.leanPeak, capacity.bytes);
    }
    return row;
  });
  return { backend: backend.name, resolution: defaultImageSize(model.unet, model.vae), capacity, rows };
}

/** Lines for `painter info --model`. */
export function formatMemoryReport(r: MemoryReport): string[] {
  const limit = r.capacity.bytes === undefined ? r.capacity.what : `${formatBytes(r.capacity.bytes * HEADROOM)}, ${Math.round(HEADROOM * 100)}% of ${r.capacity.what}`;
  const lines = [`memory    estimated peak on ${r.backend} at ${r.resolution} px, batch 1, default settings (limit: ${limit})`];
  for (const row of r.rows) {
    const verdict = row.fits === undefined ? '' : row.fits ? 'fits' : 'does not fit';
    const phased = row.phasedPeak !== undefined ? `; ${formatBytes(row.phasedPeak)} holding one component at a time` : '';
    const leanVerdict = row.leanFits === undefined ? '' : row.leanFits ? ', fits' : ', does not fit';
    const lean = row.leanPeak !== undefined && row.leanPeak < row.peak ? `; ${formatBytes(row.leanPeak)}${leanVerdict} with ${LEAN_FLAGS}` : '';
    lines.push(`  ${row.label.padEnd(16)} ${formatBytes(row.peak).padStart(9)}  ${verdict}${verdict ? ' ' : ''}(peak: ${row.peakPhase}${phased})${lean}`);
  }
  return lines;
}
