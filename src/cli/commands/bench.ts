/**
 * `painter bench`: how fast this machine trains and generates with a model on the selected
 * backend (default model: the bundled tiny-sd-a pipeline). --compare runs the suite twice, with
 * painter's fast kernels off and on. Progress goes to stderr, the report to stdout.
 */
import * as path from 'node:path';
import { benchmark } from '../../app/bench.js';
import { describeBackend } from '../../backend/select.js';
import { inputFrom } from '../../options/resolve.js';
import { backendChoice, jsonFlag, type Args } from '../args.js';
import { formatBenchComparison, formatBenchReport } from '../format/bench-report.js';
import { printJson } from '../run-hooks.js';

export async function benchCommand(args: Args): Promise<void> {
  const r = await benchmark({ ...inputFrom('bench', args), backend: backendChoice(args) }, (what) => process.stderr.write(`bench${what}\n`));
  const backend = { name: r.backend.name, package: r.backend.package, gpu: r.backend.gpu };
  if (jsonFlag(args)) {
    printJson({ ...r.report, backend, model: r.model, ...(r.fastKernelsOff ? { fastKernelsOff: r.fastKernelsOff } : {}) });
    return;
  }
  process.stdout.write(formatBenchReport(r.report, describeBackend(r.backend), path.resolve(r.model)) + (r.fastKernelsOff ? formatBenchComparison(r.fastKernelsOff, r.report) : ''));
}
