/** `painter generate "PROMPT"`: text-to-image to PNG files with A1111-readable parameters. */
import { generate } from '../../app/generate.js';
import { inputFrom } from '../../options/resolve.js';
import { backendChoice, jsonFlag, positional, type Args } from '../args.js';
import { printJson, withSession } from '../run-hooks.js';

export async function generateCommand(args: Args): Promise<void> {
  const json = jsonFlag(args);
  await withSession(json, undefined, async ({ hooks, progress }) => {
    const r = await generate({ ...inputFrom('generate', args), prompt: positional(args, 'prompt') ?? '', backend: backendChoice(args) }, hooks);
    if (json) {
      printJson({ files: r.files, timings: r.timings, backend: r.backend.name });
      return;
    }
    progress.succeed(`${r.files.length} image(s) in ${r.outDir}`);
    for (const f of r.files) process.stdout.write(`${f.file}\n`);
  });
}
