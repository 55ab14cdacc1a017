import * as fs from 'node:fs';
import * as path from 'node:path';
import { packageRoot } from './config.js';

export function packageVersion(): string {
  const pkg = JSON.parse(fs.readFileSync(path.join(packageRoot(), 'package.json'), 'utf8')) as { version: string };
  return pkg.version;
}
