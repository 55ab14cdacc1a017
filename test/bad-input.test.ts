/**
 * The catalogue of bad input and faults painter handles (the README links it): each case is the
 * command as a user types it, the exit code (1: a problem with a file or data, 2: bad usage), the
 * one line painter prints, and what is (or is not) on disk afterwards. The cases run the command
 * line in this process (`runCli`: yargs, the command, the top-level error handler); Ctrl-C and
 * process kills are in the command tests (generate, invert, dreambooth), file fuzzing in
 * fuzz.test.ts, unreadable model files in load-model.test.ts and single-file.test.ts.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createProgress, formatDuration } from '../src/cli/progress.js';
import { embeddingFileName, tokenOfFileName } from '../src/io/embedding-library.js';
import { writeEmbeddingFile } from '../src/io/embeddings.js';
import { readPngText } from '../src/io/png-text.js';
import { loadSafetensors, writeSafetensors, type TensorToWrite } from '../src/io/safetensors.js';
import { FIXTURES, ROOT, runCli, TINY_SD_A, useBackend, type CliRun } from './helpers.js';

const tmp = fs.realpathSync(fs.mkdtempSync(path.join(os.tmpdir(), 'painter-bad-input-')));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

const PHOTOS = path.join(FIXTURES, 'photos', 'cat');
const TI = path.join(FIXTURES, 'interop', 'tiny-sd-a', 'textual_inversion');
const LORA = path.join(FIXTURES, 'interop', 'tiny-sd-a', 'lora', 'diffusers', 'pytorch_lora_weights.safetensors');
const at = (...p: string[]) => path.join(tmp, ...p);
/** A short Textual Inversion run on the tiny model. */
const TRAIN = ['--model', TINY_SD_A, '--resolution', '32', '--validation-every', '0'];
const invertArgs = (out: string, steps: number, ...more: string[]) => ['invert', PHOTOS, '--token', '<kitten>', ...TRAIN, '--steps', String(steps), '--checkpoint-every', '1', '--out', out, '--embeddings-dir', at('lib'), ...more];

/** stderr but warnings and yargs' pointer to --help, and no stack trace: what the user reads when painter refuses. */
function refusal(r: CliRun): string {
  expect(r.stderr, 'no stack trace').not.toMatch(/\n\s+at |unexpected error/);
  const lines = r.stderr.trim().split('\n').filter((l) => !l.startsWith('painter: warning:') && !l.startsWith('Run "painter --help"'));
  return lines.join('\n');
}

function listing(dir: string): string[] {
  return fs.existsSync(dir) ? fs.readdirSync(dir, { recursive: true, encoding: 'utf8' }).sort() : [];
}

/** A copy of tiny-sd-a whose VAE decoder's output convolution holds NaN (garbage weights). */
async function poisonedModel(dir: string): Promise<string> {
  fs.cpSync(TINY_SD_A, dir, { recursive: true });
  const file = path.join(dir, 'vae', 'diffusion_pytorch_model.safetensors');
  const { tensors } = loadSafetensors(file);
  const out = new Map<string, TensorToWrite>();
  for (const [k, t] of tensors) {
    const data = Float32Array.from(t.data as Float32Array);
    if (k === 'decoder.conv_out.weight') data.fill(Number.NaN, 0, 8);
    out.set(k, { dtype: 'F32', shape: t.shape, data });
  }
  await writeSafetensors(file, out);
  return dir;
}

function sysIsWritable(): boolean {
  try {
    fs.writeFileSync('/sys/.painter-probe', '');
    fs.rmSync('/sys/.painter-probe');
    return true;
  } catch {
    return false;
  }
}

interface Case {
  what: string;
  args: () => string[];
  env?: Record<string, string>;
  exit: 1 | 2;
  message: RegExp;
  /** Lines of the refusal (1 but for a list of problems). */
  lines?: number;
  /** Folders that must be as they were (or still absent) after the refusal. */
  untouched?: () => string[];
}

