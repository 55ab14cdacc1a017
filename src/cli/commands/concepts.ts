/**
 * Learned concepts a generation uses: Textual Inversion embeddings (--embedding) and LoRA
 * adapters (--lora FILE[:SCALE]) applied to a loaded model.
 */
import type * as tf from '@tensorflow/tfjs';
import type { StableDiffusion } from '../../core/model.js';
import { PainterError } from '../../errors.js';

export interface ConceptRequest {
  embeddings: string[];
  token?: string;
  loras: string[];
}

export interface LoadedConcepts {
  /** The model with concepts applied (shares unchanged weights with the base). */
  model: StableDiffusion;
  /** Grown token-embedding table when embeddings were loaded. */
  tokenEmbedding?: tf.Tensor;
  /** Multi-vector tokens expanded as diffusers' maybe_convert_prompt does. */
  expandPrompt(prompt: string): string;
  tiHashes: Record<string, string>;
  loraHashes: Record<string, string>;
  /** Frees tensors created for the concepts (not the base model's). */
  dispose(): void;
}

export function applyConcepts(base: StableDiffusion, req: ConceptRequest): LoadedConcepts {
  if (req.embeddings.length > 0 || req.loras.length > 0) {
    throw new PainterError('--embedding and --lora are not available yet in this build');
  }
  if (req.token !== undefined) throw new PainterError('--token needs exactly one --embedding');
  return { model: base, expandPrompt: (p) => p, tiHashes: {}, loraHashes: {}, dispose: () => {} };
}
