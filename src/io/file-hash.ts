/** File hashes as AUTOMATIC1111 shows them (sha256, shortened), for infotext and metadata. */
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';

const memo = new Map<string, string>();

/** sha256 of a file, streamed in 4 MiB chunks; memoised per path, size and mtime. */
export function sha256File(file: string): string {
  const st = fs.statSync(file);
  const key = `${path.resolve(file)}:${st.size}:${st.mtimeMs}`;
  const known = memo.get(key);
  if (known) return known;
  const hash = crypto.createHash('sha256');
  const fd = fs.openSync(file, 'r');
  try {
    const buf = Buffer.allocUnsafe(4 << 20);
    let n: number;
    while ((n = fs.readSync(fd, buf, 0, buf.length, null)) > 0) hash.update(buf.subarray(0, n));
  } finally {
    fs.closeSync(fd);
  }
  const hex = hash.digest('hex');
  memo.set(key, hex);
  return hex;
}

/**
 * A model's sha256 as A1111 records it: the checkpoint file's; for a diffusers folder, the UNet
 * weights file stands for the model ('' when the folder has none).
 */
export function modelSha256(source: string): string {
  if (fs.statSync(source).isFile()) return sha256File(source);
  const unet = path.join(source, 'unet');
  const files = fs.existsSync(unet) ? fs.readdirSync(unet).filter((f) => f.endsWith('.safetensors')).sort() : [];
  return files.length === 0 ? '' : sha256File(path.join(unet, files[0]!));
}

/** A1111's "Model hash": the first 10 hex digits of modelSha256. */
export function modelHash(source: string): string {
  return modelSha256(source).slice(0, 10);
}

/** A1111's short hash of an embedding or LoRA file (first 12 hex digits). */
export function shortHash(file: string): string {
  return sha256File(file).slice(0, 12);
}
