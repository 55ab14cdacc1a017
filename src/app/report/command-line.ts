/**
 * Command lines a report shows for copying: the training command a run's config.json records,
 * and the `painter generate` line that uses a run's result.
 */
import * as path from 'node:path';
import { camel, optionsFor } from '../../options/table.js';

/** A word for a POSIX shell: left bare when safe, else in single quotes. */
export function shellQuote(word: string): string {
  return /^[\w@%+=:,./-]+$/.test(word) ? word : `'${word.replace(/'/g, `'\\''`)}'`;
}

/** Options that say how one command ran, not what the run is: not part of the run's command line. */
const NOT_RECORDED = new Set(['resume', 'overwrite', 'force', 'json']);

/** The folder every file lies in (the deepest common one). */
export function commonFolder(files: readonly string[]): string | undefined {
  if (files.length === 0) return undefined;
  let dir = path.dirname(files[0]!);
  while (!files.every((f) => f === dir || f.startsWith(dir.endsWith(path.sep) ? dir : dir + path.sep))) {
    const up = path.dirname(dir);
    if (up === dir) break;
    dir = up;
  }
  return dir;
}

/**
 * The `painter invert|dreambooth` line of a run's config (options with the values the run
 * resolved), leaving out options at their default and those in `defaults` at the value given
 * there (paths painter filled in, such as the bundled model). undefined for a config of no
 * training command (a pretrain stage).
 */
export function trainingCommandLine(config: Record<string, unknown>, defaults: Record<string, unknown> = {}): string | undefined {
  const command = config['command'];
  if (command !== 'invert' && command !== 'dreambooth') return undefined;
  const words = ['painter', command];
  // The training images and those held out for the validation loss came from one folder.
  const images = ['images', 'heldOut'].flatMap((k) => (Array.isArray(config[k]) ? (config[k] as unknown[]).filter((f): f is string => typeof f === 'string') : []));
  const folder = commonFolder(images);
  if (folder !== undefined) words.push(shellQuote(folder));
  for (const spec of optionsFor(command)) {
    if (NOT_RECORDED.has(spec.name) || spec.scope === 'cli') continue;
    const key = camel(spec.name);
    const value = config[key];
    if (value === undefined || value === null) continue;
    if (JSON.stringify(value) === JSON.stringify(spec.default) || (key in defaults && JSON.stringify(value) === JSON.stringify(defaults[key]))) continue;
    if (spec.type === 'boolean') {
      words.push(value === true ? `--${spec.name}` : `--no-${spec.name}`);
    } else if (Array.isArray(value)) {
      for (const v of value) words.push(`--${spec.name}`, shellQuote(String(v)));
    } else {
      words.push(`--${spec.name}`, shellQuote(String(value)));
    }
  }
  return words.join(' ');
}

/** What a run's result is, for the generate line that uses it. */
export type ResultUse = { kind: 'embedding'; file: string } | { kind: 'lora'; file: string } | { kind: 'model'; dir: string };

/** `painter generate PROMPT …` with the result loaded (absolute paths: the line works from any folder). */
export function generateLine(prompt: string, use: ResultUse, baseModel?: string): string {
  const words = ['painter', 'generate', shellQuote(prompt)];
  if (use.kind === 'model') words.push('--model', shellQuote(use.dir));
  else if (baseModel !== undefined) words.push('--model', shellQuote(baseModel));
  if (use.kind === 'embedding') words.push('--embedding', shellQuote(use.file));
  if (use.kind === 'lora') words.push('--lora', shellQuote(use.file));
  return words.join(' ');
}
