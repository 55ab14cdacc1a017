/**
 * One way to validate a config: rules are plain data (`{ type: 'integer', min: 1 }`), a value is
 * checked against a rule with one message style ("must be an integer ≥ 1, got 0"), and a
 * FieldReader reads a config.json field by field, collecting every problem so the user sees all
 * of them at once in one PainterError naming the file. The component parsers (UNet, VAE, CLIP
 * text encoder, scheduler) share it; `checkRule` serves any other "value against a rule" check.
 */
import { PainterError } from '../errors.js';

interface Nullable {
  /** null passes (and is read as null). */
  nullable?: boolean;
}

export interface BooleanRule extends Nullable {
  type: 'boolean';
}

export interface StringRule extends Nullable {
  type: 'string';
  choices?: readonly string[];
}

export interface NumberRule extends Nullable {
  type: 'number' | 'integer';
  /** Inclusive bounds. */
  min?: number;
  max?: number;
  /** Exclusive bounds: the value must be greater than `above` / less than `below`. */
  above?: number;
  below?: number;
  /** ±Infinity passes (NaN never does). */
  infinite?: boolean;
}

export type ScalarRule = BooleanRule | StringRule | NumberRule;

export interface ListRule extends Nullable {
  type: 'list';
  items: ScalarRule;
  nonEmpty?: boolean;
  /** A single item passes too (diffusers' "one value, or one per block" fields). */
  orItem?: boolean;
}

export type Rule = ScalarRule | ListRule;
export type RuleType = Rule['type'];

/** The TypeScript type of a value that passes a scalar rule. */
export type ScalarValue<R> = R extends BooleanRule
  ? boolean
  : R extends { type: 'string'; choices: readonly (infer C)[] }
    ? C
    : R extends StringRule
      ? string
      : number;

/** The TypeScript type of a value that passes `R`. */
export type RuleValue<R extends Rule> =
  | (R extends { type: 'list'; items: infer I }
      ? R extends { orItem: true }
        ? ScalarValue<I> | ScalarValue<I>[]
        : ScalarValue<I>[]
      : ScalarValue<R>)
  | (R extends { nullable: true } ? null : never);

export type NumberBounds = Pick<NumberRule, 'min' | 'max' | 'above' | 'below'>;

function scalarOk(rule: ScalarRule, v: unknown): boolean {
  switch (rule.type) {
    case 'boolean':
      return typeof v === 'boolean';
    case 'string':
      return typeof v === 'string' && (rule.choices === undefined || rule.choices.includes(v));
    case 'number':
    case 'integer':
      if (typeof v !== 'number' || Number.isNaN(v) || (!rule.infinite && !Number.isFinite(v))) return false;
      if (rule.type === 'integer' && Number.isFinite(v) && !Number.isInteger(v)) return false;
      return !(
        (rule.min !== undefined && v < rule.min) ||
        (rule.max !== undefined && v > rule.max) ||
        (rule.above !== undefined && v <= rule.above) ||
        (rule.below !== undefined && v >= rule.below)
      );
  }
}

/** Whether `value` passes `rule`. */
export function matchesRule(rule: Rule, value: unknown): boolean {
  if (value === null) return rule.nullable === true;
  if (rule.type !== 'list') return scalarOk(rule, value);
  if (rule.orItem && scalarOk(rule.items, value)) return true;
  return Array.isArray(value) && (value.length > 0 || !rule.nonEmpty) && value.every((x) => scalarOk(rule.items, x));
}

function bounds(r: NumberRule): string {
  const lo = r.above ?? r.min;
  const hi = r.below ?? r.max;
  const open = r.above !== undefined;
  const close = r.below !== undefined;
  if (lo !== undefined && hi !== undefined) return ` in ${open ? '(' : '['}${lo}, ${hi}${close ? ')' : ']'}`;
  if (lo !== undefined) return open ? ` > ${lo}` : ` ≥ ${lo}`;
  if (hi !== undefined) return close ? ` < ${hi}` : ` ≤ ${hi}`;
  return '';
}

