/** Initial latents from a safetensors file (one tensor [B, C, h, w], NCHW as diffusers passes latents=). */
import { PainterError } from '../errors.js';
import { closeSafetensors, openSafetensors, readTensor } from './safetensors.js';

export function readLatentsFile(file: string, expected: [number, number, number]): { data: Float32Array; count: number } {
  let f;
  try {
    f = openSafetensors(file);
  } catch (e) {
    throw e instanceof PainterError ? new PainterError(`--latents ${e.message}`) : e;
  }
  try {
    const names = [...f.entries.keys()];
    if (names.length !== 1) throw new PainterError(`--latents ${file}: expected exactly one tensor, found ${names.length} (${names.slice(0, 3).join(', ')})`);
    const t = readTensor(f, names[0]!);
    if (t.dtype === 'I32' || t.dtype === 'I64') throw new PainterError(`--latents ${file}: tensor "${names[0]}" holds integers; expected floats`);
    const [c, h, w] = expected;
    if (t.shape.length !== 4 || t.shape[1] !== c || t.shape[2] !== h || t.shape[3] !== w) {
      throw new PainterError(`--latents ${file}: tensor "${names[0]}" has shape [${t.shape.join(', ')}]; this model and size need [B, ${c}, ${h}, ${w}] (NCHW)`);
    }
    return { data: t.data, count: t.shape[0]! };
  } finally {
    closeSafetensors(f);
  }
}
