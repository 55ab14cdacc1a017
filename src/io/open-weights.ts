/**
 * Opens a model weights file by its content: a ZIP is a torch.save archive (`.ckpt`), anything
 * else must be safetensors; legacy (pre-1.6) torch files are refused with the fix.
 */
import { PainterError } from '../errors.js';
import { isLegacyTorchHead, readFileHead } from './file-head.js';
import { openTorchCheckpoint } from './torch-checkpoint.js';
import { safetensorsSource, withEma, type WeightSource, type WeightSourceOptions } from './weight-source.js';
import { looksLikeZip } from './zip.js';

function fail(file: string, what: string): never {
  throw new PainterError(`${file}: ${what}`);
}

/** Opens a weights file of any supported format; the caller closes it. */
export function openWeightSource(file: string, opts: WeightSourceOptions = {}): WeightSource {
  let head: Uint8Array;
  try {
    head = readFileHead(file, 4);
  } catch (e) {
    fail(file, `cannot open weights file (${(e as NodeJS.ErrnoException).code ?? String(e)}); check the path`);
  }
  if (isLegacyTorchHead(head)) fail(file, 'legacy torch.save format (torch < 1.6) is not read; re-save it with a current torch or convert it to .safetensors');
  const src = looksLikeZip(head) ? openTorchCheckpoint(file) : safetensorsSource(file);
  if (!opts.ema) return src;
  try {
    return withEma(src);
  } catch (e) {
    src.close();
    throw e;
  }
}
