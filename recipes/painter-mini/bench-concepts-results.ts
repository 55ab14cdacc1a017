/**
 * bench:concepts' results and its table (pure): what the classifier reads from a sample, how a set
 * of readings scores against the subject, the result of each part and the rows of table.md (which
 * the report page, bench-page.ts, shows too).
 */
import type { LabelName, Subject } from './world.js';

/** What the classifier reads from one image, as class names. */
export type Reading = Record<LabelName, string>;

/** The subject's attributes as the classifier names them. */
export function subjectReading(s: Subject): Pick<Reading, 'object' | 'colour' | 'pattern' | 'feature'> {
  return { object: s.object, colour: s.colour, pattern: s.pattern, feature: s.features[0]?.kind ?? 'none' };
}

export interface SubjectScore {
  /** Object, colour, pattern and accessory all read as the subject's. */
  subject: number;
  /** Object, colour and pattern (the held-out combination) without the accessory. */
  combination: number;
  object: number;
  colour: number;
  pattern: number;
  feature: number;
  /**
   * How much the samples look like the subject beyond its class: the mean share of its colour,
   * pattern and accessory they carry (the analogue of the DreamBooth paper's DINO similarity).
   */
  likeness: number;
}

export function scoreSubject(readings: readonly Reading[], s: Subject): SubjectScore {
  const want = subjectReading(s);
  const frac = (f: (r: Reading) => boolean) => (readings.length === 0 ? 0 : readings.filter(f).length / readings.length);
  const combo = (r: Reading) => r['object'] === want.object && r['colour'] === want.colour && r['pattern'] === want.pattern;
  const colour = frac((r) => r['colour'] === want.colour);
  const pattern = frac((r) => r['pattern'] === want.pattern);
  const feature = frac((r) => r['feature'] === want.feature);
  return {
    subject: frac((r) => combo(r) && r['feature'] === want.feature),
    combination: frac(combo),
    object: frac((r) => r['object'] === want.object),
    colour,
    pattern,
    feature,
    likeness: (colour + pattern + feature) / 3,
  };
}

/**
 * The share of samples whose background reads as one of the training photos' background colours:
 * how much of the photos' backgrounds a method learnt into its token (the prompt names none).
 */
export function backgroundLeak(readings: readonly Reading[], trainingBackgrounds: readonly string[]): number {
  if (readings.length === 0) return 0;
  return readings.filter((r) => trainingBackgrounds.includes(r['backgroundColour'])).length / readings.length;
}

export interface MethodResult {
  label: string;
  prompt: string;
  score: SubjectScore;
  /**
   * PRES (DreamBooth and pivotal tuning): the class-prompt samples' likeness to the subject. The
   * paper's PRES is a similarity too (DINO) — higher: the class has drifted towards the subject.
   */
  pres?: number;
  /** Every reading of the class-prompt samples (DreamBooth only): which of the subject's attributes leak. */
  classScore?: SubjectScore;
  /** The share of its samples on a training photo's background colour (backgroundLeak). */
  backgroundLeak?: number;
  trainSeconds?: number;
}

/** What was measured (parts left out with --only are absent). */
export interface ConceptBenchResult {
  seed: number;
  subject: string;
  backend: string;
  psnr?: { scenes: number; mean: number; min: number };
  promptFidelity?: { prompts: number; object: number; colour: number; background: number };
  /** The classifier on real photos of the subject: the ceiling of every subject score. */
  reference?: SubjectScore;
  /** The background colours of the photos the methods train on. */
  trainingBackgrounds?: string[];
  baseline?: MethodResult;
  textualInversion?: MethodResult;
  /** Textual Inversion with a mask of the subject on each photo (masked loss). */
  maskedTextualInversion?: MethodResult;
  dreamboothPrior?: MethodResult;
  dreamboothNoPrior?: MethodResult;
  /** Pivotal tuning: a DreamBooth-LoRA whose identifier is a new embedding learnt with it, prior preservation on. */
  pivotal?: MethodResult;
  seconds: number;
}

export const pct = (x: number) => `${(100 * x).toFixed(0)}%`;

type Row = [string, string, string, string];

