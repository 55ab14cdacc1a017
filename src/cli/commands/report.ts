/** `painter report DIR`: a training run's report page, or a gallery of generated PNGs, as DIR/index.html. */
import { report } from '../../app/report/report-folder.js';
import { jsonFlag, positional, type Args } from '../args.js';
import { printJson } from '../run-hooks.js';

export async function reportCommand(args: Args): Promise<void> {
  const r = await report(positional(args, 'dir') ?? '');
  if (jsonFlag(args)) {
    printJson(r);
    return;
  }
  const what =
    r.kind === 'run'
      ? `run report of ${r.count} logged step(s)${r.finished ? '' : ', not finished'}`
      : `gallery of ${r.count} image(s), ${r.prompts} prompt(s)`;
  process.stderr.write(`painter: ${what}\n`);
  process.stdout.write(`${r.file}\n`);
}
