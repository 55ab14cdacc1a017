/**
 * Output locations are checked before any work starts, leaving nothing behind: a folder that
 * is a file, lies under a file, or cannot be written (permissions, a read-only file system) is
 * one line naming the flag and the path, instead of an error after the work is done.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { PainterError } from '../errors.js';

/**
 * Whether a file can be created in `dir`, found by creating (and removing) an empty one: access()
 * cannot tell, e.g. for root on a read-only or virtual file system.
 */
function writable(dir: string): string | undefined {
  const probe = path.join(dir, `.painter-write-test-${process.pid}-${Date.now()}`);
  let created = false;
  try {
    // 'wx': never truncate (or later remove) a file that happens to have the name.
    fs.writeFileSync(probe, '', { flag: 'wx' });
    created = true;
    return undefined;
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'EEXIST') return undefined;
    return code === 'EROFS' ? `${dir} is on a read-only file system` : `${dir} is not writable (${code ?? 'access denied'})`;
  } finally {
    if (created) fs.rmSync(probe, { force: true });
  }
}

/** Why outputs cannot be written into `dir` (undefined when they can). */
export function outputDirProblem(dir: string): string | undefined {
  let at = path.resolve(dir);
  for (;;) {
    let stat: fs.Stats | undefined;
    try {
      stat = fs.statSync(at);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      // ENOTDIR: a part of the path is a file; walking up finds which.
      if (code !== 'ENOENT' && code !== 'ENOTDIR') return `${at} cannot be read (${code})`;
    }
    if (stat) {
      if (!stat.isDirectory()) return at === path.resolve(dir) ? `${dir} is a file, not a folder` : `${dir} lies under the file ${at}`;
      return writable(at);
    }
    const up = path.dirname(at);
    if (up === at) return `${dir} has no existing parent folder`;
    at = up;
  }
}

/** Throws one line naming `flag` when `dir` cannot receive outputs. */
export function checkOutputDir(dir: string, flag: string): void {
  const problem = outputDirProblem(dir);
  if (problem) throw new PainterError(`${flag} ${dir}: ${problem}; choose another folder`);
}
