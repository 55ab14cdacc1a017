/** `painter info [FILE]`: versions, compute backend and threads, or what a model, PNG, embedding or LoRA holds. */
import { fileInfo, systemInfo } from '../../app/info.js';
import { describeBackend } from '../../backend/select.js';
import { inputFrom } from '../../options/resolve.js';
import { backendChoice, jsonFlag, positional, type Args } from '../args.js';
import { fileInfoJson, formatFileInfo, formatInfoReport } from '../format/info-report.js';
import { printJson } from '../run-hooks.js';

export async function infoCommand(args: Args): Promise<void> {
  const json = jsonFlag(args);
  const file = positional(args, 'file');
  const { model } = inputFrom('info', args);
  if (file !== undefined && model === undefined) {
    const info = await fileInfo(file, backendChoice(args));
    if (json) printJson(fileInfoJson(info));
    else process.stdout.write(formatFileInfo(info).join('\n') + '\n');
    return;
  }
  const { backendReport, ...report } = await systemInfo(model, backendChoice(args));
  if (json) printJson(report);
  else process.stdout.write(formatInfoReport(report, describeBackend(backendReport)).join('\n') + '\n');
}
