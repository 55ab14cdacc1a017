/**
 * `generate --from-png FILE`: the settings of a PNG's parameters text (AUTOMATIC1111's infotext,
 * as painter and A1111 write it) as generate options, so the image can be made again. A1111's
 * names map back to painter's: the sampler ("DPM++ 2M", or an old "DPM++ 2M Karras"), the
 * Schedule type, Clip skip (A1111 counts the last layer as 1), the variation seed.
 */
import * as fs from 'node:fs';
import { parseInfotext, type GenerationParams } from '../core/infotext.js';
import { parseSamplerName, parseScheduleType, samplerLabel, type SigmaSchedule } from '../core/schedulers/sampler-names.js';
import { PainterError } from '../errors.js';
import type { GenerateOptions } from '../options/types.js';
import { readPngText } from '../io/png-text.js';

export interface PngSettings {
  prompt: string;
  /** The generate options the PNG sets. */
  options: Partial<GenerateOptions>;
  /** Pairs painter does not reproduce (e.g. a hires pass), for a warning. */
  ignored: string[];
}

/** Keys that describe the image or its origin rather than how to make it. */
const DESCRIPTIVE = new Set(['Version', 'TI hashes', 'Lora hashes', 'Model hash', 'Model', 'Prompt-to-Prompt', 'Classifier guidance', 'Emphasis']);

/** The generate options of parsed parameters; `source` names the file in errors. */
export function settingsFromParameters(p: GenerationParams, source: string): PngSettings {
  const options: Partial<GenerateOptions> = { negative: p.negativePrompt };
  if (p.steps > 0) options.steps = p.steps;
  if (p.cfgScale > 0) options.guidance = p.cfgScale;
  if (Number.isInteger(p.seed) && p.seed >= 0) options.seed = p.seed;
  if (p.width > 0 && p.height > 0) [options.width, options.height] = [p.width, p.height];
  if (p.sampler) {
    const sampler = parseSamplerName(p.sampler);
    if (!sampler) throw new PainterError(`${source}: the sampler "${p.sampler}" is not one painter has; pass --scheduler NAME (see painter generate --help)`);
    options.scheduler = samplerLabel(sampler.kind);
    let schedule: SigmaSchedule | undefined = sampler.schedule;
    if (p.scheduleType) {
      schedule = parseScheduleType(p.scheduleType);
      if (!schedule) throw new PainterError(`${source}: the schedule type "${p.scheduleType}" is not one painter has; pass --schedule automatic, karras or exponential`);
    }
    if (schedule) options.schedule = schedule;
  }
  if (p.clipSkip !== undefined && p.clipSkip >= 1) options.clipSkip = p.clipSkip - 1;
  if (p.variationStrength && p.variationSeed !== undefined) {
    options.subseed = p.variationSeed;
    options.subseedStrength = p.variationStrength;
  }
  if (p.extra['Emphasis'] === 'None') options.emphasis = 'none';
  const ignored = Object.keys(p.extra).filter((k) => !DESCRIPTIVE.has(k));
  return { prompt: p.prompt, options, ignored };
}

/** The generation parameters a PNG carries (A1111's "parameters" text), raw and parsed. */
export function pngParameters(file: string): { text: string; parameters: GenerationParams } {
  let chunks: Record<string, string>;
  try {
    chunks = readPngText(fs.readFileSync(file));
  } catch (e) {
    throw new PainterError(`${file}: cannot read PNG metadata (${(e as Error).message})`);
  }
  const text = chunks['parameters'];
  if (text === undefined) throw new PainterError(`${file}: no generation parameters stored in this PNG (no "parameters" text chunk)`);
  return { text, parameters: parseInfotext(text) };
}

/** The settings stored in a PNG file. */
export function settingsFromPng(file: string): PngSettings {
  return settingsFromParameters(pngParameters(file).parameters, file);
}

/** The flags that reproduce `s` (for `painter info FILE.png`). */
export function settingsFlags(s: PngSettings): string {
  const flag = (name: string, v: string | number | undefined) => (v === undefined || v === '' ? [] : [`--${name} ${typeof v === 'string' && /[\s"'\\$]/.test(v) ? JSON.stringify(v) : v}`]);
  const o = s.options;
  return [
    ...flag('scheduler', o.scheduler),
    ...flag('schedule', o.schedule),
    ...flag('steps', o.steps),
    ...flag('guidance', o.guidance),
    ...flag('seed', o.seed),
    ...flag('width', o.width),
    ...flag('height', o.height),
    ...flag('clip-skip', o.clipSkip || undefined),
    ...flag('subseed', o.subseed),
    ...flag('subseed-strength', o.subseedStrength),
  ].join(' ');
}

/** The flags of settingsFromParameters, or the reason painter cannot make the image. */
export function rerunFlags(p: GenerationParams, source: string): { flags: string } | { problem: string } {
  try {
    return { flags: settingsFlags(settingsFromParameters(p, source)) };
  } catch (e) {
    if (e instanceof PainterError) return { problem: e.message };
    throw e;
  }
}
