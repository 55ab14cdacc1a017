/**
 * The embeddings folder (as AUTOMATIC1111's): generate loads the embeddings whose trigger word a
 * prompt uses, skips those made for another model, and invert installs what it learns there.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import sharp from 'sharp';
import { afterAll, describe, expect, it } from 'vitest';
import { embeddingsDir, findEmbeddings, installEmbedding, usesWord } from '../src/io/embedding-library.js';
import { writeEmbeddingFile } from '../src/io/embeddings.js';
import { FIXTURES, ROOT, TINY_SD_A } from './helpers.js';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'painter-emb-lib-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));
const TI = path.join(FIXTURES, 'interop', 'tiny-sd-a', 'textual_inversion');

function painter(args: string[]) {
  const r = spawnSync(process.execPath, [path.join(ROOT, 'bin', 'painter'), ...args], { encoding: 'utf8', env: { ...process.env, PAINTER_BACKEND: 'wasm' }, timeout: 120_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

describe('embeddings folder', () => {
  it('finds trigger words as whole words only', () => {
    expect(usesWord('a photo of <kitty> on grass', '<kitty>')).toBe(true);
    expect(usesWord('<kitty>', '<kitty>')).toBe(true);
    expect(usesWord('a photo of <kitty>s', '<kitty>')).toBe(false);
    expect(usesWord('a kitty, sleeping', 'kitty')).toBe(true);
    expect(usesWord('a kittycat', 'kitty')).toBe(false);
    expect(usesWord('a (kitty:1.2)', 'kitty')).toBe(true);
    expect(usesWord('a <kitty-2v>', 'kitty')).toBe(false);
  });

  it('chooses its folder from the flag, then $PAINTER_EMBEDDINGS, then ./embeddings', () => {
    expect(embeddingsDir('lib', {})).toBe(path.resolve('lib'));
    expect(embeddingsDir(undefined, { PAINTER_EMBEDDINGS: '/x/y' })).toBe('/x/y');
    expect(embeddingsDir(undefined, {})).toBe(path.resolve('embeddings'));
  });

  it('lists the files a prompt triggers, by their own token or (A1111, kohya) by file stem', async () => {
    const dir = path.join(tmp, 'find');
    // Files as users drop them into the folder, under their own names.
    fs.mkdirSync(dir, { recursive: true });
    fs.copyFileSync(path.join(TI, 'diffusers', 'kitty-2v', 'learned_embeds.safetensors'), path.join(dir, 'learned_embeds.safetensors'));
    fs.copyFileSync(path.join(TI, 'a1111', 'kitty.pt'), path.join(dir, 'kitty.pt'));
    fs.writeFileSync(path.join(dir, 'broken.safetensors'), 'not a file');
    fs.writeFileSync(path.join(dir, 'notes.txt'), 'ignored');
    const warnings: string[] = [];
    const found = findEmbeddings(dir, ['a <kitty-2v> and a kitty'], new Set(), (m) => warnings.push(m));
    expect(found.map((f) => [path.basename(f.file), f.token, f.vectors, f.width])).toEqual([
      ['kitty.pt', 'kitty', 1, 32],
      ['learned_embeds.safetensors', '<kitty-2v>', 2, 32],
    ]);
    expect(warnings).toEqual([expect.stringMatching(/skipping .*broken\.safetensors/)]);
    expect(findEmbeddings(dir, ['a <kitty-2v>'], new Set(['<kitty-2v>']), () => {})).toEqual([]);
    expect(findEmbeddings(path.join(tmp, 'absent'), ['kitty'], new Set(), () => {})).toEqual([]);
  });

  it('generate uses a folder embedding exactly as --embedding, and skips one for another model', async () => {
    const dir = path.join(tmp, 'gen-lib');
    const file = path.join(TI, 'diffusers', 'kitty', 'learned_embeds.safetensors');
    await installEmbedding(file, dir, '<kitty>');
    await writeEmbeddingFile(path.join(dir, 'wide.safetensors'), '<wide>', { data: new Float32Array(16), shape: [1, 16] });
    const common = ['--model', TINY_SD_A, '--steps', '3', '--seed', '5', '--json'];
    const a = painter(['generate', 'a photo of <kitty>', ...common, '--embedding', file, '--embeddings-dir', path.join(tmp, 'empty'), '--out', path.join(tmp, 'a')]);
    const b = painter(['generate', 'a photo of <kitty>, <wide>', ...common, '--embeddings-dir', dir, '--out', path.join(tmp, 'b')]);
    const c = painter(['generate', 'a photo of <kitty>', ...common, '--embeddings-dir', dir, '--out', path.join(tmp, 'c')]);
    for (const r of [a, b, c]) expect(r.code, r.stderr).toBe(0);
    expect(b.stderr).toMatch(/not using .*wide\.safetensors from the embeddings folder: its vectors are 16 wide, this model's text encoder 32/);
    const px = async (r: { stdout: string }) => (await sharp((JSON.parse(r.stdout) as { files: { file: string }[] }).files[0]!.file).raw().toBuffer()).toString('base64');
    expect(await px(c)).toBe(await px(a));
    // Without the embedding, <kitty> is plain text: a different image.
    const d = painter(['generate', 'a photo of <kitty>', ...common, '--embeddings-dir', path.join(tmp, 'empty'), '--out', path.join(tmp, 'd')]);
    expect(await px(d)).not.toBe(await px(a));
  });
});
