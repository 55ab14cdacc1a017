/**
 * The report pages in a real browser (headless Chromium, Debian's `chromium` package, driven by
 * playwright-core): the run report of a real tiny Textual Inversion run with validation grids, a
 * live page of that run, the gallery of real `painter generate` output, and the bench:concepts
 * page. Each loads over file:// with no console error, every image loads, the loss chart has one
 * point per logged step, a screenshot is not blank, and a live page reloads itself while a
 * finished one does not (timers fast-forwarded with Playwright's clock, no sleeping).
 * Without /usr/bin/chromium (or PAINTER_CHROMIUM) these tests are skipped, saying so.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { pathToFileURL } from 'node:url';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Browser, Page } from 'playwright-core';
import { invert } from '../src/app/invert.js';
import { readRunReport } from '../src/app/report/read-run.js';
import { runReportHtml } from '../src/app/report/run-page.js';
import { parseTrainLog } from '../src/app/report/train-log.js';
import { conceptBenchHtml, benchStrips } from '../recipes/painter-mini/bench-page.js';
import { benchRows, type ConceptBenchResult } from '../recipes/painter-mini/bench-concepts.js';
import { FIXTURES, runCli, TINY_SD_A, useBackend } from './helpers.js';

const CHROMIUM = process.env['PAINTER_CHROMIUM'] || '/usr/bin/chromium';
const HAVE_CHROMIUM = fs.existsSync(CHROMIUM);
if (!HAVE_CHROMIUM) console.warn(`report-browser: no Chromium at ${CHROMIUM} (apt-get install chromium, or set PAINTER_CHROMIUM): the browser tests are skipped`);

const tmp = fs.realpathSync(fs.mkdtempSync(path.join(os.tmpdir(), 'painter-report-browser-')));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));
const at = (...p: string[]) => path.join(tmp, ...p);
const RUN = at('run');

interface Loaded {
  page: Page;
  errors: string[];
  loads: () => number;
}

describe.skipIf(!HAVE_CHROMIUM)(`report pages in headless Chromium${HAVE_CHROMIUM ? '' : ` (skipped: no Chromium at ${CHROMIUM})`}`, () => {
  let browser: Browser;

  beforeAll(async () => {
    const { chromium } = await import('playwright-core');
    browser = await chromium.launch({ executablePath: CHROMIUM });
    await useBackend();
    // A real run: 4 steps, a validation grid at steps 2 and 4, checkpoints at 2 and 4. The page
    // as it is during the run (live) is kept as live.html for the reload test.
    await invert(
      { dir: path.join(FIXTURES, 'photos', 'cat'), token: '<kitty>', model: TINY_SD_A, resolution: 32, steps: 4, validationEvery: 2, checkpointEvery: 2, out: RUN, embeddingsDir: at('lib'), backend: 'wasm' },
      {
        file: (f) => {
          if (f.kind === 'sample' && f.step === 2) fs.copyFileSync(path.join(RUN, 'index.html'), path.join(RUN, 'live.html'));
        },
      },
    );
  }, 300_000);

  afterAll(async () => {
    await browser?.close();
  });

  /** Opens a file with the page clock under the test's control; console errors and failed loads are collected. */
  async function open(file: string): Promise<Loaded> {
    const page = await browser.newPage({ viewport: { width: 1100, height: 800 } });
    const errors: string[] = [];
    let loads = 0;
    page.on('console', (m) => void (m.type() === 'error' && errors.push(m.text())));
    page.on('pageerror', (e) => void errors.push(e.message));
    page.on('requestfailed', (r) => void errors.push(`failed to load ${r.url()}`));
    page.on('load', () => void loads++);
    await page.clock.install();
    await page.goto(pathToFileURL(file).href);
    return { page, errors, loads: () => loads };
  }

  /** Brings every image into view (they load lazily) and returns their natural widths (0: did not load). */
  async function imageWidths(page: Page): Promise<number[]> {
    return page.$$eval('img', (imgs) =>
      Promise.all(
        (imgs as HTMLImageElement[]).map(async (img) => {
          img.scrollIntoView();
          if (!img.complete) {
            await new Promise((done) => {
              img.addEventListener('load', done, { once: true });
              img.addEventListener('error', done, { once: true });
            });
          }
          return img.naturalWidth;
        }),
      ),
    );
  }

  /** A screenshot with some variety: not one colour (a blank or failed page). */
  async function notBlank(page: Page): Promise<void> {
    const png = await page.screenshot({ fullPage: true });
    const stats = await sharp(png).stats();
    expect(Math.max(...stats.channels.map((c) => c.stdev))).toBeGreaterThan(10);
    expect(stats.isOpaque).toBe(true);
  }

  it('the run report: no console error, every image loads, one chart point per logged step, not blank, no reload once finished', async () => {
    const { page, errors, loads } = await open(path.join(RUN, 'index.html'));
    const logged = parseTrainLog(fs.readFileSync(path.join(RUN, 'train.log'), 'utf8')).filter((r) => r.loss !== undefined).length;
    expect(logged).toBe(4);
    const points = await page.$eval('svg.loss-chart polyline.loss', (el) => (el as SVGPolylineElement).points.numberOfItems);
    expect(points).toBe(logged);
    const widths = await imageWidths(page);
    expect(widths).toHaveLength(2);
    for (const w of widths) expect(w).toBeGreaterThan(0);
    expect(await page.textContent('h1')).toContain('finished');
    expect(await page.locator('figcaption .prompt').allTextContents()).toEqual(['a photo of <kitty>', 'a photo of <kitty>']);
    await notBlank(page);
    // An hour of page time passes: nothing reloads a finished page.
    await page.clock.runFor(3_600_000);
    await expect(page.waitForEvent('load', { timeout: 1500 })).rejects.toThrow();
    expect(loads()).toBe(1);
    expect(errors).toEqual([]);
    await page.close();
  });

  it('the page of the run while it was live reloads itself', async () => {
    const html = fs.readFileSync(path.join(RUN, 'live.html'), 'utf8');
    expect(html).toContain('class="badge live"');
    const { page, errors, loads } = await open(path.join(RUN, 'live.html'));
    const every = Number(await page.getAttribute('body', 'data-reload'));
    expect(every).toBeGreaterThan(0);
    expect(await page.textContent('h1')).toContain('running');
    const reloaded = page.waitForEvent('load');
    await page.clock.runFor(every * 1000 + 100);
    await reloaded;
    expect(loads()).toBe(2);
    expect(errors).toEqual([]);
    await page.close();
  });

  it('a live page written from the run folder loads its images and chart too', async () => {
    const file = at('run', 'live-now.html');
    fs.writeFileSync(file, runReportHtml(readRunReport(RUN, { kind: 'live', reloadSeconds: 1 })));
    const { page, errors } = await open(file);
    for (const w of await imageWidths(page)) expect(w).toBeGreaterThan(0);
    expect(await page.$eval('svg.loss-chart polyline.loss', (el) => (el as SVGPolylineElement).points.numberOfItems)).toBe(4);
    const reloaded = page.waitForEvent('load');
    await page.clock.runFor(1100);
    await reloaded;
    expect(errors).toEqual([]);
    await page.close();
  });

  it('the gallery of painter generate output: grouped by prompt, infotext shown, copy button works', async () => {
    const out = at('outputs');
    const gen = (...args: string[]) => runCli(['generate', ...args, '--model', TINY_SD_A, '--steps', '2', '--out', out]);
    expect((await gen('a (red:1.2) chair', '--count', '2')).code).toBe(0);
    expect((await gen('a <kitty> on "grass"', '--seed', '7', '--scheduler', 'Euler a', '--negative', 'blurry', '--embedding', path.join(RUN, 'kitty.safetensors'))).code).toBe(0);
    const r = await runCli(['report', out]);
    expect(r.code, r.stderr).toBe(0);
    const { page, errors } = await open(path.join(out, 'index.html'));
    expect(await page.locator('section').count()).toBe(2);
    expect(await page.locator('section h2').allTextContents()).toEqual(['a (red:1.2) chair (2)', 'a <kitty> on "grass" (1)']);
    const widths = await imageWidths(page);
    expect(widths).toHaveLength(3);
    for (const w of widths) expect(w).toBe(64);
    const kitty = page.locator('section').nth(1);
    expect(await kitty.locator('dl.info').textContent()).toMatch(/seed7samplerEuler a.*negativeblurry.*embeddingskitty \([0-9a-f]{12}\)/);
    expect(await kitty.locator('code').textContent()).toBe(`painter generate 'a <kitty> on "grass"' --negative blurry --scheduler "Euler a" --schedule automatic --steps 2 --guidance 7.5 --seed 7 --width 64 --height 64`);
    await kitty.locator('button.copy').click();
    await expect.poll(() => kitty.locator('button.copy').textContent()).toBe('copied');
    await notBlank(page);
    expect(errors).toEqual([]);
    await page.close();
  });

  it('the bench:concepts page shows its table and every sample grid', async () => {
    const dir = at('bench');
    const score = { subject: 0, combination: 0.1, object: 0.6, colour: 0.8, pattern: 0.2, feature: 0.3, likeness: 0.4 };
    const result: ConceptBenchResult = {
      seed: 0,
      subject: 'a red striped cat with a blue hat',
      backend: 'wasm',
      psnr: { scenes: 4, mean: 25.1, min: 22 },
      baseline: { label: 'baseline', prompt: 'a photo of a cat', score },
      textualInversion: { label: 'ti', prompt: 'a photo of <cat-0>', score, trainSeconds: 60 },
      seconds: 120,
    };
    // The grids the bench writes are rows of 64-px samples; any real PNG stands in here.
    fs.mkdirSync(dir);
    for (const s of benchStrips(result)) fs.copyFileSync(path.join(RUN, 'samples', 'step-000002.png'), path.join(dir, s.file));
    fs.writeFileSync(path.join(dir, 'index.html'), conceptBenchHtml(result, benchRows(result)));
    const { page, errors } = await open(path.join(dir, 'index.html'));
    expect(await page.locator('tbody tr').count()).toBe(benchRows(result).length);
    for (const w of await imageWidths(page)) expect(w).toBeGreaterThan(0);
    await notBlank(page);
    expect(errors).toEqual([]);
    await page.close();
  });
});
