/**
 * `painter report DIR`: writes DIR/index.html — a training run's report from its train.log and
 * files (runs made before painter wrote reports too), or, for a folder of generated PNGs, a
 * gallery grouped by prompt with the line that makes each image again.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { PainterError } from '../../errors.js';
import { writeBytesAtomic } from '../../io/atomic.js';
import { pngParameters, rerunFlags } from '../from-png.js';
import { galleryHtml, groupByPrompt, type GalleryEntry } from './gallery-page.js';
import { readRunReport, REPORT_FILE, runFinished, TRAIN_LOG } from './read-run.js';
import { runReportHtml } from './run-page.js';

export interface ReportResult {
  kind: 'run' | 'gallery';
  /** The page written. */
  file: string;
  /** run: the steps logged; gallery: the images. */
  count: number;
  /** gallery: the prompts (groups). */
  prompts?: number;
  /** run: whether it has reached its last step. */
  finished?: boolean;
}

/** The PNGs of a folder (not its subfolders), in natural order (2 before 10). */
function pngFiles(dir: string): string[] {
  return fs
    .readdirSync(dir)
    .filter((f) => /\.png$/i.test(f) && fs.statSync(path.join(dir, f)).isFile())
    .sort((a, b) => a.localeCompare(b, 'en', { numeric: true }));
}

/** A PNG's gallery entry: its parameters and re-run flags, or why it has none. */
export function galleryEntry(dir: string, name: string): GalleryEntry {
  const file = path.join(dir, name);
  try {
    const { parameters } = pngParameters(file);
    return { file: name, parameters, rerun: rerunFlags(parameters, file) };
  } catch (e) {
    if (!(e instanceof PainterError)) throw e;
    return { file: name, rerun: { problem: e.message.replace(`${file}: `, '') } };
  }
}

/** Writes the report page of `dir` (see the file comment); returns what it wrote. */
export async function report(dir: string): Promise<ReportResult> {
  const abs = path.resolve(dir);
  if (!fs.existsSync(abs)) throw new PainterError(`${dir}: no such folder; give a training run folder (the --out of invert or dreambooth) or a folder of PNGs painter generated`);
  if (!fs.statSync(abs).isDirectory()) throw new PainterError(`${dir} is a file; give the folder that holds it (a training run folder or a folder of generated PNGs)`);
  const file = path.join(abs, REPORT_FILE);
  if (fs.existsSync(path.join(abs, TRAIN_LOG))) {
    const probe = readRunReport(abs, { kind: 'stopped' });
    const finished = runFinished(probe);
    const run = finished ? { ...probe, state: { kind: 'finished' } as const } : probe;
    await writeBytesAtomic(file, runReportHtml(run));
    return { kind: 'run', file, count: run.records.length, finished };
  }
  const pngs = pngFiles(abs);
  if (pngs.length === 0) {
    throw new PainterError(`${dir}: neither a training run (no ${TRAIN_LOG}) nor a folder of PNGs; give the --out folder of invert or dreambooth, or the folder generate wrote images to (./outputs by default)`);
  }
  const entries = pngs.map((name) => galleryEntry(abs, name));
  await writeBytesAtomic(file, galleryHtml(abs, entries));
  return { kind: 'gallery', file, count: entries.length, prompts: groupByPrompt(entries).filter((g) => g.prompt !== undefined).length };
}
