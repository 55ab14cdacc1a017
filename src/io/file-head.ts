/**
 * What a file is by its first bytes, for the readers that accept several formats (embeddings,
 * LoRA files, `painter info`): PNG, legacy torch.save (pickle PROTO 2 then the magic number's
 * LONG1) and ZIP (torch.save since 1.6). A safetensors file starts with its header length, which
 * cannot begin with any of these (it would exceed 100 MB).
 */
import * as fs from 'node:fs';

/** Up to `n` first bytes of a file (fewer for a shorter file); file-system errors are thrown as they are. */
export function readFileHead(file: string, n: number): Uint8Array {
  const fd = fs.openSync(file, 'r');
  try {
    const head = new Uint8Array(n);
    return head.subarray(0, fs.readSync(fd, head, 0, n, 0));
  } finally {
    fs.closeSync(fd);
  }
}

function startsWith(head: Uint8Array, magic: readonly number[]): boolean {
  return magic.every((b, i) => head[i] === b);
}

export function isPngHead(head: Uint8Array): boolean {
  return startsWith(head, [0x89, 0x50, 0x4e, 0x47]);
}

export function isLegacyTorchHead(head: Uint8Array): boolean {
  return startsWith(head, [0x80, 0x02, 0x8a, 0x0a]);
}
