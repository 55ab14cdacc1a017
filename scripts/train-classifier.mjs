#!/usr/bin/env node
// Trains painter-mini's attribute classifier and saves it (default runs/classifier).
// Usage: npm run build && node scripts/train-classifier.mjs [--out DIR] [--steps N] [--batch N]
//   [--size 32|64] [--widths 16,32,64] [--lr 0.01] [--seed 0] [--blur PX] [--noise LEVELS] [--test N] [--backend wasm]
import { runDistMain } from './run-dist.mjs';

await runDistMain(
  'recipes/painter-mini/train-classifier.js',
  `Trains painter-mini's attribute classifier and saves it (default runs/classifier).
Usage: npm run train:classifier -- [--out DIR] [--steps N] [--batch N] [--size 32|64] [--widths 16,32,64]
  [--lr 0.01] [--seed 0] [--blur PX] [--noise LEVELS] [--test N] [--backend B]`,
);
