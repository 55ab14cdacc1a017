/**
 * Resolved command configuration: built-in defaults < preset (--preset NAME|PATH) < the flags
 * the user actually passed. Presets are validated against the same option list as the flags;
 * every problem is reported at once, with the file and key.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import yaml from 'js-yaml';
import { PainterError } from '../errors.js';
import { camel, optionsFor, type CommandName, type OptionSpec } from './options.js';

export type ConfigValues = Record<string, unknown>;

export interface ValidationResult {
  config: ConfigValues;
  errors: string[];
  warnings: string[];
}

/** The package root (…/painter), found from this file in src/ or dist/src/. */
export function packageRoot(): string {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  while (!fs.existsSync(path.join(dir, 'package.json'))) {
    const up = path.dirname(dir);
    if (up === dir) throw new Error('painter: package.json not found above ' + fileURLToPath(import.meta.url));
    dir = up;
  }
  return dir;
}

export function presetsDir(): string {
  return path.join(packageRoot(), 'presets');
}

/** Names of the bundled presets (file stems in presets/). */
export function listPresets(): string[] {
  const dir = presetsDir();
  if (!fs.existsSync(dir)) return [];
  return fs
    .readdirSync(dir)
    .filter((f) => /\.ya?ml$/.test(f))
    .map((f) => f.replace(/\.ya?ml$/, ''))
    .sort();
}

function typeName(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'a list';
  return `a ${typeof v}`;
}

/** Checks one value against its option spec; returns an error text or undefined. */
export function checkValue(spec: OptionSpec, value: unknown): string | undefined {
  switch (spec.type) {
    case 'string':
      if (typeof value !== 'string') return `must be a string, got ${typeName(value)}`;
      break;
    case 'boolean':
      if (typeof value !== 'boolean') return `must be true or false, got ${typeName(value)}`;
      return undefined;
    case 'string[]':
      if (!Array.isArray(value) || !value.every((v) => typeof v === 'string')) return `must be a list of strings, got ${typeName(value)}`;
      return undefined;
    case 'integer':
    case 'number':
      if (typeof value !== 'number' || Number.isNaN(value)) return `must be a number, got ${typeName(value)}`;
      if (spec.type === 'integer' && !Number.isInteger(value)) return `must be a whole number, got ${value}`;
      if (spec.min !== undefined && value < spec.min) return `must be at least ${spec.min}, got ${value}`;
      if (spec.max !== undefined && value > spec.max) return `must be at most ${spec.max}, got ${value}`;
      if (spec.above !== undefined && value <= spec.above) return `must be greater than ${spec.above}, got ${value}`;
      return undefined;
  }
  if (spec.choices && !spec.choices.includes(value as string)) return `must be one of ${spec.choices.join(', ')}, got "${String(value)}"`;
  return undefined;
}

/**
 * Validates a preset object for a command: unknown keys, keys a preset may not set, wrong types
 * and out-of-range values are all collected.
 */
export function validatePreset(raw: unknown, command: CommandName, source: string): ValidationResult {
  const errors: string[] = [];
  const warnings: string[] = [];
  const config: ConfigValues = {};
  if (raw === null || raw === undefined) return { config, errors, warnings };
  if (typeof raw !== 'object' || Array.isArray(raw)) {
    return { config, errors: [`${source}: a preset must be a mapping of option names to values`], warnings };
  }
  const specs = new Map(optionsFor(command).map((s) => [s.name, s]));
  for (const [key, value] of Object.entries(raw as Record<string, unknown>)) {
    if (key === 'command') {
      if (value !== command) errors.push(`${source}: key "command": this preset is for "${String(value)}", not "${command}"`);
      continue;
    }
    if (key === 'description') continue;
    const spec = specs.get(key);
    if (!spec) {
      errors.push(`${source}: key "${key}": unknown option for painter ${command}`);
      continue;
    }
    if (!spec.presettable) {
      errors.push(`${source}: key "${key}": cannot be set by a preset; pass --${key} on the command line`);
      continue;
    }
    const problem = checkValue(spec, value);
    if (problem) errors.push(`${source}: key "${key}" ${problem}`);
    else config[camel(key)] = value;
  }
  return { config, errors, warnings };
}

/** Finds a preset by bundled name or path. */
export function resolvePresetPath(nameOrPath: string): string {
  if (/[\\/]|\.ya?ml$/.test(nameOrPath)) {
    if (!fs.existsSync(nameOrPath)) throw new PainterError(`--preset ${nameOrPath}: file not found`);
    return nameOrPath;
  }
  for (const ext of ['.yaml', '.yml']) {
    const p = path.join(presetsDir(), nameOrPath + ext);
    if (fs.existsSync(p)) return p;
  }
  throw new PainterError(`--preset ${nameOrPath}: no such preset; bundled presets: ${listPresets().join(', ') || 'none'} (or give a path to a .yaml file)`);
}

export function loadPreset(nameOrPath: string, command: CommandName): ValidationResult {
  const file = resolvePresetPath(nameOrPath);
  let raw: unknown;
  try {
    raw = yaml.load(fs.readFileSync(file, 'utf8'), { filename: file });
  } catch (e) {
    throw new PainterError(`${file}: not valid YAML (${(e as Error).message.split('\n')[0]})`);
  }
  return validatePreset(raw, command, file);
}

/** Built-in defaults of a command's options, keyed by camelCase name. */
export function defaultsFor(command: CommandName): ConfigValues {
  const out: ConfigValues = {};
  for (const s of optionsFor(command)) if (s.default !== undefined) out[camel(s.name)] = s.default;
  return out;
}

/**
 * defaults < preset < flags actually passed (`passed` holds only those; yargs is given no
 * defaults so that absence can be told apart from the default value).
 */
export function resolveConfig(command: CommandName, passed: ConfigValues): ConfigValues {
  const defaults = defaultsFor(command);
  let preset: ConfigValues = {};
  const presetName = passed['preset'];
  if (typeof presetName === 'string') {
    const r = loadPreset(presetName, command);
    if (r.errors.length > 0) throw new PainterError(`invalid preset:\n  ${r.errors.join('\n  ')}`);
    preset = r.config;
  }
  const flags: ConfigValues = {};
  for (const s of optionsFor(command)) {
    const v = passed[camel(s.name)];
    if (v !== undefined) {
      const problem = checkValue(s, v);
      if (problem) throw new PainterError(`--${s.name} ${problem}`);
      flags[camel(s.name)] = v;
    }
  }
  return { ...defaults, ...preset, ...flags };
}
