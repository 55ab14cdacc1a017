/**
 * The embeddings folder, as AUTOMATIC1111 keeps one: `painter invert` installs what it learns
 * there, and `painter generate` loads every embedding whose trigger word the prompt uses, without
 * `--embedding`. The folder is `--embeddings-dir`, else $PAINTER_EMBEDDINGS, else ./embeddings.
 * A file's trigger is its own token (painter and diffusers files: "<cat>") or, for AUTOMATIC1111
 * and kohya files, its file stem ("kitty.pt" → kitty), as in A1111.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { writeBytesAtomic } from './atomic.js';
import { readEmbeddingFile } from './embeddings.js';

const EXTENSIONS = /\.(safetensors|pt|bin)$/i;

export function embeddingsDir(flag?: unknown, env: NodeJS.ProcessEnv = process.env): string {
  if (typeof flag === 'string' && flag !== '') return path.resolve(flag);
  const fromEnv = env['PAINTER_EMBEDDINGS'];
  return path.resolve(fromEnv !== undefined && fromEnv !== '' ? fromEnv : 'embeddings');
}

/** Copies a learned embedding into the folder (atomically, replacing an older one of that name). */
export async function installEmbedding(file: string, dir: string): Promise<string> {
  fs.mkdirSync(dir, { recursive: true });
  const target = path.join(dir, path.basename(file));
  await writeBytesAtomic(target, fs.readFileSync(file));
  return target;
}

function escapeRegExp(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

/** True when `word` occurs in `text` on its own (not inside a longer word or a `<placeholder-name>`). */
export function usesWord(text: string, word: string): boolean {
  return new RegExp(`(^|[^\\p{L}\\p{N}_<>-])${escapeRegExp(word)}(?=$|[^\\p{L}\\p{N}_<>-])`, 'u').test(text);
}

export interface LibraryEmbedding {
  file: string;
  token: string;
  vectors: number;
  width: number;
}

/**
 * Files in `dir` whose trigger word `texts` use, skipping tokens in `exclude` (already given with
 * --embedding). Unreadable files are reported through `warn` and skipped.
 */
export function findEmbeddings(dir: string, texts: readonly string[], exclude: ReadonlySet<string>, warn: (m: string) => void): LibraryEmbedding[] {
  if (!fs.existsSync(dir) || !fs.statSync(dir).isDirectory()) return [];
  const found: LibraryEmbedding[] = [];
  const tokens = new Set<string>();
  for (const name of fs.readdirSync(dir).sort()) {
    if (!EXTENSIONS.test(name) || name.startsWith('.')) continue;
    const file = path.join(dir, name);
    let token: string;
    let shape: [number, number];
    try {
      ({ token, shape } = readEmbeddingFile(file));
    } catch (e) {
      warn(`skipping ${file} in the embeddings folder: ${(e as Error).message}`);
      continue;
    }
    if (exclude.has(token) || !texts.some((t) => usesWord(t, token))) continue;
    if (tokens.has(token)) {
      warn(`${file} defines ${token} again; using ${found.find((f) => f.token === token)!.file}`);
      continue;
    }
    tokens.add(token);
    found.push({ file, token, vectors: shape[0], width: shape[1] });
  }
  return found;
}
