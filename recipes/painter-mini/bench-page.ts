/**
 * bench:concepts as a page (index.html in its --out folder): the table of table.md, the sample
 * grids it wrote with the prompt of each, and links to the training runs' own reports. Pure: the
 * result in, the page out.
 */
import { dataTable, escapeHtml, fileHref, htmlPage } from '../../src/index.js';
import type { ConceptBenchResult, MethodResult } from './bench-concepts-results.js';

export interface BenchStrip {
  /** The grid's file in the bench folder. */
  file: string;
  title: string;
  prompt?: string;
}

/** The sample grids a result's parts wrote, in the order the bench measures them. */
export function benchStrips(r: ConceptBenchResult): BenchStrip[] {
  const out: BenchStrip[] = [];
  if (r.psnr) out.push({ file: 'vae-reconstruction.png', title: 'VAE reconstruction: each held-out scene, then its reconstruction' });
  if (r.promptFidelity) out.push({ file: 'prompt-fidelity.png', title: 'prompt fidelity: one sample per caption (prompt-fidelity.json lists the captions and readings)' });
  const classPrompt = r.baseline?.prompt;
  const method = (m: MethodResult | undefined, title: string, file: string, classFile?: string) => {
    if (!m) return;
    out.push({ file, title, prompt: m.prompt });
    if (classFile && m.classScore) out.push({ file: classFile, title: `${title}: class-prompt samples (PRES)`, prompt: classPrompt });
  };
  method(r.baseline, 'baseline (the base model, class prompt)', 'baseline.png');
  method(r.textualInversion, 'Textual Inversion', 'textual-inversion.png');
  method(r.dreamboothPrior, 'DreamBooth with prior preservation', 'dreambooth-prior.png', 'dreambooth-prior-class-prompt.png');
  method(r.dreamboothNoPrior, 'DreamBooth without prior preservation', 'dreambooth-no-prior.png', 'dreambooth-no-prior-class-prompt.png');
  method(r.pivotal, 'pivotal tuning (LoRA and embedding, prior preservation)', 'pivotal.png', 'pivotal-class-prompt.png');
  if (r.maskedTextualInversion) out.push({ file: 'masked-photos.png', title: 'masked loss: each training photo, then its mask (white = learnt)' });
  method(r.maskedTextualInversion, 'Textual Inversion with masked loss', 'textual-inversion-masked.png');
  return out;
}

/** The training runs the bench made, each with its own report page (index.html). */
function runLinks(r: ConceptBenchResult): string {
  const runs = [
    [r.textualInversion, 'ti', 'Textual Inversion'],
    [r.dreamboothPrior, 'dreambooth-prior', 'DreamBooth with prior preservation'],
    [r.dreamboothNoPrior, 'dreambooth-no-prior', 'DreamBooth without prior preservation'],
    [r.pivotal, 'pivotal', 'pivotal tuning'],
    [r.maskedTextualInversion, 'ti-masked', 'Textual Inversion with masked loss'],
  ] as const;
  const items = runs.filter(([m]) => m !== undefined).map(([m, dir, label]) => `<li><a href="${fileHref(`${dir}/index.html`)}">${escapeHtml(label)}</a>${m!.trainSeconds !== undefined ? ` (trained in ${m!.trainSeconds.toFixed(0)} s)` : ''}</li>`);
  return items.length > 0 ? `<h2>Training runs</h2><ul>${items.join('')}</ul>` : '';
}

/** A status cell's colour: missed targets red, met ones green. */
const statusStyle = (status: string) => (status.includes('MISSED') ? ' style="color:#c33;font-weight:600"' : status.includes('met') ? ' style="color:#2a8a3e;font-weight:600"' : '');

/** The bench's page: `rows` are table.md's (benchRows). */
export function conceptBenchHtml(r: ConceptBenchResult, rows: readonly (readonly [string, string, string, string])[]): string {
  const table = dataTable(
    ['measure', 'value', 'target', 'status'],
    rows.map(([m, v, t, s]) => [escapeHtml(m), escapeHtml(v), escapeHtml(t), `<span${statusStyle(s)}>${escapeHtml(s)}</span>`]),
  );
  const strips = benchStrips(r).map(
    (s) =>
      `<figure><img src="${fileHref(s.file)}" alt="${escapeHtml(s.title)}"><figcaption><div class="step">${escapeHtml(s.title)}</div>${s.prompt !== undefined ? `<div class="prompt">${escapeHtml(s.prompt)}</div>` : ''}</figcaption></figure>`,
  );
  const body = [
    `<header><h1>painter-mini concept benchmark</h1><p class="sub">seed ${r.seed} · subject "${escapeHtml(r.subject)}" · backend ${escapeHtml(r.backend)} · ${(r.seconds / 60).toFixed(1)} min</p></header>`,
    `<h2>Measures</h2>${table}`,
    strips.length > 0 ? `<h2>Samples</h2><div class="strips">${strips.join('\n')}</div>` : '',
    runLinks(r),
    `<footer>written by npm run bench:concepts (results.json has every number)</footer>`,
  ];
  return htmlPage({ title: `bench:concepts — seed ${r.seed}` }, body.join('\n'));
}