function describeScalar(r: ScalarRule, plural: boolean): string {
  switch (r.type) {
    case 'boolean':
      return plural ? 'booleans' : 'true or false';
    case 'string': {
      if (r.choices === undefined) return plural ? 'strings' : 'a string';
      const list = r.choices.map((c) => JSON.stringify(c)).join(', ');
      return plural ? `entries from ${list}` : `one of ${list}`;
    }
    case 'number':
    case 'integer': {
      if (r.type === 'number' && r.above === 0 && r.below === undefined && r.max === undefined) {
        return plural ? 'positive numbers' : 'a positive number';
      }
      const noun = r.type === 'integer' ? 'integer' : r.infinite ? 'number' : 'finite number';
      const article = noun === 'integer' ? 'an' : 'a';
      return `${plural ? `${noun}s` : `${article} ${noun}`}${bounds(r)}`;
    }
  }
}

/** What a value passing `rule` is, as a phrase after "must be" ("an integer ≥ 1"). */
export function describeRule(rule: Rule): string {
  let text: string;
  if (rule.type === 'list') {
    text = `${rule.nonEmpty ? 'a non-empty list' : 'a list'} of ${describeScalar(rule.items, true)}`;
    if (rule.orItem) text = `${describeScalar(rule.items, false)} or ${text}`;
  } else {
    text = describeScalar(rule, false);
  }
  return rule.nullable ? `null or ${text}` : text;
}

/** A value for a message: JSON, shortened (a 1000-entry list would drown the other problems). */
export function showValue(v: unknown): string {
  const s = typeof v === 'number' ? String(v) : (JSON.stringify(v) ?? String(v));
  return s.length > 60 ? `${s.slice(0, 57)}…` : s;
}

/** For a number of the right type: which bound it breaks, as "at least 1". */
function brokenBound(r: NumberRule, v: number): string | undefined {
  if (r.type === 'integer' && !Number.isInteger(v)) return 'a whole number';
  if (r.min !== undefined && v < r.min) return `at least ${r.min}`;
  if (r.max !== undefined && v > r.max) return `at most ${r.max}`;
  if (r.above !== undefined && v <= r.above) return `greater than ${r.above}`;
  if (r.below !== undefined && v >= r.below) return `less than ${r.below}`;
  return undefined;
}

/**
 * Checks one value against a rule: undefined when it passes, else "must be …, got …" naming the
 * first thing wrong: its type ("a number"), then the bound or choice it misses ("at least 1",
 * "one of object, style").
 */
export function checkRule(rule: Rule, value: unknown): string | undefined {
  if (matchesRule(rule, value)) return undefined;
  const got = `got ${showValue(value)}`;
  if (value !== null && rule.type !== 'list') {
    if ((rule.type === 'number' || rule.type === 'integer') && typeof value === 'number' && !Number.isNaN(value)) {
      if (!rule.infinite && !Number.isFinite(value)) return `must be a finite number, ${got}`;
      const broken = brokenBound(rule, value);
      if (broken) return `must be ${broken}, ${got}`;
    }
    if (rule.type === 'number' || rule.type === 'integer') {
      if (typeof value !== 'number' || Number.isNaN(value)) return `must be ${rule.nullable ? 'null or ' : ''}a number, ${got}`;
    }
    if (rule.type === 'string' && typeof value === 'string' && rule.choices) return `must be one of ${rule.choices.join(', ')}, ${got}`;
  }
  return `must be ${describeRule(rule)}, ${got}`;
}

/** The config object itself, or a PainterError naming `source` and what was expected. */
export function configObject(json: unknown, source: string, what: string): Record<string, unknown> {
  if (typeof json !== 'object' || json === null || Array.isArray(json)) {
    throw new PainterError(`${source}: expected a JSON object (${what})`);
  }
  return json as Record<string, unknown>;
}