// The catalogue. Each line: what the user did wrong, the command, exit code, the one line painter says.
const CATALOGUE: Case[] = [
  // Usage (exit 2): a flag missing, unknown, of the wrong type or out of range.
  { what: 'a number flag given text', args: () => ['generate', 'a cat', '--steps', 'abc'], exit: 2, message: /^painter: --steps must be a number, got "abc"$/ },
  { what: 'a number that is not finite', args: () => ['generate', 'a cat', '--model', TINY_SD_A, '--guidance', '1e309', '--out', at('g-inf')], exit: 2, message: /--guidance must be a finite number, got Infinity/, untouched: () => [at('g-inf')] },
  { what: 'a number out of range', args: () => ['generate', 'a cat', '--model', TINY_SD_A, '--steps', '0'], exit: 2, message: /--steps must be at least 1, got 0/ },
  { what: 'an unknown option', args: () => ['generate', 'a cat', '--bogus'], exit: 2, message: /Unknown argument: bogus/ },
  { what: 'a choice that is not offered', args: () => ['generate', 'a cat', '--scheduler', 'warp'], exit: 2, message: /Invalid values|choices/i },
  { what: 'an unknown PAINTER_BACKEND', args: () => ['info'], env: { PAINTER_BACKEND: 'gpu' }, exit: 2, message: /^painter: PAINTER_BACKEND=gpu: unknown backend; choose one of auto, tensorflow, webgpu, wasm, cpu$/ },
  { what: 'invert without --token', args: () => ['invert', PHOTOS, ...TRAIN, '--out', at('no-token')], exit: 2, message: /--token is required/, untouched: () => [at('no-token')] },
  { what: 'an ordinary word as --token', args: () => ['invert', PHOTOS, '--token', 'cat', ...TRAIN, '--out', at('word')], exit: 2, message: /--token "cat": a new token that begins or ends with a letter.*"<cat>"/, untouched: () => [at('word'), at('lib')] },
  { what: 'a rare word as --token', args: () => ['invert', PHOTOS, '--token', 'sks', ...TRAIN, '--out', at('sks')], exit: 2, message: /--token "sks": .*"<sks>"/, untouched: () => [at('sks')] },
  { what: 'a --token that ends in a letter', args: () => ['invert', PHOTOS, '--token', '<cat-toy', ...TRAIN, '--out', at('half')], exit: 2, message: /--token "<cat-toy": .*"<cat-toy>"/ },
  { what: 'dreambooth without --class', args: () => ['dreambooth', PHOTOS, ...TRAIN, '--out', at('no-class')], exit: 2, message: /--class is required/, untouched: () => [at('no-class')] },
  { what: 'prior preservation with no class images', args: () => ['dreambooth', PHOTOS, '--class', 'cat', ...TRAIN, '--class-images', '0', '--out', at('no-prior')], exit: 2, message: /--class-images 0 leaves nothing for prior preservation/ },
  { what: 'seeds beyond 32 bits', args: () => ['generate', 'a cat', '--model', TINY_SD_A, '--seed', '4294967295', '--count', '2', '--out', at('seeds')], exit: 2, message: /--seed 4294967295 with --count 2 would need seeds up to 4294967296/, untouched: () => [at('seeds')] },
  { what: 'a LoRA scale that is not a number', args: () => ['generate', 'a cat', '--model', TINY_SD_A, '--lora', `${LORA}:abc`, '--out', at('lora-abc')], exit: 2, message: /--lora .*:abc: the scale after ":" must be a number/, untouched: () => [at('lora-abc')] },
  { what: 'a flag without its value', args: () => ['generate', 'a cat', '--steps'], exit: 2, message: /^painter: Not enough arguments following: steps; run "painter --help" for usage$/ },
  { what: 'a schedule the sampler does not take', args: () => ['generate', 'a cat', '--model', TINY_SD_A, '--scheduler', 'DDIM', '--schedule', 'karras', '--out', at('ddim-karras')], exit: 2, message: /^painter: --schedule karras: the DDIM sampler has no karras schedule; use it with "Euler a", "DPM\+\+ 2M", /, untouched: () => [at('ddim-karras')] },
  { what: '--subseed-strength without --subseed', args: () => ['generate', 'a cat', '--model', TINY_SD_A, '--subseed-strength', '0.3', '--out', at('subseed')], exit: 2, message: /--subseed-strength needs --subseed SEED/, untouched: () => [at('subseed')] },
  { what: '--resume latest without --out', args: () => ['invert', PHOTOS, '--token', '<x>', ...TRAIN, '--resume', 'latest'], exit: 2, message: /--resume latest needs --out/ },
  // Files and data (exit 1): named, with the fix; nothing half-written.
  { what: 'a model that is not there', args: () => ['generate', 'a cat', '--model', at('nope')], exit: 1, message: /--model .*nope: not found/ },
  { what: 'a folder that is not a model', args: () => ['info', '--model', ROOT], exit: 1, message: /no model_index\.json/ },
  { what: 'an explicit backend that cannot load', args: () => ['info', '--backend', 'tensorflow'], exit: 1, message: /--backend tensorflow cannot be used .*@tensorflow\/tfjs-node-gpu/ },
  { what: '--out that is a file', args: () => ['generate', 'a cat', '--model', TINY_SD_A, '--out', at('a-file')], exit: 1, message: /--out .*a-file: .*a-file is a file, not a folder; choose another folder/ },
  { what: '--out under a file', args: () => ['generate', 'a cat', '--model', TINY_SD_A, '--out', at('a-file', 'sub')], exit: 1, message: /--out .*sub: .* lies under the file .*a-file/ },
  { what: 'an --embeddings-dir that is a file, before any training', args: () => ['invert', PHOTOS, '--token', '<x>', ...TRAIN, '--out', at('lib-file-run'), '--embeddings-dir', at('a-file')], exit: 1, message: /--embeddings-dir .*a-file is a file/, untouched: () => [at('lib-file-run')] },
  { what: 'a folder with no image', args: () => ['invert', at('empty'), '--token', '<x>', ...TRAIN, '--out', at('empty-run')], exit: 1, message: /empty: no usable image found/ },
  { what: 'an image that cannot be read', args: () => ['invert', at('broken'), '--token', '<x>', ...TRAIN, '--out', at('broken-run')], exit: 1, message: /broken\.jpg: cannot read this image .*--skip-bad-images/ },
  { what: '--latents that is not safetensors', args: () => ['generate', 'a cat', '--model', TINY_SD_A, '--latents', path.join(ROOT, 'package.json')], exit: 1, message: /--latents .*package\.json/ },
  { what: 'an embedding file that is damaged', args: () => ['generate', 'a cat', '--model', TINY_SD_A, '--embedding', at('broken.pt'), '--out', at('emb-broken')], exit: 1, message: /broken\.pt/ },
  { what: 'a LoRA file that is not there', args: () => ['generate', 'a cat', '--model', TINY_SD_A, '--lora', at('absent-lora.safetensors')], exit: 1, message: /absent-lora\.safetensors/ },
  { what: 'a preset with errors', args: () => ['invert', PHOTOS, '--token', '<x>', '--preset', at('bad.yaml'), '--out', at('preset-run')], exit: 1, message: /invalid preset:\n .*bad\.yaml: key "lr" must be a number, got "fast"/, lines: 2 },
  { what: 'an emphasis weight that is not a number', args: () => ['generate', 'a (cat:1.2.3)', '--model', TINY_SD_A, '--out', at('weight')], exit: 1, message: /emphasis weight "1\.2\.3" is not a number, in "a \(cat:1\.2\.3\)"/, untouched: () => [at('weight')] },
  { what: 'a <lora:…> tag with no file', args: () => ['generate', 'a cat <lora:absent:0.5>', '--model', TINY_SD_A, '--lora-dir', at('empty'), '--out', at('tag')], exit: 1, message: /the prompt asks for <lora:absent:0\.5>, but .*empty holds no absent\.safetensors; pass --lora FILE or --lora-dir DIR/, untouched: () => [at('tag')] },
  { what: '--from-png of a PNG without parameters', args: () => ['generate', '--from-png', at('plain.png'), '--model', TINY_SD_A, '--out', at('from')], exit: 1, message: /plain\.png: no generation parameters stored in this PNG/, untouched: () => [at('from')] },
  { what: 'info on a file painter cannot describe', args: () => ['info', path.join(ROOT, 'package.json')], exit: 1, message: /package\.json: .*painter info describes/ },
];

