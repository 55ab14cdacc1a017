/** Atomic file output: write a temp file beside the target, fsync, then rename over it. */
import * as fs from 'node:fs';
import * as path from 'node:path';

function tempName(file: string): string {
  const rand = Math.floor(Math.random() * 0xffffffff).toString(16);
  return path.join(path.dirname(file), `.${path.basename(file)}.${process.pid}.${rand}.tmp`);
}

/**
 * Calls `write` with a descriptor of a temp file; only when it succeeds does the target appear,
 * complete. On failure (or an exception) the temp file is removed and the target is untouched.
 */
export async function writeFileAtomic(file: string, write: (fd: number) => void | Promise<void>): Promise<void> {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  const tmp = tempName(file);
  const fd = fs.openSync(tmp, 'w');
  try {
    await write(fd);
    fs.fsyncSync(fd);
    fs.closeSync(fd);
    fs.renameSync(tmp, file);
  } catch (e) {
    try {
      fs.closeSync(fd);
    } catch {
      // already closed
    }
    fs.rmSync(tmp, { force: true });
    throw e;
  }
}

export async function writeBytesAtomic(file: string, data: Uint8Array | string): Promise<void> {
  await writeFileAtomic(file, (fd) => {
    fs.writeSync(fd, typeof data === 'string' ? Buffer.from(data, 'utf8') : data);
  });
}
