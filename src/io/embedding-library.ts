/**
 * The embeddings folder, as AUTOMATIC1111 keeps one: `painter invert` installs what it learns
 * there, and `painter generate` loads every embedding whose trigger word the prompt uses, without
 * `--embedding`. The folder is `--embeddings-dir`, else $PAINTER_EMBEDDINGS, else ./embeddings.
 * A file's trigger is its own token (painter and diffusers files: "<cat>") or, for AUTOMATIC1111
 * and kohya files, its file stem ("kitty.pt" → kitty), as in A1111.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { PainterError } from '../errors.js';
import { writeBytesAtomic } from './atomic.js';
import { PAINTER_EMBEDDING_KEY, readEmbeddingFile } from './embeddings.js';

const EXTENSIONS = /\.(safetensors|pt|bin)$/i;

export function embeddingsDir(flag?: unknown, env: NodeJS.ProcessEnv = process.env): string {
  if (typeof flag === 'string' && flag !== '') return path.resolve(flag);
  const fromEnv = env['PAINTER_EMBEDDINGS'];
  return path.resolve(fromEnv !== undefined && fromEnv !== '' ? fromEnv : 'embeddings');
}

/** A `<name>` placeholder whose name reads well as a file stem on every file system. */
const PLAIN_PLACEHOLDER = /^<([A-Za-z0-9][A-Za-z0-9_-]*)>$/;

/**
 * The file name of a token's embedding, one per token and reversible (tokenOfFileName): the
 * common "<cat>" is "cat.safetensors"; any other token is percent-encoded ("[cat]" →
 * "%5Bcat%5D.safetensors", "<猫>" → "%3C%E7%8C%AB%3E.safetensors", "cat" → "%63at.safetensors"),
 * which never looks like the plain form.
 */
export function embeddingFileName(token: string): string {
  const plain = PLAIN_PLACEHOLDER.exec(token);
  if (plain) return `${plain[1]}.safetensors`;
  // Every other token is percent-encoded, its first byte always, so it never reads as the plain form.
  const bytes = Array.from(new TextEncoder().encode(token), (b, i) => {
    const c = String.fromCharCode(b);
    return i > 0 && /^[A-Za-z0-9_-]$/.test(c) ? c : `%${b.toString(16).toUpperCase().padStart(2, '0')}`;
  });
  return `${bytes.join('')}.safetensors`;
}

/** The token embeddingFileName gave this file name (undefined for names it never gives). */
export function tokenOfFileName(name: string): string | undefined {
  const stem = name.replace(/\.safetensors$/, '');
  if (/^[A-Za-z0-9][A-Za-z0-9_-]*$/.test(stem)) return `<${stem}>`;
  if (!stem.includes('%')) return undefined;
  try {
    return decodeURIComponent(stem);
  } catch {
    return undefined;
  }
}

/** The name painter gave a token's embedding before names were made unique per token. */
function legacyFileName(token: string): string {
  return `${token.replace(/[<>]/g, '').replace(/[^\w.-]+/g, '_') || 'embedding'}.safetensors`;
}

/** The trigger word of an embedding file (an A1111-layout file's stem), or undefined when it cannot be read. */
function tokenOf(file: string): string | undefined {
  try {
    return readEmbeddingFile(file).token;
  } catch {
    return undefined;
  }
}

/**
 * The token an embedding file was learned for: the one painter records in its metadata (also in
 * the A1111 layout, whose trigger is the file stem), else its trigger word.
 */
function learnedToken(file: string): string | undefined {
  try {
    const e = readEmbeddingFile(file);
    return e.metadata[PAINTER_EMBEDDING_KEY] !== undefined ? (e.metadata['token'] ?? e.token) : e.token;
  } catch {
    return undefined;
  }
}

/**
 * Why `token` cannot be installed in `dir` (undefined when it can): another embedding there
 * already answers to the same trigger word, or the token's file holds another token. Checked
 * before training starts, and again when installing; `force` replaces such files.
 */
export function installProblem(dir: string, token: string): string | undefined {
  if (!fs.existsSync(dir)) return undefined;
  const own = path.join(dir, embeddingFileName(token));
  if (fs.existsSync(own)) {
    const held = learnedToken(own);
    if (held !== token) return `${own} already holds the embedding of ${held === undefined ? 'another token (or is unreadable)' : `"${held}"`}`;
  }
  for (const name of fs.readdirSync(dir).sort()) {
    const file = path.join(dir, name);
    if (!EXTENSIONS.test(name) || name.startsWith('.') || file === own) continue;
    // The same token under painter's earlier name for it is this token's own file, replaced on install.
    if (learnedToken(file) === token && name !== legacyFileName(token)) return `${file} in the embeddings folder already answers to "${token}"`;
  }
  return undefined;
}

/**
 * Copies a learned embedding into the folder under its token's file name (atomically). It
 * replaces an older embedding of the same token, and refuses to replace one of another token or
 * to add a second file for a trigger word, unless `force`.
 */
export async function installEmbedding(file: string, dir: string, token: string, force = false): Promise<string> {
  const problem = force ? undefined : installProblem(dir, token);
  if (problem) throw new PainterError(`cannot install ${token}: ${problem}; choose another --token, another --embeddings-dir, or pass --force to replace it`);
  fs.mkdirSync(dir, { recursive: true });
  const target = path.join(dir, embeddingFileName(token));
  await writeBytesAtomic(target, fs.readFileSync(file));
  const legacy = path.join(dir, legacyFileName(token));
  if (legacy !== target && fs.existsSync(legacy) && learnedToken(legacy) === token) fs.rmSync(legacy);
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
