// Shared entry for the repository scripts: runs `main(argv, log)` of a built module under dist/,
// printing painter's user errors as one line with their exit code. sharp uses one thread: the
// machines are shared, and rendering is a small part of each step.
import * as path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import sharp from 'sharp';

sharp.concurrency(1);
const root = path.join(path.dirname(fileURLToPath(import.meta.url)), '..');

/** Runs dist/<modulePath>'s main; --help or -h prints `usage` instead. */
export async function runDistMain(modulePath, usage) {
  if (process.argv.slice(2).some((a) => a === '--help' || a === '-h')) {
    console.log(usage);
    return;
  }
  const { main } = await import(pathToFileURL(path.join(root, 'dist', modulePath)).href);
  const { isPainterError } = await import(pathToFileURL(path.join(root, 'dist', 'src', 'errors.js')).href);
  try {
    console.error(await main(process.argv.slice(2), (line) => console.error(line)));
  } catch (e) {
    if (!isPainterError(e)) throw e;
    console.error(`error: ${e.message}`);
    process.exitCode = e.exitCode;
  }
}
