#!/usr/bin/env node
// Contact sheet of painter-mini's world (or, with --cat-photos, the quick-start fixture).
// Usage: npm run build && node scripts/world-sample.mjs [--out DIR] [--n 24] [--seed 0] [--held-out]
import * as path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const { main } = await import(pathToFileURL(path.join(here, '..', 'dist', 'recipes', 'painter-mini', 'sample-cli.js')).href);
const { isPainterError } = await import(pathToFileURL(path.join(here, '..', 'dist', 'src', 'errors.js')).href);
try {
  console.error(await main(process.argv.slice(2)));
} catch (e) {
  if (isPainterError(e)) {
    console.error(`error: ${e.message}`);
    process.exitCode = e.exitCode;
  } else throw e;
}
