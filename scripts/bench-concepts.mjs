#!/usr/bin/env node
// painter-mini's concept benchmark: VAE PSNR, prompt fidelity, Textual Inversion (plain and with
// masked loss), DreamBooth (with/without prior preservation) and pivotal tuning, scored by the
// attribute classifier; prints the table and writes it with the sample grids as a page (index.html,
// recipes/painter-mini/bench-page.ts).
// Usage: npm run bench:concepts -- [--seed N] [--model DIR] [--out DIR] [--samples N] [--prompts N] ...
import { runDistMain } from './run-dist.mjs';

await runDistMain(
  'recipes/painter-mini/bench-concepts.js',
  `painter-mini concept benchmark: VAE PSNR, prompt fidelity, Textual Inversion vs its baseline,
DreamBooth with/without prior preservation (subject fidelity, PRES), pivotal tuning (LoRA + embedding),
Textual Inversion with masked loss (subject masks), scored by fixtures/mini-classifier.
Usage: npm run bench:concepts -- [--seed N] [--model DIR] [--classifier DIR] [--out DIR] [--samples N]
  [--prompts N] [--psnr-scenes N] [--sample-steps N] [--guidance X] [--ti-steps N] [--ti-lr X]
  [--db-steps N] [--db-lr X] [--db-mode full|lora] [--db-frozen-text-encoder] [--class-images N]
  [--pivotal-steps N] [--pivotal-lr X] [--pivotal-rank N] [--pivotal-ti-lr X] [--pivotal-ti-fraction P]
  [--only vae,prompts,ti,dreambooth,pivotal,masked] [--json] [--backend B]
Threads: PAINTER_THREADS=N (default every core).
The seed picks the subject and draws every photo, prompt and sample; results go to --out
(default runs/bench-concepts-seed<N>): results.json, table.md, sample grids and index.html (all of them as a page).`,
);
