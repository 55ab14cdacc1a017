/** `painter convert IN OUT`: a model, embedding or LoRA in another layout. */
import { convert } from '../../app/convert.js';
import { formatBytes } from '../../app/memory-check.js';
import { inputFrom } from '../../options/resolve.js';
import { backendChoice, jsonFlag, positional, type Args } from '../args.js';
import { printJson } from '../run-hooks.js';

export async function convertCommand(args: Args): Promise<void> {
  const r = await convert({ ...inputFrom('convert', args), input: positional(args, 'in') ?? '', output: positional(args, 'out') ?? '', backend: backendChoice(args) });
  if (jsonFlag(args)) {
    printJson(r);
    return;
  }
  const dtypes = Object.entries(r.dtypes).map(([d, n]) => `${n} ${d}`).join(', ');
  process.stderr.write(`painter: ${r.from} → ${r.to}: ${r.tensors} tensors (${dtypes}), ${formatBytes(r.bytes)}\n`);
  if (r.leftOut.length > 0) process.stderr.write(`painter: left out ${r.leftOut.length} entries no diffusers model holds, e.g. "${r.leftOut[0]}"\n`);
  process.stdout.write(`${r.output}\n`);
}