beforeAll(async () => {
  await useBackend('wasm');
  fs.writeFileSync(at('a-file'), 'not a folder');
  fs.mkdirSync(at('empty'));
  fs.mkdirSync(at('broken'));
  fs.copyFileSync(path.join(FIXTURES, 'photos', 'truncated.jpg'), at('broken', 'broken.jpg'));
  fs.writeFileSync(at('broken.pt'), 'PK\u0003\u0004 not really a zip');
  fs.writeFileSync(at('bad.yaml'), 'lr: fast\n');
  await sharp({ create: { width: 8, height: 8, channels: 3, background: '#000' } }).png().toFile(at('plain.png'));
});

describe('the bad-input catalogue', () => {
  it.each(CATALOGUE)('$what: exit $exit, one line', async (c) => {
    const before = (c.untouched?.() ?? []).map(listing);
    const r = await runCli(c.args(), c.env);
    expect(r.code, r.stderr).toBe(c.exit);
    expect(refusal(r)).toMatch(c.message);
    expect(refusal(r).split('\n'), 'one line').toHaveLength(c.lines ?? 1);
    (c.untouched?.() ?? []).forEach((dir, i) => expect(listing(dir), dir).toEqual(before[i]));
  });

  // /sys refuses new files even to root on Linux, where access() says it may write: the probe must tell.
  it.skipIf(!fs.existsSync('/sys') || sysIsWritable())('--out where files cannot be created (/sys): exit 1 before any work', async () => {
    const r = await runCli(['invert', PHOTOS, '--token', '<x>', ...TRAIN, '--out', '/sys/painter-run']);
    expect(r.code).toBe(1);
    expect(refusal(r)).toMatch(/^painter: --out \/sys\/painter-run: \/sys is (not writable \(E[A-Z]+\)|on a read-only file system); choose another folder$/);
  });

  it('weights holding NaN: exit 1, the cause named, no PNG written', async () => {
    const model = await poisonedModel(at('poisoned'));
    const r = await runCli(['generate', 'a cat', '--model', model, '--steps', '2', '--out', at('nan-out')]);
    expect(r.code).toBe(1);
    expect(refusal(r).split('\n').at(-1)).toMatch(/^painter: sampling produced NaN or infinite values \(the image of seed 0\), so no PNG was written for it; the model's weights may hold corrupt values/);
    expect(listing(at('nan-out')).filter((f) => f.endsWith('.png'))).toEqual([]);
  });
});

describe('tokens that cannot take over words, each in its own file', () => {
  it('file names are unique per token and reversible', () => {
    const tokens = ['<cat>', 'cat', '[cat]', '(cat)', '<Cat>', '<猫>', '<犬>', '<cat-toy>', '<a b>', '<cat>_1', '%63at'];
    const names = tokens.map(embeddingFileName);
    expect(new Set(names).size).toBe(tokens.length);
    expect(names.slice(0, 3)).toEqual(['cat.safetensors', '%63at.safetensors', '%5Bcat%5D.safetensors']);
    for (const [i, t] of tokens.entries()) expect(tokenOfFileName(names[i]!), t).toBe(t);
    for (const n of names) expect(n).toMatch(/^[A-Za-z0-9%_-]+\.safetensors$/);
  });

  it('bracketed tokens, non-ASCII ones included, train and install side by side', async () => {
    for (const token of ['<猫>', '<犬>']) {
      const r = await runCli(['invert', PHOTOS, '--token', token, ...TRAIN, '--steps', '1', '--out', at(`run-${token.codePointAt(1)}`), '--embeddings-dir', at('cjk'), '--json']);
      expect(r.code, r.stderr).toBe(0);
      expect(JSON.parse(r.stdout).installed).toBe(at('cjk', embeddingFileName(token)));
    }
    expect(listing(at('cjk'))).toEqual(['%3C%E7%8A%AC%3E.safetensors', '%3C%E7%8C%AB%3E.safetensors']);
  });

  it('refuses to replace an embedding of another token, or to add a second file for a trigger word, unless --force', async () => {
    const lib = at('clash');
    fs.mkdirSync(lib);
    const rows = { data: new Float32Array(32), shape: [1, 32] as [number, number] };
    await writeEmbeddingFile(path.join(lib, 'kitten.safetensors'), '<dog>', rows);
    const taken = await runCli(['invert', PHOTOS, '--token', '<kitten>', ...TRAIN, '--steps', '1', '--out', at('clash-run'), '--embeddings-dir', lib]);
    expect(taken.code).toBe(1);
    expect(refusal(taken)).toMatch(/kitten\.safetensors already holds the embedding of "<dog>"; choose another --token, another --embeddings-dir, or pass --force/);
    expect(fs.existsSync(at('clash-run'))).toBe(false); // refused before any work
    fs.rmSync(path.join(lib, 'kitten.safetensors'));
    await writeEmbeddingFile(path.join(lib, 'mine.safetensors'), '<kitten>', rows);
    const twice = await runCli(['invert', PHOTOS, '--token', '<kitten>', ...TRAIN, '--steps', '1', '--out', at('clash-run'), '--embeddings-dir', lib]);
    expect(refusal(twice)).toMatch(/mine\.safetensors in the embeddings folder already answers to "<kitten>"/);
    const forced = await runCli(['invert', PHOTOS, '--token', '<kitten>', ...TRAIN, '--steps', '1', '--out', at('clash-run'), '--embeddings-dir', lib, '--force']);
    expect(forced.code, forced.stderr).toBe(0);
    expect(listing(lib)).toEqual(['kitten.safetensors', 'mine.safetensors']);
  });

  it('an embedding written in the AUTOMATIC1111 layout keeps its token, so learning it again replaces it', async () => {
    for (const out of ['a1111-run-1', 'a1111-run-2']) {
      const r = await runCli(['invert', PHOTOS, '--token', '<tabby>', ...TRAIN, '--steps', '1', '--format', 'a1111', '--out', at(out), '--embeddings-dir', at('a1111-lib')]);
      expect(r.code, r.stderr).toBe(0);
    }
    expect(listing(at('a1111-lib'))).toEqual(['tabby.safetensors']);
  });
});

describe('run folders never lose a result', () => {
  const run = at('run');
  const files = () => Object.fromEntries(['config.json', 'train.log'].map((f) => [f, fs.readFileSync(path.join(run, f), 'utf8')]));
  beforeAll(async () => {
    const r = await runCli(invertArgs(run, 2));
    expect(r.code, r.stderr).toBe(0);
  });

  it('a folder that holds a run is refused without --resume, and left as it was', async () => {
    const before = files();
    const r = await runCli(invertArgs(run, 2));
    expect(r.code).toBe(1);
    expect(refusal(r)).toMatch(/--out .*run already holds a run \(config\.json, train\.log, checkpoints, loss\.svg\); continue it with --resume latest --out .*run, choose another --out, or pass --overwrite to replace it/);
    expect(files()).toEqual(before);
  });

  it('on --resume, flags that would change the result are refused by name; more --steps and another cadence are not', async () => {
    const changed = await runCli([...invertArgs(run, 2, '--resume', 'latest', '--lr', '0.1')].map((a) => (a === '<kitten>' ? '<other>' : a)));
    expect(changed.code).toBe(2);
    expect(refusal(changed)).toMatch(/but --token "<other>" \(the run has "<kitten>"\), --lr 0\.1 \(the run has 0\.0005\) differ; drop them, or start a new run/);
    const fewer = await runCli(invertArgs(run, 1, '--resume', 'latest'));
    expect(fewer.code).toBe(2);
    expect(refusal(fewer)).toMatch(/--steps 1 is fewer than the 2 steps .*step-000002 has done/);
    const more = await runCli(['invert', PHOTOS, '--resume', 'latest', '--out', run, '--steps', '3', '--checkpoint-every', '5', '--json']);
    expect(more.code, more.stderr).toBe(0);
    expect(JSON.parse(more.stdout).steps).toBe(3);
  });

  it('train.log keeps no step twice after a kill between a checkpoint and the next one', async () => {
    const log = path.join(run, 'train.log');
    // As a run killed at step 5 after checkpoint 3: its log already holds steps 4 and 5, one cut mid-line.
    fs.appendFileSync(log, '{"step":4,"loss":1}\n{"step":5,"lo');
    const r = await runCli(['invert', PHOTOS, '--resume', 'latest', '--out', run, '--steps', '5', '--checkpoint-every', '1']);
    expect(r.code, r.stderr).toBe(0);
    const steps = fs.readFileSync(log, 'utf8').trim().split('\n').map((l) => (JSON.parse(l) as { step: number }).step);
    expect(steps).toEqual([1, 2, 3, 4, 5]);
  });

  it('keeps the newest --keep-checkpoints checkpoints', () => {
    expect(listing(path.join(run, 'checkpoints')).filter((d) => /^step-\d+$/.test(d))).toEqual(['step-000003', 'step-000004', 'step-000005']);
  });

  it('a resume never writes into a folder that holds another run', async () => {
    const other = at('other-run');
    expect((await runCli(invertArgs(other, 1))).code).toBe(0);
    const r = await runCli(['invert', PHOTOS, '--resume', path.join(run, 'checkpoints', 'step-000004'), '--out', other, '--steps', '6']);
    expect(r.code).toBe(1);
    expect(refusal(r)).toMatch(/--out .*other-run already holds a run/);
  });

  it('resuming from an earlier checkpoint sets the later ones aside, so "latest" is the resumed branch', async () => {
    const r = await runCli(['invert', PHOTOS, '--resume', path.join(run, 'checkpoints', 'step-000004'), '--steps', '4', '--json']);
    expect(r.code, r.stderr).toBe(0);
    const entries = listing(path.join(run, 'checkpoints')).filter((d) => !d.includes(path.sep));
    expect(entries.filter((d) => /^step-\d+$/.test(d))).toEqual(['step-000003', 'step-000004']);
    const aside = entries.find((d) => d.startsWith('abandoned-'))!;
    expect(listing(path.join(run, 'checkpoints', aside))).toContain('step-000005');
    const steps = fs.readFileSync(path.join(run, 'train.log'), 'utf8').trim().split('\n').map((l) => (JSON.parse(l) as { step: number }).step);
    expect(steps).toEqual([1, 2, 3, 4]);
  });

  it('a damaged checkpoint state is one line naming the file', async () => {
    const latest = path.join(run, 'checkpoints', 'step-000004', 'state.json');
    fs.writeFileSync(latest, '{"format": "painter-checkpoint", "st');
    const r = await runCli(['invert', PHOTOS, '--resume', 'latest', '--out', run, '--steps', '6']);
    expect(r.code).toBe(1);
    expect(refusal(r)).toMatch(/step-000004\/state\.json: the checkpoint's state is damaged .*; resume from an earlier checkpoints\/step-NNNNNN folder/);
  });

  it('--overwrite replaces the run', async () => {
    const r = await runCli(invertArgs(run, 1, '--overwrite'));
    expect(r.code, r.stderr).toBe(0);
    expect(fs.readFileSync(path.join(run, 'train.log'), 'utf8').trim().split('\n')).toHaveLength(1);
    expect(listing(path.join(run, 'checkpoints')).filter((d) => /^step-\d+$/.test(d))).toEqual(['step-000001']);
  });
});

describe('smaller surprises', () => {
  it('the PNG records a LoRA as AUTOMATIC1111 does, with its scale', async () => {
    const r = await runCli(['generate', 'a cat', '--model', TINY_SD_A, '--steps', '1', '--lora', `${LORA}:0.5`, '--out', at('lora-png'), '--json']);
    expect(r.code, r.stderr).toBe(0);
    const file = (JSON.parse(r.stdout) as { files: { file: string }[] }).files[0]!.file;
    expect(readPngText(fs.readFileSync(file))['parameters']).toMatch(/^a cat <lora:pytorch_lora_weights:0\.5>\n[\s\S]*Lora hashes: "pytorch_lora_weights: [0-9a-f]+"/);
  });

  it('a long prompt is read whole, in chunks of 75 tokens, without a warning', async () => {
    const long = Array.from({ length: 400 }, (_, i) => `word${i}`).join(' ');
    const r = await runCli(['generate', long, '--model', TINY_SD_A, '--steps', '1', '--out', at('long')]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).not.toMatch(/cut|truncat|longer than/);
  });

  it('says before sampling class images how many, where, and how long they take', async () => {
    const r = await runCli(['dreambooth', PHOTOS, '--class', 'cat', ...TRAIN, '--steps', '1', '--class-images', '3', '--class-dir', at('class'), '--out', at('db')]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/painter: sampling 3 class image\(s\) of "a photo of a cat" with the frozen model into .*class, once: later runs reuse them/);
    expect(r.stderr).toMatch(/painter: class images take \d+\.\d s each here: about \d+ min for the other 2/);
  });

  it('a terminal that reports 0 columns gets plain progress lines, never a spinner', () => {
    const stderr = process.stderr as unknown as { isTTY?: boolean; columns?: number };
    const saved = { isTTY: stderr.isTTY, columns: stderr.columns, write: process.stderr.write };
    let text = '';
    Object.assign(stderr, { isTTY: true, columns: 0 });
    process.stderr.write = ((chunk: string) => ((text += chunk), true)) as typeof process.stderr.write;
    try {
      const progress = createProgress(false, 0);
      progress.update({ phase: 'generate', done: 1, total: 2, label: 'step', elapsedMs: 1500, etaMs: 1500 });
      progress.stop();
    } finally {
      Object.assign(stderr, { isTTY: saved.isTTY, columns: saved.columns });
      process.stderr.write = saved.write;
    }
    expect(text).toBe('painter: step 1/2 · 1.5s elapsed · ETA 1.5s\n');
  });

  it('durations read as people write them, never "1m60s"', () => {
    expect([59_000, 59_960, 119_700, 3_599_600, 7_380_000].map(formatDuration)).toEqual(['59.0s', '1m00s', '2m00s', '1h00m', '2h03m']);
  });
});

describe('backends that cannot be used', () => {
  it.runIf(process.platform === 'linux')('auto passes WebGPU by without loading Dawn when Linux has no GPU device (no driver warnings)', async () => {
    const { linuxGpuDevices } = await import('../src/backend/webgpu.js');
    const dev = at('dev');
    fs.mkdirSync(path.join(dev, 'dri'), { recursive: true });
    fs.writeFileSync(path.join(dev, 'dri', 'card0'), '');
    expect(linuxGpuDevices(dev)).toBe(false);
    fs.writeFileSync(path.join(dev, 'dri', 'renderD128'), '');
    expect(linuxGpuDevices(dev)).toBe(true);
    fs.rmSync(path.join(dev, 'dri'), { recursive: true });
    fs.writeFileSync(path.join(dev, 'nvidia0'), '');
    expect(linuxGpuDevices(dev)).toBe(true);
  });

  it('names the missing CUDA library and the GPU path that needs none', async () => {
    const { describeError } = await import('../src/backend/select.js');
    const e = new Error('libcudnn.so.8: cannot open shared object file: No such file or directory\n    at Module._extensions..node');
    expect(describeError(e)).toBe(
      'the library libcudnn.so.8 is missing or of another version (@tensorflow/tfjs-node-gpu 4.22 needs CUDA 11.2 and cuDNN 8.1; --backend webgpu uses the GPU without CUDA)',
    );
    expect(describeError(Object.assign(new Error("Cannot find package '@tensorflow/tfjs-node-gpu'"), { code: 'ERR_MODULE_NOT_FOUND' }))).toBe('package not installed');
  });
});
