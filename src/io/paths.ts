/**
 * Where painter's own files are: the package root, the bundled presets, and the model a command
 * loads when `--model` is not given: painter-mini, the small SD-shaped model that ships in the
 * package (fixtures/painter-mini, built by `npm run pretrain:mini`). The name `painter-mini` also
 * selects it, unless a folder of that name exists where painter runs.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { PainterError } from '../errors.js';

export const BUNDLED_MODEL = 'painter-mini';

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

export function packageVersion(): string {
  const pkg = JSON.parse(fs.readFileSync(path.join(packageRoot(), 'package.json'), 'utf8')) as { version: string };
  return pkg.version;
}

export function presetsDir(): string {
  return path.join(packageRoot(), 'presets');
}

export function bundledModelPath(): string {
  return path.join(packageRoot(), 'fixtures', BUNDLED_MODEL);
}

/** The reference pipeline of the parity tests, which `painter bench` measures by default. */
export function tinyModelPath(): string {
  return path.join(packageRoot(), 'fixtures', 'tiny-sd-a');
}

/** The path to load for a `--model` value (absent → the bundled model). */
export function resolveModelPath(value: string | undefined): string {
  if (value !== undefined && value !== '' && !(value === BUNDLED_MODEL && !fs.existsSync(value))) return value;
  const bundled = bundledModelPath();
  if (!fs.existsSync(path.join(bundled, 'model_index.json'))) {
    throw new PainterError(
      `the bundled model ${bundled} is missing (a source checkout builds it with "npm run pretrain:mini"); pass --model with a diffusers folder or a single-file checkpoint`,
    );
  }
  return bundled;
}
