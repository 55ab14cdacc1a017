/**
 * The report pages' builders, pure: train.log parsing and timings, the loss chart (one point per
 * logged step, its moving average, the validation loss), the run page's states (a live page
 * reloads, a finished or interrupted one does not), the command lines, the gallery (grouped by
 * prompt, infotext read from real PNG text chunks) and the bench page — and prompts escaped.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { formatInfotext, type GenerationParams } from '../src/core/infotext.js';
import { encodePng } from '../src/io/png-out.js';
import { generateLine, shellQuote, trainingCommandLine } from '../src/app/report/command-line.js';
import { galleryHtml, groupByPrompt, infotextRows, rerunLine, type GalleryEntry } from '../src/app/report/gallery-page.js';
import { escapeHtml, fileHref } from '../src/app/report/html.js';
import { lossChartSvg, niceTicks } from '../src/app/report/loss-chart.js';
import { galleryEntry } from '../src/app/report/report-folder.js';
import { runReportHtml, type RunReport, type RunState } from '../src/app/report/run-page.js';
import { parseTrainLog, runTimings, type LogRecord } from '../src/app/report/train-log.js';
import { benchStrips, conceptBenchHtml } from '../recipes/painter-mini/bench-page.js';
import { benchRows, type ConceptBenchResult } from '../recipes/painter-mini/bench-concepts.js';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'painter-report-pages-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

/** The (x, y) pairs of an SVG element's `points` attribute, found by its class. */
function polyline(svg: string, cls: string): [number, number][] {
  const m = new RegExp(`<polyline class="${cls}"[^>]* points="([^"]*)"`).exec(svg);
  if (!m) return [];
  return m[1]!
    .trim()
    .split(' ')
    .map((p) => p.split(',').map(Number) as [number, number]);
}

const records = (losses: number[], ms = 100): LogRecord[] => losses.map((loss, i) => ({ step: i + 1, loss, lr: 1e-3, gradNorm: 0.1, ms }));

function report(state: RunState, more: Partial<RunReport> = {}): RunReport {
  return {
    title: 'painter invert <cat>',
    runDir: '/runs/cat',
    state,
    totalSteps: 100,
    records: records([0.5, 0.4, 0.3, 0.2]),
    commandLine: "painter invert photos --token '<cat>'",
    settings: [['seed', '0']],
    allSettings: [['seed', '0']],
    samplePrompt: 'a photo of <cat>',
    samples: [{ step: 2, file: 'samples/step-000002.png' }],
    outputs: [{ label: 'embedding', file: 'cat.safetensors', generate: "painter generate 'a photo of <cat>' --embedding /runs/cat/cat.safetensors" }],
    updated: '2026-01-02T03:04:05.000Z',
    ...more,
  };
}

describe('train.log', () => {
  it('reads every record, skips a line cut by a kill, and keeps val_loss', () => {
    const text = [
      '{"step":1,"loss":0.5,"lr":0.001,"gradNorm":0.2,"ms":120}',
      '{"step":2,"loss":0.25,"lr":0.001,"gradNorm":0.1,"ms":80,"val_loss":0.3}',
      'not json',
      '{"step":3,"loss":0.2,"lr":0.00',
      '',
    ].join('\n');
    expect(parseTrainLog(text)).toEqual([
      { step: 1, loss: 0.5, lr: 0.001, gradNorm: 0.2, ms: 120 },
      { step: 2, loss: 0.25, lr: 0.001, gradNorm: 0.1, ms: 80, val_loss: 0.3 },
    ]);
  });

  it('times the run: speed over the last steps, an ETA only while live, the steps summed', () => {
    const r = records([1, 1, 1, 1], 250);
    expect(runTimings(r, 10, true)).toEqual({ step: 4, stepsPerSecond: 4, etaMs: 6 * 250, trainingMs: 1000 });
    expect(runTimings(r, 10, false).etaMs).toBeUndefined();
    expect(runTimings([], 10, true)).toEqual({ step: 0, trainingMs: 0 });
  });
});

