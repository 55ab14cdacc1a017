/** `painter ddim-invert IMAGE --prompt "…"`: the noise from which DDIM regenerates the picture. */
import { ddimInvertImage } from '../../app/ddim-invert.js';
import { inputFrom } from '../../options/resolve.js';
import { backendChoice, jsonFlag, positional, type Args } from '../args.js';
import { printJson, withSession } from '../run-hooks.js';

export async function ddimInvertCommand(args: Args): Promise<void> {
  const json = jsonFlag(args);
  await withSession(json, undefined, async ({ hooks, progress }) => {
    const r = await ddimInvertImage({ ...inputFrom('ddim-invert', args), image: positional(args, 'image') ?? '', backend: backendChoice(args) }, hooks);
    if (json) {
      printJson({ file: r.file, width: r.width, height: r.height, regenerate: r.regenerate, timings: r.timings, backend: r.backend.name });
      return;
    }
    progress.succeed(`inverted noise in ${r.file}; regenerate with: ${r.regenerate}`);
    process.stdout.write(`${r.file}\n`);
  });
}
