#!/usr/bin/env node
// Pretrains painter-mini (VAE, then text encoder + UNet) and saves it (default fixtures/painter-mini).
// Usage: npm run build && node scripts/pretrain-mini.mjs [--out DIR] [--run-dir DIR] [--seed N]
//   [--vae-steps N] [--steps N] [--vae-batch N] [--batch N] [--vae-lr X] [--lr X]
//   [--checkpoint-every N] [--size 64|32] [--resume] [--backend wasm]
// Ctrl-C saves a checkpoint of the running stage; run again with --resume to continue.
import * as path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import sharp from 'sharp';

// One thread per image: the machines are shared, and rendering is a small part of a step.
sharp.concurrency(1);
const here = path.dirname(fileURLToPath(import.meta.url));
const { main } = await import(pathToFileURL(path.join(here, '..', 'dist', 'src', 'mini', 'pretrain.js')).href);
const { isPainterError } = await import(pathToFileURL(path.join(here, '..', 'dist', 'src', 'errors.js')).href);
try {
  console.error(await main(process.argv.slice(2), (line) => console.error(line)));
} catch (e) {
  if (isPainterError(e)) {
    console.error(`error: ${e.message}`);
    process.exitCode = e.exitCode;
  } else throw e;
}
