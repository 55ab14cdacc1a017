/**
 * What would make a command fit in memory: each setting the user controls is lowered alone
 * (resolution, batch, LoRA instead of full fine-tuning, …) and the estimate redone; a change is
 * suggested when it alone brings the peak under the capacity. When none does, all of them
 * together are tried. A backend switch is judged against that backend's own capacity.
 */
import { vaeLatentFactor } from '../models/vae.js';
import { estimateMemory, type CommandSettings, type MemoryBackend, type MemoryEstimate, type ModelDescription } from './estimate.js';

/** Share of the capacity an estimate may use: allocator fragmentation and what the estimate leaves out. */
export const HEADROOM = 0.95;

export function fitsIn(peak: number, capacity: number): boolean {
  return peak <= capacity * HEADROOM;
}

/** A command's estimate with everything resident and, for generation, one component at a time. */
export function estimatePlans(m: ModelDescription, s: CommandSettings, backend: MemoryBackend): { resident: MemoryEstimate; phased?: MemoryEstimate } {
  const resident = estimateMemory(m, s, backend);
  if (s.command !== 'generate') return { resident };
  return { resident, phased: estimateMemory(m, s, backend, { phased: true }) };
}

/** The smallest peak a command can run with; `phasedGeneration`: generation may hold one component at a time. */
export function bestPeak(m: ModelDescription, s: CommandSettings, backend: MemoryBackend, phasedGeneration = false): { estimate: MemoryEstimate; phased: boolean } {
  const { resident, phased } = estimatePlans(m, s, backend);
  return phasedGeneration && phased && phased.peak < resident.peak ? { estimate: phased, phased: true } : { estimate: resident, phased: false };
}

export interface Suggestion {
  /** Flags as the user types them: "--resolution 384", "--backend tensorflow". */
  flags: string;
  /** The estimate with the change. */
  peak: number;
}

interface Change {
  flags: string;
  apply(s: CommandSettings): CommandSettings;
}

function sizeFlags(s: CommandSettings, size: number): string {
  return s.command === 'generate' ? `--width ${size} --height ${size}` : `--resolution ${size}`;
}

function currentSize(s: CommandSettings): number {
  return s.command === 'generate' ? Math.max(s.width, s.height) : s.resolution;
}

function withSize(s: CommandSettings, size: number): CommandSettings {
  return s.command === 'generate' ? { ...s, width: size, height: size } : { ...s, resolution: size };
}

/** Sizes below the current one, largest first, in steps the UNet's down/up-sampling keeps whole. */
function smallerSizes(m: ModelDescription, s: CommandSettings): number[] {
  const step = vaeLatentFactor(m.vae) * 2 ** (m.unet.block_out_channels.length - 1);
  const out: number[] = [];
  for (let size = Math.floor((currentSize(s) - 1) / step) * step; size >= step; size -= step) out.push(size);
  return out;
}

/** Single-setting reductions, cheapest for the user's result first. */
function reductions(s: CommandSettings): Change[] {
  const out: Change[] = [];
  // The same result for about one more forward pass per step: first.
  if (s.command !== 'generate' && !s.gradientCheckpointing) out.push({ flags: '--gradient-checkpointing', apply: (x) => ({ ...x, gradientCheckpointing: true }) });
  if (s.command !== 'generate' && s.validation) out.push({ flags: '--validation-every 0', apply: (x) => ({ ...x, validation: false }) });
  if (s.batch > 1) out.push({ flags: '--batch 1', apply: (x) => ({ ...x, batch: 1 }) });
  if (s.command === 'dreambooth') {
    const db = (f: (x: Extract<CommandSettings, { command: 'dreambooth' }>) => CommandSettings) => (x: CommandSettings) => (x.command === 'dreambooth' ? f(x) : x);
    if (s.mode === 'full') out.push({ flags: '--mode lora', apply: db((x) => ({ ...x, mode: 'lora' })) });
    if (s.trainTextEncoder) out.push({ flags: '--no-train-text-encoder', apply: db((x) => ({ ...x, trainTextEncoder: false })) });
    if (s.priorPreservation && s.classImages > 25) {
      const fewer = Math.max(25, Math.floor(s.classImages / 4));
      out.push({ flags: `--class-images ${fewer}`, apply: db((x) => ({ ...x, classImages: fewer })) });
    }
    if (s.priorPreservation) out.push({ flags: '--no-prior-preservation', apply: db((x) => ({ ...x, priorPreservation: false })) });
  }
  return out;
}

function largestFittingSize(m: ModelDescription, s: CommandSettings, backend: MemoryBackend, capacity: number, prefix: string, phased: boolean): Suggestion | undefined {
  for (const size of smallerSizes(m, s)) {
    const peak = bestPeak(m, withSize(s, size), backend, phased).estimate.peak;
    if (fitsIn(peak, capacity)) return { flags: `${prefix}${sizeFlags(s, size)}`, peak };
  }
  return undefined;
}

/** Changes of settings that make the command fit on `backend`: each alone, else all together. */
function changesThatFit(m: ModelDescription, s: CommandSettings, backend: MemoryBackend, capacity: number, phased: boolean): Suggestion[] {
  const out: Suggestion[] = [];
  const single = reductions(s);
  for (const c of single) {
    const peak = bestPeak(m, c.apply(s), backend, phased).estimate.peak;
    if (fitsIn(peak, capacity)) out.push({ flags: c.flags, peak });
  }
  const size = largestFittingSize(m, s, backend, capacity, '', phased);
  if (size) out.push(size);
  if (out.length > 0) return out;
  // Nothing alone is enough: every reduction at once (fewer class images is moot without prior
  // preservation), then the largest size that fits with them.
  const together = single.filter((c) => !(c.flags.startsWith('--class-images') && single.some((o) => o.flags === '--no-prior-preservation')));
  const all = together.reduce((x, c) => c.apply(x), s);
  const flags = together.map((c) => c.flags).join(' ');
  const peak = bestPeak(m, all, backend, phased).estimate.peak;
  if (together.length > 1 && fitsIn(peak, capacity)) return [{ flags, peak }];
  const combined = largestFittingSize(m, all, backend, capacity, flags ? `${flags} ` : '', phased);
  return combined ? [combined] : [];
}

/**
 * Changes that make the command fit `capacity` on `backend`. `alternative` is another backend
 * the user could switch to, with the capacity it would have (suggested alone when that is
 * enough, else with the first change that makes it fit there); `phasedGeneration` as bestPeak.
 */
export function fitSuggestions(
  m: ModelDescription,
  s: CommandSettings,
  backend: MemoryBackend,
  capacity: number,
  alternative?: { backend: MemoryBackend; capacity: number; flags: string },
  phasedGeneration = false,
): Suggestion[] {
  const out: Suggestion[] = [];
  if (alternative) {
    const peak = bestPeak(m, s, alternative.backend, phasedGeneration).estimate.peak;
    if (fitsIn(peak, alternative.capacity)) out.push({ flags: alternative.flags, peak });
    else {
      const there = changesThatFit(m, s, alternative.backend, alternative.capacity, phasedGeneration)[0];
      if (there) out.push({ flags: `${alternative.flags} with ${there.flags}`, peak: there.peak });
    }
  }
  return [...out, ...changesThatFit(m, s, backend, capacity, phasedGeneration)];
}
