/** `painter info [FILE]`: versions, compute backend and threads, what a model holds, or a PNG's parameters. */
import { pngParameters, systemInfo } from '../../app/info.js';
import { describeBackend } from '../../backend/select.js';
import { inputFrom } from '../../options/resolve.js';
import { backendChoice, jsonFlag, positional, type Args } from '../args.js';
import { formatInfoReport } from '../format/info-report.js';
import { printJson } from '../run-hooks.js';

export async function infoCommand(args: Args): Promise<void> {
  const json = jsonFlag(args);
  const file = positional(args, 'file');
  const { model } = inputFrom('info', args);
  if (file && /\.png$/i.test(file) && model === undefined) {
    const png = pngParameters(file);
    if (json) printJson({ file, parameters: png.parameters, text: png.text });
    else process.stdout.write(png.text + '\n');
    return;
  }
  const { backendReport, ...report } = await systemInfo(model ?? file, backendChoice(args));
  if (json) printJson(report);
  else process.stdout.write(formatInfoReport(report, describeBackend(backendReport)).join('\n') + '\n');
}
