/**
 * The model a command loads when `--model` is not given: painter-mini, the small SD-shaped model
 * that ships in the package (fixtures/painter-mini, built by `npm run pretrain:mini`). The name
 * `painter-mini` also selects it, unless a folder of that name exists where painter runs.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { PainterError } from '../errors.js';
import { packageRoot } from './config.js';

export const BUNDLED_MODEL = 'painter-mini';

export function bundledModelPath(): string {
  return path.join(packageRoot(), 'fixtures', BUNDLED_MODEL);
}

/** The path to load for a `--model` value (absent → the bundled model). */
export function resolveModelPath(value: unknown): string {
  if (typeof value === 'string' && value !== '' && !(value === BUNDLED_MODEL && !fs.existsSync(value))) return value;
  const bundled = bundledModelPath();
  if (!fs.existsSync(path.join(bundled, 'model_index.json'))) {
    throw new PainterError(
      `the bundled model ${bundled} is missing (a source checkout builds it with "npm run pretrain:mini"); pass --model with a diffusers folder or a single-file checkpoint`,
    );
  }
  return bundled;
}
