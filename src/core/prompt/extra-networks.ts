/**
 * AUTOMATIC1111's extra-network tags in a prompt: `<lora:NAME:MULTIPLIER>` (the multiplier
 * defaults to 1) loads a LoRA, and the tag is taken out of the text before it is encoded, as
 * A1111's extra_networks.parse_prompt does. painter writes LoRAs into a PNG's prompt this way.
 */
import { PainterError } from '../../errors.js';

export interface LoraTag {
  name: string;
  scale: number;
}

/** `<lora:name>` / `<lora:name:0.8>` (A1111 also reads `lyco`, an older name of the same). */
const TAG = /<(lora|lyco):([^:>]+)(?::([^:>]*))?(?::[^>]*)?>/g;

/** The LoRA tags of a prompt and the prompt without them. A malformed multiplier is an error naming the tag. */
export function extractLoraTags(prompt: string): { prompt: string; loras: LoraTag[] } {
  const loras: LoraTag[] = [];
  const text = prompt.replace(TAG, (tag, _kind: string, name: string, multiplier: string | undefined) => {
    const scale = multiplier === undefined || multiplier.trim() === '' ? 1 : Number(multiplier);
    if (!Number.isFinite(scale)) throw new PainterError(`the prompt's ${tag} has a multiplier that is not a number; write it as <lora:${name.trim()}:0.8>`);
    loras.push({ name: name.trim(), scale });
    return '';
  });
  return { prompt: loras.length > 0 ? text.replace(/ {2,}/g, ' ').trim() : prompt, loras };
}