describe('the loss chart', () => {
  it('has one point per logged step, in step order from left to right', () => {
    const losses = Array.from({ length: 137 }, (_, i) => 0.1 + ((i * 7919) % 13) / 13);
    const svg = lossChartSvg(records(losses));
    const pts = polyline(svg, 'loss');
    expect(pts).toHaveLength(137);
    expect(svg).toContain('data-points="137"');
    for (let i = 1; i < pts.length; i++) expect(pts[i]![0]).toBeGreaterThan(pts[i - 1]![0]);
    // Higher loss is higher on the chart (smaller y).
    const [a, b] = [losses.indexOf(Math.max(...losses)), losses.indexOf(Math.min(...losses))];
    expect(pts[a]![1]).toBeLessThan(pts[b]![1]);
  });

  it('draws the moving average over a twentieth of the run', () => {
    // Alternating 0 and 1 over 40 steps: a 2-step average is 0.5 from the second step on.
    const losses = Array.from({ length: 40 }, (_, i) => i % 2);
    const svg = lossChartSvg(records(losses));
    expect(svg).toContain('data-window="2"');
    const avg = polyline(svg, 'loss-average');
    expect(avg).toHaveLength(40);
    const raw = polyline(svg, 'loss');
    const mid = (raw[0]![1] + raw[1]![1]) / 2;
    for (const [, y] of avg.slice(1)) expect(y).toBeCloseTo(mid, 0);
  });

  it('adds the validation loss where records carry val_loss, and only then', () => {
    const r = records(Array.from({ length: 30 }, (_, i) => 1 / (i + 1)));
    for (const s of [10, 20, 30]) r[s - 1]!.val_loss = 0.5 - s / 100;
    const svg = lossChartSvg(r);
    expect(polyline(svg, 'val-loss')).toHaveLength(3);
    expect(svg.match(/<circle /g)).toHaveLength(3);
    expect(svg).toContain('step 20: validation loss 0.3000');
    expect(lossChartSvg(records([1, 2, 3]))).not.toContain('val-loss');
  });

  it('says so when nothing is logged yet', () => {
    expect(lossChartSvg([])).toContain('no step logged yet');
    expect(niceTicks(0.06, 1.2, 5)).toEqual([0.2, 0.4, 0.6, 0.8, 1, 1.2]);
  });
});

describe('the run page', () => {
  it('reloads itself while the run is live', () => {
    const html = runReportHtml(report({ kind: 'live', reloadSeconds: 10 }));
    expect(html).toMatch(/<body data-reload="10">/);
    expect(html).toContain('running');
    expect(html).toContain('step 4 of 100');
  });

  it('does not reload once finished, interrupted or failed, and says which', () => {
    const finished = runReportHtml(report({ kind: 'finished' }));
    const interrupted = runReportHtml(report({ kind: 'interrupted', message: 'interrupted at step 4/100; to continue, run the same command with --resume latest' }));
    const failed = runReportHtml(report({ kind: 'failed', message: 'the loss became NaN at step 5' }));
    for (const html of [finished, interrupted, failed]) expect(html).not.toContain('data-reload');
    expect(finished).toContain('class="badge finished"');
    expect(interrupted).toContain('class="badge interrupted"');
    expect(interrupted).toContain('--resume latest');
    expect(failed).toContain('the loss became NaN');
  });

  it('shows the samples as a timeline with the prompt under each, the results with their generate line, and the settings', () => {
    const html = runReportHtml(report({ kind: 'finished' }, { samples: [2, 4, 6].map((step) => ({ step, file: `samples/step-${String(step).padStart(6, '0')}.png` })) }));
    expect(html.match(/<img src="samples\/step-0000\d\d\.png"/g)).toHaveLength(3);
    expect(html.match(/<div class="prompt">a photo of &lt;cat&gt;<\/div>/g)).toHaveLength(3);
    expect(html).toContain('painter generate &#39;a photo of &lt;cat&gt;&#39; --embedding /runs/cat/cat.safetensors');
    expect(html).toContain('painter invert photos --token &#39;&lt;cat&gt;&#39;');
    expect(html).toContain('<a href="cat.safetensors">');
  });

  it('escapes prompts, titles and messages: a prompt is text, never markup', () => {
    const evil = '</script><script>alert(1)</script><img src=x onerror=alert(2)>';
    const html = runReportHtml(report({ kind: 'interrupted', message: evil }, { title: evil, samplePrompt: evil }));
    expect(html).not.toContain('<script>alert(1)');
    expect(html).not.toContain('<img src=x');
    expect(html).toContain(escapeHtml(evil));
    // Only the page's own script.
    expect(html.match(/<script>/g)).toHaveLength(1);
    expect(fileHref('samples/a #1?.png')).toBe('samples/a%20%231%3F.png');
  });
});

