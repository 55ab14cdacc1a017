#!/usr/bin/env node
// painter-mini's concept benchmark: VAE PSNR, prompt fidelity, Textual Inversion and DreamBooth
// (with/without prior preservation) scored by the attribute classifier; prints the table.
// Usage: npm run bench:concepts -- [--seed N] [--model DIR] [--out DIR] [--samples N] [--prompts N] ...
import { runDistMain } from './run-dist.mjs';

await runDistMain(
  'recipes/painter-mini/bench-concepts.js',
  `painter-mini concept benchmark: VAE PSNR, prompt fidelity, Textual Inversion vs its baseline,
DreamBooth with/without prior preservation (subject fidelity, PRES), scored by fixtures/mini-classifier.
Usage: npm run bench:concepts -- [--seed N] [--model DIR] [--classifier DIR] [--out DIR] [--samples N]
  [--prompts N] [--psnr-scenes N] [--sample-steps N] [--guidance X] [--ti-steps N] [--ti-lr X]
  [--db-steps N] [--db-lr X] [--db-mode full|lora] [--db-frozen-text-encoder] [--class-images N] [--only vae,prompts,ti,dreambooth]
  [--json] [--backend B]
The seed picks the subject and draws every photo, prompt and sample; results go to --out
(default runs/bench-concepts-seed<N>): results.json, table.md and sample grids.`,
);