/** A value of the right shape to stand in for a field that failed (the config is then rejected). */
function placeholder(rule: Rule): unknown {
  if (rule.nullable) return null;
  switch (rule.type) {
    case 'boolean':
      return false;
    case 'string':
      return rule.choices?.[0] ?? '';
    case 'number':
    case 'integer':
      return rule.min ?? 0;
    case 'list':
      return [];
  }
}

export interface FieldReaderOptions {
  /**
   * A null field reads as absent (takes its default) instead of failing its rule: for every
   * rule (true) or for rules of the listed types. Nullable rules still read null as null.
   */
  nullIsDefault?: boolean | readonly RuleType[];
}

/**
 * Reads the fields of one config object. An absent field takes its default, or is reported
 * missing when it has none; a field that fails its rule is reported and reads as its default
 * (or a placeholder). Callers add their own cross-field problems with `problem()` and finish
 * with `throwIfProblems()`; a config read with problems must not be used.
 */
export class FieldReader {
  readonly problems: string[] = [];

  constructor(
    private readonly json: Readonly<Record<string, unknown>>,
    private readonly options: FieldReaderOptions = {},
  ) {}

  raw(key: string): unknown {
    return this.json[key];
  }

  has(key: string): boolean {
    return this.json[key] !== undefined;
  }

  /** The field checked against `rule`; absent → `dflt`, or a "missing" problem without one. */
  read<const R extends Rule, D = RuleValue<R>>(key: string, rule: R, dflt?: D): RuleValue<R> | D {
    const v = this.raw(key);
    if (v === undefined || (v === null && !rule.nullable && this.nullIsDefault(rule))) {
      if (dflt !== undefined) return dflt;
      this.problem(`"${key}" is missing`);
      return placeholder(rule) as RuleValue<R>;
    }
    if (this.check(key, rule)) return v as RuleValue<R>;
    return dflt ?? (placeholder(rule) as RuleValue<R>);
  }

  /** Checks the value at `key` (absent included) and reports it; true when it passes. */
  check(key: string, rule: Rule): boolean {
    const problem = checkRule(rule, this.raw(key));
    if (problem) this.problem(`"${key}" ${problem}`);
    return problem === undefined;
  }

  int(key: string, dflt?: number, min = 1): number {
    return this.read(key, { type: 'integer', min }, dflt);
  }

  /** A finite number, optionally bounded. */
  number(key: string, dflt?: number, within: NumberBounds = {}): number {
    return this.read(key, { type: 'number', ...within }, dflt);
  }

  bool(key: string, dflt?: boolean): boolean {
    return this.read(key, { type: 'boolean' }, dflt);
  }

  choice<const T extends string>(key: string, choices: readonly T[], dflt?: T): T {
    return this.read(key, { type: 'string', choices }, dflt) as T;
  }

  /** A non-empty list of items passing `items`. */
  list<const I extends ScalarRule>(key: string, items: I, dflt?: ScalarValue<I>[]): ScalarValue<I>[] {
    return this.read(key, { type: 'list', items, nonEmpty: true }, dflt) as ScalarValue<I>[];
  }

  /** An integer ≥ min, or a non-empty list of them (one per block). */
  intOrList(key: string, dflt?: number, min = 1): number | number[] {
    return this.read(key, { type: 'list', items: { type: 'integer', min }, nonEmpty: true, orItem: true }, dflt);
  }

  /** A field painter does not implement: accepted only where `ok` approves (absent is ok). */
  unsupported(key: string, ok: (v: unknown) => boolean, why: string): void {
    if (this.has(key) && !ok(this.raw(key))) this.problem(`"${key}": ${showValue(this.raw(key))} is not supported (${why})`);
  }

  problem(text: string): void {
    this.problems.push(text);
  }

  /** Throws one PainterError "`context`: problem; problem; …" if any problem was found. */
  throwIfProblems(context: string): void {
    if (this.problems.length > 0) throw new PainterError(`${context}: ${this.problems.join('; ')}`);
  }

  private nullIsDefault(rule: Rule): boolean {
    const n = this.options.nullIsDefault ?? false;
    return typeof n === 'boolean' ? n : n.includes(rule.type);
  }
}
