#!/usr/bin/env node
// Trains painter-mini's attribute classifier and saves it (default runs/classifier).
// Usage: npm run build && node scripts/train-classifier.mjs [--out DIR] [--steps N] [--batch N]
//   [--size 32|64] [--widths 16,32,64] [--lr 0.01] [--seed 0] [--test N] [--backend wasm]
import * as path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import sharp from 'sharp';

// One core: the machines are shared, and rendering is a small part of a step.
sharp.concurrency(1);
const here = path.dirname(fileURLToPath(import.meta.url));
const { main } = await import(pathToFileURL(path.join(here, '..', 'dist', 'src', 'mini', 'train-classifier.js')).href);
const { isPainterError } = await import(pathToFileURL(path.join(here, '..', 'dist', 'src', 'errors.js')).href);
try {
  console.error(await main(process.argv.slice(2), (line) => console.error(line)));
} catch (e) {
  if (isPainterError(e)) {
    console.error(`error: ${e.message}`);
    process.exitCode = e.exitCode;
  } else throw e;
}
