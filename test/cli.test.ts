/** The built CLI as a user runs it: exit codes, usage errors, backend report. */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { FIXTURES, ROOT, TINY_SD_A } from './helpers.js';

function painter(args: string[], env: Record<string, string> = {}) {
  const r = spawnSync(process.execPath, [path.join(ROOT, 'bin', 'painter'), ...args], {
    encoding: 'utf8',
    env: { ...process.env, PAINTER_BACKEND: '', ...env },
    timeout: 60_000,
  });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

describe('painter CLI', () => {
  it('info names the backend it chose and why', () => {
    const r = painter(['info']);
    expect(r.code).toBe(0);
    // tfjs-node(-gpu) cannot be installed on these machines, so auto falls through to wasm.
    expect(r.stdout).toMatch(/backend\s+wasm \(@tensorflow\/tfjs-backend-wasm; auto order; not available: @tensorflow\/tfjs-node-gpu/);
    expect(r.stdout).toMatch(/threads\s+1 \(wasm, single-threaded build; SIMD on\)/);
  });

  it('--threads 2 computes on the threaded wasm build, to the same bits as one thread', () => {
    const info = painter(['info', '--threads', '2']);
    expect(info.code, info.stderr).toBe(0);
    expect(info.stdout).toMatch(/threads\s+2 \(wasm, threaded build; SIMD on\)/);
    const out = fs.mkdtempSync(path.join(os.tmpdir(), 'painter-threads-'));
    try {
      const files = [1, 2].map((n) => {
        const r = painter(['generate', 'a (red:1.2) chair', '--model', TINY_SD_A, '--steps', '3', '--out', path.join(out, String(n)), '--json'], { PAINTER_THREADS: String(n) });
        expect(r.code, r.stderr).toBe(0);
        return (JSON.parse(r.stdout) as { files: { file: string }[] }).files[0]!.file;
      });
      expect(fs.readFileSync(files[1]!).equals(fs.readFileSync(files[0]!))).toBe(true);
      const runs = [1, 2].map((n) => {
        const dir = path.join(out, `invert-${n}`);
        const r = painter(['invert', path.join(FIXTURES, 'cat-photos'), '--token', '<t>', '--model', TINY_SD_A, '--steps', '2', '--resolution', '64', '--validation-every', '0', '--embeddings-dir', path.join(dir, 'lib'), '--out', dir, '--threads', String(n), '--json']);
        expect(r.code, r.stderr).toBe(0);
        return fs.readFileSync(path.join(dir, 'train.log'), 'utf8').split('\n').filter(Boolean).map((l) => (JSON.parse(l) as { loss?: number }).loss);
      });
      expect(runs[1]).toEqual(runs[0]);
      const bad = painter(['info', '--threads', '0']);
      expect(bad.code).toBe(2);
      expect(bad.stderr).toMatch(/^painter: --threads 0: give a whole number of threads, 1 or more\n$/);
    } finally {
      fs.rmSync(out, { recursive: true, force: true });
    }
  });

  it('info --json --model describes components and parameter counts', () => {
    const r = painter(['info', '--json', '--backend', 'cpu', '--model', TINY_SD_A]);
    expect(r.code).toBe(0);
    const j = JSON.parse(r.stdout);
    expect(j.backend.name).toBe('cpu');
    const unet = j.model.components.find((c: { name: string }) => c.name === 'unet');
    expect(unet.className).toBe('UNet2DConditionModel');
    expect(unet.parameters).toBe(1_427_012);
    expect(unet.config.block_out_channels).toEqual([32, 64]);
  });

  it('PAINTER_BACKEND selects the backend; --backend overrides it', () => {
    expect(painter(['info'], { PAINTER_BACKEND: 'cpu' }).stdout).toMatch(/backend\s+cpu .*requested/);
    expect(painter(['info', '--backend', 'wasm'], { PAINTER_BACKEND: 'cpu' }).stdout).toMatch(/backend\s+wasm/);
  });

  it('an unavailable explicit backend is an error naming the package to install', () => {
    const r = painter(['info', '--backend', 'tensorflow']);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('--backend tensorflow cannot be used');
    expect(r.stderr).toContain('@tensorflow/tfjs-node-gpu');
    expect(r.stderr.split('\n').filter(Boolean)).toHaveLength(1);
  });

  it('unknown options and missing arguments are usage errors (exit 2)', () => {
    const bogus = painter(['--bogus']);
    expect(bogus.code).toBe(2);
    expect(bogus.stderr).toContain('painter --help');
    const unknown = painter(['info', '--bogus']);
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toContain('Unknown argument: bogus');
    const missing = painter(['invert']);
    expect(missing.code).toBe(2);
    expect(painter(['generate', 'x', '--scheduler', 'nope']).code).toBe(2);
  });

  it('a model path that is not a model is one clear line, exit 1', () => {
    const r = painter(['info', '--model', ROOT]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/no model_index\.json/);
    expect(r.stderr).not.toMatch(/\s+at /);
  });

  it('--help explains every option of every command', () => {
    for (const cmd of ['invert', 'dreambooth', 'generate', 'info']) {
      const r = painter([cmd, '--help']);
      expect(r.code, cmd).toBe(0);
      expect(r.stdout).toContain(`painter ${cmd}`);
    }
    expect(painter(['dreambooth', '--help']).stdout).toContain('--prior-weight');
  });
});

describe('library API', () => {
  it("is importable by package name: import { loadModel } from 'painter'", () => {
    const script = `import('painter').then(async (m) => { await m.selectBackend('cpu'); const model = m.loadModel(${JSON.stringify(TINY_SD_A)}); console.log(typeof m.denoise, model.unet.params.size, m.encode(model.tokenizer, 'a cat').ids.length); })`;
    const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { cwd: ROOT, encoding: 'utf8', timeout: 60_000 });
    expect(r.stderr).toBe('');
    expect(r.stdout.trim()).toBe('function 304 77');
  });
});
