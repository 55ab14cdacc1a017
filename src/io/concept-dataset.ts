/**
 * Datasets of several concepts, as kohya's sd-scripts users prepare them:
 *  - a folder of concept folders named `N_text` (kohya's DreamBooth layout, train_util.py
 *    DreamBoothDataset: `10_sks dog` holds images repeated 10 times per epoch, its text the
 *    instance prompt — for Textual Inversion, the token the concept learns);
 *  - a YAML dataset file (--dataset) listing concepts: folder (relative to the file), repeats,
 *    prompt (DreamBooth) or token and init_token (Textual Inversion), class, caption_extension.
 * Both are checked as presets are (options/resolve.ts): every problem at once, naming the file
 * or folder and the key.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import yaml from 'js-yaml';
import { checkRule, type Rule } from '../core/config-fields.js';
import { placeholderProblem } from '../core/embeddings.js';
import { PainterError } from '../errors.js';
import { scanImageFolder } from './dataset.js';

export type DatasetCommand = 'invert' | 'dreambooth';

export interface Concept {
  /** How logs name it: the concept folder's name. */
  name: string;
  /** Absolute path of its images' folder. */
  folder: string;
  /** Times each of its images appears per epoch (kohya's num_repeats). */
  repeats: number;
  /** DreamBooth: the instance prompt ({identifier} and {class} are filled in). */
  prompt?: string;
  /** DreamBooth: its class (default: --class). */
  className?: string;
  /** Textual Inversion: the token it learns, and the word that token starts from. */
  token?: string;
  initToken?: string;
  /** Caption file extensions looked for beside its images, without the dot (default: txt, then caption). */
  captionExtensions?: string[];
}

export interface ConceptDataset {
  /** The dataset folder, or the YAML file. */
  source: string;
  kind: 'folders' | 'file';
  concepts: Concept[];
}

/** kohya's concept folder name: repeats, "_", then the prompt (or token). */
const CONCEPT_FOLDER = /^(\d+)_(.+)$/;

/** What a concept folder's or entry's text is for a command. */
function textKey(command: DatasetCommand): 'token' | 'prompt' {
  return command === 'invert' ? 'token' : 'prompt';
}

function tokenProblem(token: string): string | undefined {
  const p = placeholderProblem(token);
  return p && `token ${JSON.stringify(token)}: ${p}`;
}

/**
 * A folder read as a kohya concept dataset: one that holds no image of its own and at least one
 * subfolder named `N_text`. Undefined for any other folder (read as a plain image folder, its
 * subfolders included). Folders not so named are skipped with a warning, as kohya skips them.
 */
export function folderDataset(dir: string, command: DatasetCommand, warn: (m: string) => void = () => undefined): ConceptDataset | undefined {
  if (!fs.existsSync(dir) || !fs.statSync(dir).isDirectory()) return undefined;
  if (scanImageFolder(dir, undefined, false).images.length > 0) return undefined;
  const subfolders = fs
    .readdirSync(dir, { withFileTypes: true })
    .filter((e) => !e.name.startsWith('.') && (e.isDirectory() || (e.isSymbolicLink() && fs.statSync(path.join(dir, e.name)).isDirectory())))
    .map((e) => e.name)
    .sort();
  if (!subfolders.some((name) => CONCEPT_FOLDER.test(name))) return undefined;
  const errors: string[] = [];
  const concepts: Concept[] = [];
  for (const name of subfolders) {
    const m = CONCEPT_FOLDER.exec(name);
    const folder = path.resolve(dir, name);
    if (!m) {
      warn(`skipping ${folder}: not a concept folder (kohya's N_${textKey(command)} naming, e.g. "10_${command === 'invert' ? '<cat>' : 'sks dog'}")`);
      continue;
    }
    const repeats = Number(m[1]);
    const text = m[2]!.trim();
    if (repeats < 1) errors.push(`${folder}: ${repeats} repeats; name it "1_${text}" or more`);
    else if (text === '') errors.push(`${folder}: no ${textKey(command)} after the repeats`);
    else if (command === 'invert') {
      const problem = tokenProblem(text);
      if (problem) errors.push(`${folder}: ${problem}`);
      else concepts.push({ name, folder, repeats, token: text });
    } else concepts.push({ name, folder, repeats, prompt: text });
  }
  if (errors.length > 0) throw new PainterError(`invalid dataset folder ${dir}:\n  ${errors.join('\n  ')}`);
  return { source: path.resolve(dir), kind: 'folders', concepts };
}

interface EntryKey {
  rule: Rule;
  /** The command the key is for (both when absent). */
  only?: DatasetCommand;
}

/** The keys of a dataset file's concept entry. */
const ENTRY_KEYS: Record<string, EntryKey> = {
  folder: { rule: { type: 'string' } },
  repeats: { rule: { type: 'integer', min: 1 } },
  caption_extension: { rule: { type: 'string' } },
  prompt: { rule: { type: 'string' }, only: 'dreambooth' },
  class: { rule: { type: 'string' }, only: 'dreambooth' },
  token: { rule: { type: 'string' }, only: 'invert' },
  init_token: { rule: { type: 'string' }, only: 'invert' },
};

export interface DatasetResult {
  dataset: ConceptDataset;
  errors: string[];
}

