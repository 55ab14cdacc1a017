/**
 * `bench`: the speed benchmark of bench/run-bench.ts on a model (default: the bundled tiny-sd-a),
 * optionally twice, with painter's fast kernels off and then on.
 */
import * as path from 'node:path';
import { setFastKernels } from '../backend/kernels.js';
import { useBackend, type BackendChoice, type BackendReport } from '../backend/select.js';
import { BENCH_ITEMS, runBench, type BenchItem, type BenchReport } from '../bench/run-bench.js';
import { disposeModel } from '../core/model.js';
import { PainterError } from '../errors.js';
import { loadModel } from '../io/load-model.js';
import { resolveConfig } from '../options/resolve.js';
import type { OptionInput } from '../options/types.js';
import { tinyModelPath } from '../io/paths.js';

export type BenchInput = OptionInput<'bench'> & { backend?: BackendChoice };

export interface BenchResult {
  report: BenchReport;
  /** With `compare`: the same suite with painter's fast kernels off. */
  fastKernelsOff?: BenchReport;
  model: string;
  backend: BackendReport;
}

/** --only as given: repeated or comma-separated item names. */
function benchItems(only: string[] | undefined): BenchItem[] | undefined {
  if (only === undefined) return undefined;
  const list = only.flatMap((s) => s.split(','));
  const known = new Set<string>(BENCH_ITEMS);
  const bad = list.filter((s) => !known.has(s));
  if (bad.length > 0) throw new PainterError(`--only ${bad.join(',')}: unknown item; choose from ${BENCH_ITEMS.join(', ')}`);
  return BENCH_ITEMS.filter((i) => list.includes(i));
}

/** `progress` is told what runs next (" (fast kernels off): unet-train-step: …"). */
export async function benchmark(input: BenchInput, progress: (what: string) => void = () => {}): Promise<BenchResult> {
  const { backend: choice, ...passed } = input;
  const o = resolveConfig('bench', passed);
  const backend = await useBackend(choice);
  const modelDir = path.resolve(o.model ?? tinyModelPath());
  const items = benchItems(o.only);
  const model = loadModel(modelDir);
  const run = (label: string) =>
    runBench(model, { runs: o.runs, warmup: o.warmup, ...(items ? { items } : {}), profile: o.profile, onProgress: (what) => progress(`${label}: ${what}`) });
  try {
    let fastKernelsOff: BenchReport | undefined;
    if (o.compare) {
      setFastKernels(false);
      try {
        fastKernelsOff = await run(' (fast kernels off)');
      } finally {
        setFastKernels(true);
      }
    }
    return { report: await run(''), fastKernelsOff, model: modelDir, backend };
  } finally {
    disposeModel(model);
  }
}
