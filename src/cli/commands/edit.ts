/** `painter edit IMAGE "PROMPT"`: image-to-image, masked edits and outpainting to PNG files with A1111-readable parameters. */
import { edit } from '../../app/edit.js';
import { inputFrom } from '../../options/resolve.js';
import { backendChoice, jsonFlag, positional, type Args } from '../args.js';
import { printJson, withSession } from '../run-hooks.js';

export async function editCommand(args: Args): Promise<void> {
  const json = jsonFlag(args);
  await withSession(json, undefined, async ({ hooks, progress }) => {
    const r = await edit({ ...inputFrom('edit', args), image: positional(args, 'image') ?? '', prompt: positional(args, 'prompt') ?? '', backend: backendChoice(args) }, hooks);
    if (json) {
      printJson({ files: r.files, mode: r.mode, width: r.width, height: r.height, timings: r.timings, backend: r.backend.name });
      return;
    }
    progress.succeed(`${r.files.length} image(s) in ${r.outDir}`);
    for (const f of r.files) process.stdout.write(`${f.file}\n`);
  });
}
