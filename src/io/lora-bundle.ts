/**
 * Textual Inversion embeddings bundled in a LoRA file, as AUTOMATIC1111's Lora extension reads
 * them (networks.py: keys `bundle_emb.NAME.…`, one tensor per embedding, NAME its trigger word)
 * and pivotal-tuning tools write them: `bundle_emb.NAME.string_to_param.*` (the A1111 `.pt`
 * layout) or `bundle_emb.NAME.emb_params` (the safetensors one).
 */
import type { Embedding } from '../core/embeddings.js';
import { PainterError } from '../errors.js';

const PREFIX = 'bundle_emb.';

interface RawTensor {
  shape: number[];
  data: Float32Array;
}

/** The bundled embeddings of a LoRA state dict; their keys are taken out of `tensors`. */
export function takeBundledEmbeddings(file: string, tensors: Map<string, RawTensor>): Embedding[] {
  const byName = new Map<string, [string, RawTensor][]>();
  for (const [key, t] of tensors) {
    if (!key.startsWith(PREFIX)) continue;
    const rest = key.slice(PREFIX.length);
    const dot = rest.indexOf('.');
    if (dot <= 0) throw new PainterError(`${file}: ${JSON.stringify(key)} is no bundled embedding key (bundle_emb.NAME.VECTORS)`);
    const name = rest.slice(0, dot);
    byName.set(name, [...(byName.get(name) ?? []), [key, t]]);
    tensors.delete(key);
  }
  return [...byName].map(([token, entries]) => {
    if (entries.length !== 1) throw new PainterError(`${file}: the bundled embedding ${JSON.stringify(token)} has ${entries.length} tensors (${entries.map(([k]) => k).join(', ')}); painter reads one per embedding`);
    const [key, t] = entries[0]!;
    const shape: [number, number] = t.shape.length === 1 ? [1, t.shape[0]!] : t.shape.length === 2 ? [t.shape[0]!, t.shape[1]!] : fail(file, key, t.shape);
    return { token, vectors: t.data, shape, file: `${file} (${key})` };
  });
}

function fail(file: string, key: string, shape: number[]): never {
  throw new PainterError(`${file}: ${JSON.stringify(key)} has shape [${shape.join(', ')}]; a bundled embedding is [vectors, width]`);
}

/** The keys A1111 reads for a bundled embedding, in the `.pt` layout. */
export function bundledEmbeddingKey(token: string): string {
  return `${PREFIX}${token}.string_to_param.*`;
}
