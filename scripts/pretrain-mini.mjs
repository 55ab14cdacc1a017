#!/usr/bin/env node
// Pretrains painter-mini (VAE, text encoder, then UNet against the frozen text encoder, each at 32×32 then 64×64) and saves it (default fixtures/painter-mini).
// Usage: npm run build && node scripts/pretrain-mini.mjs [--out DIR] [--run-dir DIR] [--seed N]
//   [--vae-steps N] [--steps N] [--vae-batch N] [--batch N] [--vae-lr X] [--lr X]
//   [--checkpoint-every N] [--text-steps N] [--size 32|64] [--hires-steps N] [--vae-hires-steps N]
//   [--decoder-steps N] [--caption-omit P] [--jobs N] [--resume] [--snapshot DIR] [--backend wasm]
// Ctrl-C saves a checkpoint of the running stage; run again with --resume to continue.
import { runDistMain } from './run-dist.mjs';

await runDistMain(
  'recipes/painter-mini/pretrain-cli.js',
  `Pretrains painter-mini (VAE, text encoder, then UNet against the frozen text encoder, each at 32×32 then 64×64) and saves it (default fixtures/painter-mini).
Usage: npm run pretrain:mini -- [--out DIR] [--run-dir DIR] [--seed N] [--vae-steps N] [--steps N]
  [--vae-batch N] [--batch N] [--vae-lr X] [--lr X] [--checkpoint-every N] [--text-steps N] [--size 32|64]
  [--hires-steps N] [--vae-hires-steps N] [--decoder-steps N] [--caption-omit P] [--jobs N] [--resume] [--snapshot DIR] [--backend B]
Ctrl-C saves a checkpoint of the running stage; run again with --resume to continue.
--jobs 2 (the default on 2 or more cores) trains stage 5 in a second process beside stages 2–4.
--snapshot DIR writes the latest diffusion checkpoint as a model folder to try while training goes on.`,
);