describe('command lines', () => {
  it("rebuilds the training command from a run's config, leaving out defaults", () => {
    const config = {
      command: 'invert',
      images: ['/data/my cats/a.png', '/data/my cats/sub/b.png'],
      token: '<cat>',
      steps: 1000,
      lr: 0.005,
      model: '/pkg/fixtures/painter-mini',
      embeddingsDir: '/home/u/embeddings',
      flip: true,
      overwrite: true,
      modelHash: 'abc',
    };
    const line = trainingCommandLine(config, { model: '/pkg/fixtures/painter-mini', embeddingsDir: '/home/u/embeddings' });
    expect(line).toBe("painter invert '/data/my cats' --token '<cat>' --lr 0.005");
    expect(trainingCommandLine({ stage: 'ldm' })).toBeUndefined();
  });

  it('quotes words for a shell and names the result in the generate line', () => {
    expect(shellQuote("it's <cat>")).toBe(`'it'\\''s <cat>'`);
    expect(shellQuote('/a/b.safetensors')).toBe('/a/b.safetensors');
    expect(generateLine('a photo of sks dog', { kind: 'lora', file: '/r/dreambooth-lora.safetensors' }, '/m/sd15')).toBe("painter generate 'a photo of sks dog' --model /m/sd15 --lora /r/dreambooth-lora.safetensors");
    expect(generateLine('x', { kind: 'model', dir: '/r/model' }, '/m/sd15')).toBe('painter generate x --model /r/model');
  });
});

const params = (prompt: string, more: Partial<GenerationParams> = {}): GenerationParams => ({
  prompt,
  negativePrompt: '',
  steps: 20,
  sampler: 'DPM++ 2M',
  cfgScale: 7.5,
  seed: 1,
  width: 64,
  height: 64,
  extra: {},
  ...more,
});