/** Checks one entry of `concepts:`; its problems go to `errors`, prefixed with where they are. */
function validateEntry(raw: unknown, where: string, base: string, command: DatasetCommand, errors: string[]): Concept | undefined {
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) {
    errors.push(`${where}: must be a mapping with a folder and a ${textKey(command)}, got ${JSON.stringify(raw)}`);
    return undefined;
  }
  const entry = raw as Record<string, unknown>;
  const before = errors.length;
  for (const [key, value] of Object.entries(entry)) {
    const spec = ENTRY_KEYS[key];
    if (!spec) errors.push(`${where} key ${JSON.stringify(key)}: unknown key (a concept takes ${Object.keys(ENTRY_KEYS).filter((k) => ENTRY_KEYS[k]!.only !== (command === 'invert' ? 'dreambooth' : 'invert')).join(', ')})`);
    else if (spec.only && spec.only !== command) errors.push(`${where} key "${key}": is for painter ${spec.only}; a painter ${command} concept takes "${textKey(command)}"`);
    else {
      const problem = checkRule(spec.rule, value);
      if (problem) errors.push(`${where} key "${key}" ${problem}`);
    }
  }
  for (const key of ['folder', textKey(command)]) {
    if (!(key in entry)) errors.push(`${where}: key "${key}" is missing`);
    else if (typeof entry[key] === 'string' && (entry[key] as string).trim() === '') errors.push(`${where} key "${key}": must not be empty`);
  }
  const folder = typeof entry['folder'] === 'string' && entry['folder'] !== '' ? path.resolve(base, entry['folder']) : undefined;
  if (folder !== undefined && (!fs.existsSync(folder) || !fs.statSync(folder).isDirectory())) {
    errors.push(`${where} key "folder": ${folder} is ${fs.existsSync(folder) ? 'not a folder' : 'not found'} (a folder is relative to the dataset file)`);
  }
  const token = command === 'invert' && typeof entry['token'] === 'string' ? entry['token'].trim() : undefined;
  const problem = token ? tokenProblem(token) : undefined;
  if (problem) errors.push(`${where} key "token": ${problem}`);
  if (errors.length > before) return undefined;
  const ext = entry['caption_extension'] as string | undefined;
  return {
    name: path.basename(folder!),
    folder: folder!,
    repeats: (entry['repeats'] as number | undefined) ?? 1,
    ...(command === 'dreambooth' ? { prompt: (entry['prompt'] as string).trim() } : { token: token! }),
    ...(typeof entry['class'] === 'string' && entry['class'].trim() !== '' && { className: entry['class'].trim() }),
    ...(typeof entry['init_token'] === 'string' && { initToken: entry['init_token'] }),
    ...(ext !== undefined && { captionExtensions: [ext.replace(/^\./, '')] }),
  };
}

/** Validates a parsed dataset file: every problem is collected, each naming the file and key. */
export function validateDataset(raw: unknown, command: DatasetCommand, file: string): DatasetResult {
  const errors: string[] = [];
  const dataset: ConceptDataset = { source: path.resolve(file), kind: 'file', concepts: [] };
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) {
    return { dataset, errors: [`${file}: a dataset file must be a mapping with a "concepts:" list`] };
  }
  for (const key of Object.keys(raw)) if (key !== 'concepts' && key !== 'description') errors.push(`${file}: key ${JSON.stringify(key)}: unknown key (a dataset file has "concepts:")`);
  const list = (raw as Record<string, unknown>)['concepts'];
  if (!Array.isArray(list) || list.length === 0) {
    errors.push(`${file}: key "concepts" must be a non-empty list of concepts, got ${list === undefined ? 'nothing' : JSON.stringify(list)}`);
    return { dataset, errors };
  }
  const base = path.dirname(path.resolve(file));
  list.forEach((entry, i) => {
    const concept = validateEntry(entry, `${file}: concepts[${i}]`, base, command, errors);
    if (concept) dataset.concepts.push(concept);
  });
  // One token, one starting point: two entries may share a token (they train one embedding), not disagree on its init_token.
  const inits = new Map<string, string | undefined>();
  list.forEach((entry, i) => {
    const c = entry as Record<string, unknown> | null;
    if (command !== 'invert' || typeof c?.['token'] !== 'string') return;
    const token = c['token'].trim();
    const init = typeof c['init_token'] === 'string' ? c['init_token'] : undefined;
    if (inits.has(token) && inits.get(token) !== init) errors.push(`${file}: concepts[${i}] key "init_token": the token ${JSON.stringify(token)} has another init_token in an earlier entry; give it one`);
    else inits.set(token, init);
  });
  return { dataset, errors };
}

/** Reads and validates a dataset file; any problem is one PainterError listing them all. */
export function loadDatasetFile(file: string, command: DatasetCommand): ConceptDataset {
  if (!fs.existsSync(file)) throw new PainterError(`--dataset ${file}: file not found`);
  let raw: unknown;
  try {
    raw = yaml.load(fs.readFileSync(file, 'utf8'), { filename: file });
  } catch (e) {
    throw new PainterError(`${file}: not valid YAML (${(e as Error).message.split('\n')[0]})`);
  }
  const { dataset, errors } = validateDataset(raw, command, file);
  if (errors.length > 0) throw new PainterError(`invalid dataset:\n  ${errors.join('\n  ')}`);
  return dataset;
}

/** The tokens a Textual Inversion dataset learns, each once, with its init token (in order of first appearance). */
export function datasetTokens(dataset: ConceptDataset): { token: string; initToken?: string }[] {
  const seen = new Map<string, { token: string; initToken?: string }>();
  for (const c of dataset.concepts) if (c.token !== undefined && !seen.has(c.token)) seen.set(c.token, { token: c.token, ...(c.initToken !== undefined && { initToken: c.initToken }) });
  return [...seen.values()];
}
