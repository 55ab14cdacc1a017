/** `painter invert DIR --token "<cat>"`: Textual Inversion. */
import { invert } from '../../app/invert.js';
import { inputFrom } from '../../options/resolve.js';
import { backendChoice, jsonFlag, positional, type Args } from '../args.js';
import { printJson, STOPPING_TRAINING, withSession } from '../run-hooks.js';

export async function invertCommand(args: Args): Promise<void> {
  const json = jsonFlag(args);
  await withSession(json, STOPPING_TRAINING, async ({ hooks, progress }) => {
    const r = await invert({ ...inputFrom('invert', args), dir: positional(args, 'dir'), backend: backendChoice(args) }, hooks);
    progress.succeed(`learned ${r.token} in ${r.steps} steps → ${r.output}`);
    if (json) {
      printJson({ output: r.output, installed: r.installed, runDir: r.runDir, steps: r.steps, finalLoss: r.finalLoss });
      return;
    }
    process.stderr.write(`painter: installed as ${r.installed}; "painter generate" uses it whenever a prompt says ${r.trigger}\n`);
    process.stdout.write(`${r.output}\n`);
  });
}