/** The table's rows: measure, value, target, status (table.md and the report page show them). */
export function benchRows(r: ConceptBenchResult): Row[] {
  const rows: Row[] = [];
  const ok = (b: boolean) => (b ? 'met' : 'MISSED');
  if (r.psnr) rows.push(['VAE reconstruction PSNR', `${r.psnr.mean.toFixed(1)} dB (min ${r.psnr.min.toFixed(1)}, ${r.psnr.scenes} held-out scenes)`, '≥ 25 dB', ok(r.psnr.mean >= 25)]);
  const pf = r.promptFidelity;
  if (pf) {
    rows.push([`prompt fidelity: object (${pf.prompts} captions)`, pct(pf.object), '≥ 70%', ok(pf.object >= 0.7)]);
    rows.push(['prompt fidelity: colour', pct(pf.colour), '≥ 80%', ok(pf.colour >= 0.8)]);
    rows.push(['prompt fidelity: background colour', pct(pf.background), '', '']);
  }
  const m = (x: SubjectScore) => `${pct(x.subject)} (combination ${pct(x.combination)}; obj ${pct(x.object)} col ${pct(x.colour)} pat ${pct(x.pattern)} acc ${pct(x.feature)}; likeness ${pct(x.likeness)})`;
  if (r.reference) rows.push(['classifier on real photos of the subject', m(r.reference), 'ceiling', '']);
  const base = r.baseline;
  if (base) rows.push([`baseline "${base.prompt}"`, m(base.score), '', '']);
  const overBaseline = (x: MethodResult): [string, string] => {
    const ratio = base!.score.combination > 0 ? `${(x.score.combination / base!.score.combination).toFixed(1)}×` : 'baseline 0';
    return ['≥ 3× baseline (combination)', `${ratio} ${ok(x.score.combination > 0 && x.score.combination >= 3 * base!.score.combination)}`];
  };
  const ti = r.textualInversion;
  if (ti && base) rows.push([`Textual Inversion "${ti.prompt}"`, m(ti.score), ...overBaseline(ti)]);
  const mti = r.maskedTextualInversion;
  if (mti && base) rows.push([`Textual Inversion, masked loss "${mti.prompt}"`, m(mti.score), ...overBaseline(mti)]);
  const dp = r.dreamboothPrior;
  const dn = r.dreamboothNoPrior;
  if (dp && dn) {
    rows.push([`DreamBooth + prior "${dp.prompt}"`, m(dp.score), ti ? '> TI (subject)' : '', ti ? ok(dp.score.subject > ti.score.subject) : '']);
    // Prior preservation must not cost the subject: neither its exact reading nor its likeness.
    const near = Math.abs(dp.score.subject - dn.score.subject) <= 0.1 && Math.abs(dp.score.likeness - dn.score.likeness) <= 0.1;
    rows.push(['DreamBooth without prior', m(dn.score), 'within 10 points of + prior (subject, likeness)', ok(near)]);
    const cut = dn.pres! > 0 ? 1 - dp.pres! / dn.pres! : 0;
    rows.push(['PRES (class samples\' likeness to the subject)', `${pct(dp.pres!)} with prior, ${pct(dn.pres!)} without`, 'prior cuts ≥ 1/3', `${pct(cut)} cut ${ok(dn.pres! > 0 && cut >= 1 / 3)}`]);
    if (dp.classScore && dn.classScore) {
      rows.push(['class-prompt samples, with prior', m(dp.classScore), '', '']);
      rows.push(['class-prompt samples, without prior', m(dn.classScore), '', '']);
    }
  }
  const pv = r.pivotal;
  if (pv) {
    // The issue's question: does the embedding learnt with the LoRA look more like the subject than either method alone?
    const rivals = [ti && (['TI', ti] as const), dp && (['DreamBooth + prior', dp] as const)].filter((x) => !!x);
    const beaten = rivals.filter(([, x]) => pv.score.likeness > x.score.likeness).map(([name]) => name);
    const status = rivals.length === 0 ? '' : `${rivals.map(([name, x]) => `${name} ${pct(x.score.likeness)}`).join(', ')}: ${ok(beaten.length === rivals.length)}`;
    rows.push([`pivotal tuning (LoRA + embedding, + prior) "${pv.prompt}"`, m(pv.score), rivals.length > 0 ? `> ${rivals.map(([name]) => name).join(' and ')} (likeness)` : '', status]);
    rows.push(['PRES, pivotal tuning', `${pct(pv.pres!)}${dp ? ` (DreamBooth + prior ${pct(dp.pres!)})` : ''}`, '', '']);
    if (pv.classScore) rows.push(['class-prompt samples, pivotal tuning', m(pv.classScore), '', '']);
  }
  const bg = r.trainingBackgrounds;
  const leaks = ([['baseline', base], ['TI', ti], ['masked TI', mti], ['DreamBooth + prior', dp], ['DreamBooth without prior', dn], ['pivotal', pv]] as const).filter(([, x]) => x?.backgroundLeak !== undefined);
  if (bg && leaks.length > 0) {
    const target = ti && mti ? 'masked < TI' : '';
    const status = ti && mti ? ok(mti.backgroundLeak! < ti.backgroundLeak!) : '';
    rows.push([`samples on a training photo's background colour (${bg.join(', ')})`, leaks.map(([name, x]) => `${name} ${pct(x!.backgroundLeak!)}`).join(', '), target, status]);
  }
  return rows;
}

export function formatTable(r: ConceptBenchResult): string {
  const rows = benchRows(r);
  const widths = [0, 1, 2, 3].map((i) => Math.max(...rows.map((row) => row[i]!.length), ['measure', 'value', 'target', 'status'][i]!.length));
  const line = (cells: string[]) => `| ${cells.map((c, i) => c.padEnd(widths[i]!)).join(' | ')} |`;
  return [
    `painter-mini concept benchmark — seed ${r.seed}, subject "${r.subject}", backend ${r.backend}, ${(r.seconds / 60).toFixed(1)} min`,
    line(['measure', 'value', 'target', 'status']),
    line(widths.map((w) => '-'.repeat(w))),
    ...rows.map(line),
  ].join('\n');
}
