/**
 * A command's options resolved: built-in defaults < preset (--preset NAME|PATH) < the options
 * the caller actually passed. Presets and passed values are checked against the same option
 * table (table.ts) with one rule per option type; a preset's problems are reported all at once,
 * with the file and key.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import yaml from 'js-yaml';
import { presetsDir } from '../io/paths.js';
import { checkRule, type Rule } from '../core/config-fields.js';
import { PainterError, UsageError } from '../errors.js';
import { camel, optionsFor, type CommandName, type OptionSpec } from './table.js';
import type { CommandOptions, OptionInput } from './types.js';

/** Option values keyed by camelCase name, before they are known to be of their command's types. */
type Values = Record<string, unknown>;

export interface PresetResult {
  config: Values;
  errors: string[];
  warnings: string[];
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

/** The rule a value of an option must pass (config-fields' rules: one message style for every check). */
function optionRule(spec: OptionSpec): Rule {
  switch (spec.type) {
    case 'string':
      return { type: 'string', choices: spec.choices };
    case 'boolean':
      return { type: 'boolean' };
    case 'string[]':
      return { type: 'list', items: { type: 'string' } };
    case 'integer':
    case 'number':
      return { type: spec.type, min: spec.min, max: spec.max, above: spec.above };
  }
}

/** Checks one value against its option spec; returns an error text or undefined. */
export function checkValue(spec: OptionSpec, value: unknown): string | undefined {
  return checkRule(optionRule(spec), value);
}

/** Options of a command that resolution handles (CLI-only ones, like --json, are the CLI's). */
function resolvable(command: CommandName): OptionSpec[] {
  return optionsFor(command).filter((s) => s.scope !== 'cli');
}

/**
 * Validates a preset object for a command: unknown keys, keys a preset may not set, wrong types
 * and out-of-range values are all collected.
 */
export function validatePreset(raw: unknown, command: CommandName, source: string): PresetResult {
  const errors: string[] = [];
  const warnings: string[] = [];
  const config: Values = {};
  if (raw === null || raw === undefined) return { config, errors, warnings };
  if (typeof raw !== 'object' || Array.isArray(raw)) {
    return { config, errors: [`${source}: a preset must be a mapping of option names to values`], warnings };
  }
  const specs = new Map(resolvable(command).map((s) => [s.name, s]));
  for (const [key, value] of Object.entries(raw as Record<string, unknown>)) {
    if (key === 'command') {
      if (value !== command) errors.push(`${source}: key "command": this preset is for ${JSON.stringify(value)}, not "${command}"`);
      continue;
    }
    if (key === 'description') continue;
    const spec = specs.get(key);
    if (!spec) {
      errors.push(`${source}: key ${JSON.stringify(key)}: unknown option for painter ${command}`);
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

export function loadPreset(nameOrPath: string, command: CommandName): PresetResult {
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
export function defaultsFor<C extends CommandName>(command: C): Partial<CommandOptions[C]> {
  const out: Values = {};
  for (const s of resolvable(command)) if (s.default !== undefined) out[camel(s.name)] = s.default;
  return out as Partial<CommandOptions[C]>;
}

/**
 * Checks values a caller passed (flags, or a library call's options): an unknown name or a value
 * of the wrong type or range is an error naming the flag.
 */
export function checkPassed(command: CommandName, passed: Values): Values {
  const specs = new Map(resolvable(command).map((s) => [camel(s.name), s]));
  const out: Values = {};
  for (const [key, v] of Object.entries(passed)) {
    if (v === undefined) continue;
    const spec = specs.get(key);
    if (!spec) throw new UsageError(`unknown option "${key}" for painter ${command}`);
    const problem = checkValue(spec, v);
    if (problem) throw new UsageError(`--${spec.name} ${problem}`);
    out[key] = v;
  }
  return out;
}

/**
 * preset < options actually passed, without defaults: what the caller chose (`passed` holds only
 * the options given; the CLI gives yargs no defaults so that absence can be told apart from the
 * default value).
 */
export function chosenOptions<C extends CommandName>(command: C, passed: OptionInput<C>): OptionInput<C> {
  const flags = checkPassed(command, passed as Values);
  let preset: Values = {};
  const presetName = flags['preset'];
  if (typeof presetName === 'string') {
    const r = loadPreset(presetName, command);
    if (r.errors.length > 0) throw new PainterError(`invalid preset:\n  ${r.errors.join('\n  ')}`);
    preset = r.config;
  }
  return { ...preset, ...flags } as OptionInput<C>;
}

/** defaults < preset < options actually passed: the one place where checked values become the command's typed options. */
export function resolveConfig<C extends CommandName>(command: C, passed: OptionInput<C>): CommandOptions[C] {
  return { ...defaultsFor(command), ...chosenOptions(command, passed) } as CommandOptions[C];
}

/**
 * A command's options from untyped values (parsed flags): each known option that is present is
 * checked against its spec, so the result is the command's typed input.
 */
export function inputFrom<C extends CommandName>(command: C, values: Readonly<Record<string, unknown>>): OptionInput<C> {
  const present: Values = {};
  for (const s of resolvable(command)) {
    const v = values[camel(s.name)];
    if (v !== undefined) present[camel(s.name)] = v;
  }
  return checkPassed(command, present) as OptionInput<C>;
}
