/**
 * The run report of real (tiny) training runs: index.html is there from the start, live (it
 * reloads itself) at every checkpoint, says "interrupted" with the way to go on after Ctrl-C, and
 * "finished" with the result's generate line at the end; `painter report DIR` writes it again for
 * runs made before reports (no index.html, an older config.json), writes a gallery for a folder of
 * PNGs, and refuses other folders with one line.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { invert } from '../src/app/invert.js';
import { formatInfotext } from '../src/core/infotext.js';
import { InterruptedError } from '../src/errors.js';
import { encodePng } from '../src/io/png-out.js';
import { FIXTURES, runCli, TINY_SD_A, useBackend } from './helpers.js';

const tmp = fs.realpathSync(fs.mkdtempSync(path.join(os.tmpdir(), 'painter-report-run-')));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));
const at = (...p: string[]) => path.join(tmp, ...p);
const PHOTOS = path.join(FIXTURES, 'photos', 'cat');

beforeAll(async () => {
  await useBackend();
});

/** A Textual Inversion run on the tiny model at 32 px, without validation grids: seconds. */
const tiny = (out: string, more: Parameters<typeof invert>[0] = {}) => ({
  dir: PHOTOS,
  token: '<kit>',
  model: TINY_SD_A,
  resolution: 32,
  steps: 3,
  validationEvery: 0,
  checkpointEvery: 1,
  out,
  embeddingsDir: at('lib'),
  backend: 'wasm' as const,
  ...more,
});

const page = (dir: string) => fs.readFileSync(path.join(dir, 'index.html'), 'utf8');
const lossPoints = (html: string) => Number(/<polyline class="loss" data-points="(\d+)"/.exec(html)?.[1] ?? 0);

describe('a run report written during training', () => {
  const run = at('run');

  it('is live at every checkpoint, interrupted after a stop, finished after the resume', async () => {
    const live: string[] = [];
    let steps = 0;
    const hooks = {
      step: () => void steps++,
      // A page written by an earlier checkpoint is on disk when the next one is reported.
      file: (f: { kind: string }) => void (f.kind === 'checkpoint' && live.push(page(run))),
      shouldStop: () => steps >= 2,
    };
    await expect(invert(tiny(run), hooks)).rejects.toThrow(InterruptedError);
    expect(live.length).toBeGreaterThanOrEqual(1);
    for (const html of live) {
      expect(html).toMatch(/<body data-reload="\d+">/);
      expect(html).toContain('class="badge live"');
    }
    const stopped = page(run);
    expect(stopped).not.toContain('data-reload');
    expect(stopped).toContain('class="badge interrupted"');
    expect(stopped).toContain('--resume latest');
    expect(lossPoints(stopped)).toBe(2);

    const r = await invert(tiny(run, { resume: 'latest' }));
    expect(r.steps).toBe(3);
    const done = page(run);
    expect(done).not.toContain('data-reload');
    expect(done).toContain('class="badge finished"');
    expect(lossPoints(done)).toBe(3);
    expect(done).toContain(`--embedding ${path.join(run, 'kit.safetensors')}`);
    expect(done).toContain('painter generate &#39;a photo of &lt;kit&gt;&#39;');
    const config = JSON.parse(fs.readFileSync(path.join(run, 'config.json'), 'utf8')) as Record<string, unknown>;
    expect(config['samplePrompt']).toBe('a photo of <kit>');
    expect(config['modelHash']).toMatch(/^[0-9a-f]{10}$/);
    expect(done).toContain(String(config['modelHash']));
  });

  it('painter report writes it again for a run made before reports', async () => {
    const old = at('old-run');
    fs.cpSync(run, old, { recursive: true });
    fs.rmSync(path.join(old, 'index.html'));
    const config = JSON.parse(fs.readFileSync(path.join(old, 'config.json'), 'utf8')) as Record<string, unknown>;
    delete config['samplePrompt'];
    delete config['modelHash'];
    fs.writeFileSync(path.join(old, 'config.json'), JSON.stringify(config));
    const r = await runCli(['report', old, '--json']);
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual({ kind: 'run', file: path.join(old, 'index.html'), count: 3, finished: true });
    const html = page(old);
    expect(html).toContain('class="badge finished"');
    expect(lossPoints(html)).toBe(3);
    expect(html).toContain('painter invert');
  });

  it('painter report says "not finished" for a run with only a train.log', async () => {
    const bare = at('bare');
    fs.mkdirSync(bare);
    fs.writeFileSync(path.join(bare, 'train.log'), '{"step":1,"loss":0.5,"ms":10}\n{"step":2,"loss":0.4,"ms":10}\n');
    const r = await runCli(['report', bare]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout.trim()).toBe(path.join(bare, 'index.html'));
    expect(r.stderr).toContain('run report of 2 logged step(s), not finished');
    expect(page(bare)).not.toContain('data-reload');
    expect(lossPoints(page(bare))).toBe(2);
  });
});

describe('painter report on other folders', () => {
  it('writes a gallery for a folder of generated PNGs', async () => {
    const dir = at('pngs');
    fs.mkdirSync(dir);
    const text = (prompt: string, seed: number) => formatInfotext({ prompt, negativePrompt: '', steps: 20, sampler: 'DPM++ 2M', cfgScale: 7.5, seed, width: 4, height: 4, extra: {} });
    for (const [name, prompt, seed] of [['00000-1.png', 'a cat', 1], ['00001-2.png', 'a dog', 2], ['00002-3.png', 'a cat', 3]] as const) {
      fs.writeFileSync(path.join(dir, name), await encodePng(new Uint8Array(48), 4, 4, { parameters: text(prompt, seed) }));
    }
    const r = await runCli(['report', dir, '--json']);
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual({ kind: 'gallery', file: path.join(dir, 'index.html'), count: 3, prompts: 2 });
    expect(page(dir).match(/<section>/g)).toHaveLength(2);
  });

  it.each([
    ['a folder that is not there', () => at('missing'), /^painter: .*missing: no such folder; give a training run folder/],
    ['a folder with neither train.log nor PNGs', () => (fs.mkdirSync(at('empty'), { recursive: true }), at('empty')), /^painter: .*empty: neither a training run \(no train\.log\) nor a folder of PNGs; give the --out folder/],
    ['a file', () => (fs.writeFileSync(at('file.txt'), 'x'), at('file.txt')), /^painter: .*file\.txt is a file; give the folder that holds it/],
  ])('refuses %s with one line, exit 1', async (_what, dir, message) => {
    const target = dir();
    const r = await runCli(['report', target]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(message);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(fs.existsSync(path.join(target, 'index.html'))).toBe(false);
  });

  it('wants the folder named (usage error, exit 2)', async () => {
    const r = await runCli(['report']);
    expect(r.code).toBe(2);
  });
});
