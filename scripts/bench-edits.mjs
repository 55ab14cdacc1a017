#!/usr/bin/env node
// painter-mini's editing benchmark: masked edits and Prompt-to-Prompt swaps scored by the
// attribute classifier; prints the table.
// Usage: npm run bench:edits -- [--seeds N] [--steps N] [--guidance X] [--cross-replace F] [--self-replace F]
//   [--blend-threshold T[,T…]] [--embedding FILE [--token T]] [--model DIR] [--out DIR]
import { runDistMain } from './run-dist.mjs';

await runDistMain(
  'recipes/painter-mini/bench-edits.js',
  `painter-mini editing benchmark: a masked recolouring (Blended Latent Diffusion) and a Prompt-to-Prompt
object swap per scene (plain, and with --local-blend of the swapped words at each --blend-threshold,
default 0.3), scored by fixtures/mini-classifier.
Usage: npm run bench:edits -- [--seeds N] [--steps N] [--guidance X] [--cross-replace F] [--self-replace F]
  [--blend-threshold T[,T…]] [--embedding FILE [--token T]] [--model DIR] [--out DIR]
Results go to --out (default runs/bench-edits): results.json, table.md, edits.png.`,
);
