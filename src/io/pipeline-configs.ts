/** The configs of a diffusers pipeline folder (unet/, vae/, text_encoder/ config.json, scheduler/scheduler_config.json). */
import * as path from 'node:path';
import { parseClipTextConfig, type ClipTextConfig } from '../core/models/clip-text.js';
import { parseUNetConfig, type UNetConfig } from '../core/models/unet.js';
import { parseVaeConfig, type VaeConfig } from '../core/models/vae.js';
import { parseSchedulerConfig, type SchedulerConfig } from '../core/schedulers/index.js';
import { readJson } from './load-weights.js';

export interface ModelConfigs {
  unet: UNetConfig;
  vae: VaeConfig;
  textEncoder: ClipTextConfig;
  scheduler: SchedulerConfig;
}

/** Where each component's config lies inside a pipeline folder. */
export const CONFIG_FILES = {
  unet: path.join('unet', 'config.json'),
  vae: path.join('vae', 'config.json'),
  textEncoder: path.join('text_encoder', 'config.json'),
  scheduler: path.join('scheduler', 'scheduler_config.json'),
} as const;

/** Parses config JSON values (as read, or as built) into typed configs; `source(part)` names each in errors. */
export function parseModelConfigs(json: Record<keyof ModelConfigs, unknown>, source: (part: keyof ModelConfigs) => string): ModelConfigs {
  return {
    unet: parseUNetConfig(json.unet, source('unet')),
    vae: parseVaeConfig(json.vae, source('vae')),
    textEncoder: parseClipTextConfig(json.textEncoder, source('textEncoder')),
    scheduler: parseSchedulerConfig(json.scheduler, source('scheduler')),
  };
}

/** The raw JSON of a folder's configs. */
export function readConfigJson(dir: string): Record<keyof ModelConfigs, unknown> {
  const read = (part: keyof ModelConfigs) => readJson(path.join(dir, CONFIG_FILES[part]));
  return { unet: read('unet'), vae: read('vae'), textEncoder: read('textEncoder'), scheduler: read('scheduler') };
}

export function readConfigs(dir: string): ModelConfigs {
  return parseModelConfigs(readConfigJson(dir), (part) => path.join(dir, CONFIG_FILES[part]));
}
