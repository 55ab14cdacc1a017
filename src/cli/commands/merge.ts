/** `painter merge MODEL [B [C]] --out OUT`: checkpoints merged, LoRAs baked in. */
import { formatBytes } from '../../app/memory-check.js';
import { merge } from '../../app/merge.js';
import { inputFrom } from '../../options/resolve.js';
import { backendChoice, jsonFlag, positional, type Args } from '../args.js';
import { printJson } from '../run-hooks.js';

export async function mergeCommand(args: Args): Promise<void> {
  const models = ['model', 'b', 'c'].map((p) => positional(args, p)).filter((m): m is string => m !== undefined);
  const r = await merge({ ...inputFrom('merge', args), models, backend: backendChoice(args) });
  if (jsonFlag(args)) {
    printJson(r);
    return;
  }
  const how = r.method === 'lora' ? 'A' : `${r.formula} with M = ${r.multiplier}${r.inpainting ? ' (inpainting A: its first 4 input channels merged)' : ''}`;
  const loras = r.loras.map((l) => `${l.file}:${l.scale}`).join(', ');
  process.stderr.write(`painter: ${how}${loras ? `, LoRA baked in: ${loras} (${r.changed.unet} UNet and ${r.changed.text_encoder} text-encoder weights)` : ''}\n`);
  process.stderr.write(`painter: ${r.output.layout}, ${r.tensors} tensors, ${formatBytes(r.bytes)}; Model hash ${r.output.hash}; recorded in ${r.record}\n`);
  process.stdout.write(`${r.output.path}\n`);
}