describe('the gallery', () => {
  it('groups images by prompt in the order they come, PNGs without parameters last', () => {
    const entries: GalleryEntry[] = [
      { file: '1.png', parameters: params('a cat') },
      { file: '2.png', rerun: { problem: 'no generation parameters stored in this PNG' } },
      { file: '3.png', parameters: params('a dog') },
      { file: '4.png', parameters: params('a cat', { seed: 2 }) },
    ];
    const groups = groupByPrompt(entries);
    expect(groups.map((g) => [g.prompt, g.entries.map((e) => e.file)])).toEqual([
      ['a cat', ['1.png', '4.png']],
      ['a dog', ['3.png']],
      [undefined, ['2.png']],
    ]);
    const html = galleryHtml('/out', entries);
    expect(html.match(/<section>/g)).toHaveLength(3);
    expect(html).not.toContain('data-reload');
  });

  it("reads each PNG's infotext: prompt, seed, sampler, steps, CFG, LoRA and embeddings, and the line that makes it again", async () => {
    const p = params('a (red:1.2) <cat> on "grass"', {
      negativePrompt: 'blurry',
      seed: 42,
      sampler: 'Euler a',
      scheduleType: 'Karras',
      steps: 12,
      cfgScale: 6,
      modelHash: '9ce4ea5ec1',
      model: 'tiny-sd-a',
      loraHashes: { style: 'aaaabbbbcccc' },
      tiHashes: { cat: '636c06ea6029' },
    });
    const png = await encodePng(new Uint8Array(4 * 4 * 3).fill(128), 4, 4, { parameters: formatInfotext(p) });
    fs.writeFileSync(path.join(tmp, 'a.png'), png);
    const entry = galleryEntry(tmp, 'a.png');
    expect(entry.parameters).toMatchObject({ prompt: p.prompt, negativePrompt: 'blurry', seed: 42, sampler: 'Euler a', steps: 12, cfgScale: 6, loraHashes: { style: 'aaaabbbbcccc' }, tiHashes: { cat: '636c06ea6029' } });
    expect(Object.fromEntries(infotextRows(entry.parameters!))).toMatchObject({
      seed: '42',
      sampler: 'Euler a (Karras)',
      steps: '12',
      CFG: '6',
      size: '64×64',
      LoRA: 'style (aaaabbbbcccc)',
      embeddings: 'cat (636c06ea6029)',
    });
    expect(entry.rerun).toHaveProperty('flags');
    const line = rerunLine(entry.parameters!, (entry.rerun as { flags: string }).flags);
    expect(line).toBe(`painter generate 'a (red:1.2) <cat> on "grass"' --negative blurry --scheduler "Euler a" --schedule karras --steps 12 --guidance 6 --seed 42 --width 64 --height 64`);
    const html = galleryHtml(tmp, [entry]);
    expect(html).toContain('a (red:1.2) &lt;cat&gt; on &quot;grass&quot;');
    expect(html).not.toContain('<cat>');

    fs.writeFileSync(path.join(tmp, 'plain.png'), await encodePng(new Uint8Array(4 * 4 * 3), 4, 4, {}));
    expect(galleryEntry(tmp, 'plain.png')).toEqual({ file: 'plain.png', rerun: { problem: 'no generation parameters stored in this PNG (no "parameters" text chunk)' } });
  });
});

describe('the bench:concepts page', () => {
  const score = { subject: 0.1, combination: 0.2, object: 0.6, colour: 0.8, pattern: 0.3, feature: 0.4, likeness: 0.5 };
  const result: ConceptBenchResult = {
    seed: 0,
    subject: 'a <red> striped cat with a blue hat',
    backend: 'wasm',
    psnr: { scenes: 16, mean: 25.5, min: 21.0 },
    baseline: { label: 'baseline', prompt: 'a photo of a cat', score },
    textualInversion: { label: 'ti', prompt: 'a photo of <cat-0>', score, trainSeconds: 300 },
    dreamboothPrior: { label: 'dreambooth-prior', prompt: 'a photo of sks cat', score, pres: 0.01, classScore: score, trainSeconds: 600 },
    dreamboothNoPrior: { label: 'dreambooth-no-prior', prompt: 'a photo of sks cat', score, pres: 0.4, classScore: score, trainSeconds: 600 },
    seconds: 2100,
  };

  it("holds table.md's rows and every sample grid the bench wrote, with its prompt", () => {
    const rows = benchRows(result);
    const html = conceptBenchHtml(result, rows);
    expect(html.match(/<tr>/g)).toHaveLength(rows.length + 1);
    expect(benchStrips(result).map((s) => s.file)).toEqual([
      'vae-reconstruction.png',
      'baseline.png',
      'textual-inversion.png',
      'dreambooth-prior.png',
      'dreambooth-prior-class-prompt.png',
      'dreambooth-no-prior.png',
      'dreambooth-no-prior-class-prompt.png',
    ]);
    for (const s of benchStrips(result)) expect(html).toContain(`<img src="${s.file}"`);
    expect(html).toContain('a photo of &lt;cat-0&gt;');
    expect(html).toContain('subject "a &lt;red&gt; striped cat with a blue hat"');
    expect(html).toContain('<a href="ti/index.html">');
    expect(html).toContain('MISSED');
  });
});
