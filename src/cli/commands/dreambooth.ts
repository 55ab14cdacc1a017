/** `painter dreambooth DIR --class dog`: DreamBooth, full or LoRA, with prior preservation. */
import { dreambooth } from '../../app/dreambooth.js';
import { inputFrom } from '../../options/resolve.js';
import { backendChoice, jsonFlag, positional, type Args } from '../args.js';
import { printJson, STOPPING_TRAINING, withSession } from '../run-hooks.js';

export async function dreamboothCommand(args: Args): Promise<void> {
  const json = jsonFlag(args);
  await withSession(json, STOPPING_TRAINING, async ({ hooks, progress }) => {
    const r = await dreambooth({ ...inputFrom('dreambooth', args), dir: positional(args, 'dir'), backend: backendChoice(args) }, hooks);
    const what = r.concepts && r.concepts.length > 1 ? `${r.concepts.length} concepts` : `"${r.instancePrompt}"`;
    progress.succeed(`trained ${what} in ${r.steps} steps → ${r.output}`);
    if (json) {
      const { output, runDir, steps, finalLoss, identifier, instancePrompt, classImages, classes, concepts } = r;
      printJson({ output, runDir, steps, finalLoss, identifier, instancePrompt, classImages, ...(classes && { classes }), ...(concepts && { concepts }) });
      return;
    }
    process.stdout.write(`${r.output}\n`);
  });
}
