/** `painter invert DIR --token "<cat>"`: Textual Inversion. */
import { invert } from '../../app/invert.js';
import { inputFrom } from '../../options/resolve.js';
import { backendChoice, jsonFlag, positional, type Args } from '../args.js';
import { printJson, STOPPING_TRAINING, withSession } from '../run-hooks.js';

export async function invertCommand(args: Args): Promise<void> {
  const json = jsonFlag(args);
  await withSession(json, STOPPING_TRAINING, async ({ hooks, progress }) => {
    const r = await invert({ ...inputFrom('invert', args), dir: positional(args, 'dir'), backend: backendChoice(args) }, hooks);
    const several = r.embeddings.length > 1;
    progress.succeed(`learned ${r.embeddings.map((e) => e.token).join(', ')} in ${r.steps} steps → ${several ? r.runDir : r.output}`);
    if (json) {
      const embeddings = several ? { embeddings: r.embeddings.map(({ token, output, installed }) => ({ token, output, installed })) } : {};
      printJson({ output: r.output, installed: r.installed, runDir: r.runDir, steps: r.steps, finalLoss: r.finalLoss, ...embeddings, ...(r.concepts && { concepts: r.concepts }) });
      return;
    }
    for (const e of r.embeddings) process.stderr.write(`painter: installed as ${e.installed}; "painter generate" uses it whenever a prompt says ${e.trigger}\n`);
    process.stdout.write(`${r.embeddings.map((e) => e.output).join('\n')}\n`);
  });
}
