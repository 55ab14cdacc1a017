/**
 * AUTOMATIC1111's prompt editing and alternation (modules/prompt_parser.py,
 * get_learned_conditioning_prompt_schedules, without a hires pass and without "old" scheduling):
 * `[from:to:when]`, `[to:when]`, `[from::when]` switch text after step `when` (an integer step,
 * or a fraction of the steps when written with a '.'), `[a|b|…]` takes the next option each step.
 *
 * A1111 parses with a lark Earley grammar; this hand-written parser gives the same texts. What
 * the grammar allows: outside any bracket group, stray brackets and colons are text but `|` is
 * not; inside a group, every bracket opens or closes a group and every `:` or `|` separates one.
 * Of the grammar's readings, lark takes the one where each bracket group that can be a group is
 * one, which is what this parser builds. Emphasis brackets stay in the text for
 * parsePromptAttention. A prompt the grammar refuses (a `|` outside brackets, a backslash at the
 * end or before a newline) is one text for every step, as in A1111.
 *
 * One case where A1111's own result varies: an edit whose `]` is directly followed by a stray
 * `[ ] ( ) :` (one that closes no group) is an edit in some Python processes and text in others,
 * as lark breaks that tie by set order, which follows Python's per-process string hash seed.
 * Here it is always an edit.
 */
import { PainterError } from '../../errors.js';
import { PY_WHITESPACE } from './attention.js';

export interface ScheduledPrompt {
  /** last sampling step (1-based, inclusive) this text applies to */
  endAtStep: number;
  text: string;
}

type PromptNode =
  | { kind: 'text'; text: string }
  | { kind: 'edit'; from: PromptNode[] | undefined; to: PromptNode[]; when: string }
  | { kind: 'alternate'; options: PromptNode[][] };

/** lark's common SIGNED_NUMBER (ASCII digits, optional exponent) between optional whitespace, then `]`. */
const WHEN = new RegExp(`[${PY_WHITESPACE}]*([+-]?(?:[0-9]+(?:\\.[0-9]*)?|\\.[0-9]+)(?:[eE][+-]?[0-9]+)?)[${PY_WHITESPACE}]*\\]`, 'uy');

/** Raised where lark's parser would fail; the prompt is then taken literally. */
class RefusedPrompt extends Error {}

/** Nodes read from a stretch of the prompt, and the index just past it. */
interface Span {
  nodes: PromptNode[];
  end: number;
}

/** Deeper groups are refused rather than overflow the stack (A1111 itself fails at a few hundred). */
const MAX_NESTING = 1000;

class Parser {
  /** Group read at an index (null: none starts there); a group's reading does not depend on its surroundings. */
  private readonly groups = new Map<number, Span | null>();
  /** Indices of the brackets that some later bracket closes, ignoring kinds: no group opens anywhere else. */
  private readonly closed = new Set<number>();
  private depth = 0;

  constructor(private readonly s: string) {
    const open: number[] = [];
    for (let i = 0; i < s.length; i++) {
      const c = s[i]!;
      if (c === '\\') i++;
      else if (c === '[' || c === '(') open.push(i);
      else if ((c === ']' || c === ')') && open.length > 0) this.closed.add(open.pop()!);
    }
  }

  /** The whole prompt: groups where they parse, any other bracket or colon as text; a bare `|` refuses it. */
  top(): PromptNode[] {
    return this.sequence(0, true)!.nodes;
  }

  /**
   * Text and groups from `start`. Inside a group (`loose` false) it stops at the first
   * `] ) : |` and fails (null) on a bracket that opens no group; at the top it reads to the end.
   */
  private sequence(start: number, loose: boolean): Span | null {
    const nodes: PromptNode[] = [];
    let text = '';
    let i = start;
    while (i < this.s.length) {
      const c = this.s[i]!;
      if (c === '|' && loose) throw new RefusedPrompt();
      if (!loose && (c === ']' || c === ')' || c === ':' || c === '|')) break;
      const g = c === '[' || c === '(' ? this.group(i) : null;
      if (g) {
        if (text) nodes.push({ kind: 'text', text });
        text = '';
        nodes.push(...g.nodes);
        i = g.end;
      } else if (c === '\\') {
        text += this.escape(i);
        i += 2;
      } else if ((c === '[' || c === '(') && !loose) {
        return null;
      } else {
        text += c;
        i++;
      }
    }
    if (text) nodes.push({ kind: 'text', text });
    return { nodes, end: i };
  }

  /** Backslash and the character it escapes; lark has no token for a backslash alone. */
  private escape(i: number): string {
    const next = this.s[i + 1];
    if (next === undefined || next === '\n') throw new RefusedPrompt();
    return this.s.slice(i, i + 2);
  }

  /** The group opening at `start` (`(…)`, `(…:…)`, `[…]`, an edit or an alternation), or null. */
  private group(start: number): Span | null {
    if (!this.closed.has(start)) return null;
    if (!this.groups.has(start)) {
      if (++this.depth > MAX_NESTING) throw new PainterError(`prompt brackets nest more than ${MAX_NESTING} deep`);
      this.groups.set(start, this.s[start] === '(' ? this.round(start) : this.square(start));
      this.depth--;
    }
    return this.groups.get(start)!;
  }

  private round(start: number): Span | null {
    const a = this.sequence(start + 1, false);
    if (!a) return null;
    const open: PromptNode = { kind: 'text', text: '(' };
    const close: PromptNode = { kind: 'text', text: ')' };
    if (this.s[a.end] === ')') return { nodes: [open, ...a.nodes, close], end: a.end + 1 };
    if (this.s[a.end] !== ':') return null;
    const b = this.sequence(a.end + 1, false);
    if (!b || this.s[b.end] !== ')') return null;
    return { nodes: [open, ...a.nodes, { kind: 'text', text: ':' }, ...b.nodes, close], end: b.end + 1 };
  }

  private square(start: number): Span | null {
    const a = this.sequence(start + 1, false);
    if (!a) return null;
    const sep = this.s[a.end];
    if (sep === ']') return { nodes: [{ kind: 'text', text: '[' }, ...a.nodes, { kind: 'text', text: ']' }], end: a.end + 1 };
    if (sep === '|') return this.alternation(a.nodes, a.end);
    if (sep !== ':') return null;
    const when = this.when(a.end + 1);
    if (when) return { nodes: [{ kind: 'edit', from: undefined, to: a.nodes, when: when.number }], end: when.end };
    const b = this.sequence(a.end + 1, false);
    if (!b || this.s[b.end] !== ':') return null;
    const late = this.when(b.end + 1);
    if (!late) return null;
    return { nodes: [{ kind: 'edit', from: a.nodes, to: b.nodes, when: late.number }], end: late.end };
  }

  private alternation(first: PromptNode[], bar: number): Span | null {
    const options = [first];
    let i = bar;
    while (this.s[i] === '|') {
      const o = this.sequence(i + 1, false);
      if (!o) return null;
      options.push(o.nodes);
      i = o.end;
    }
    if (this.s[i] !== ']') return null;
    return { nodes: [{ kind: 'alternate', options }], end: i + 1 };
  }

  /** `when]` at `i`, whitespace allowed around the number: the number as written, and the index past `]`. */
  private when(i: number): { number: string; end: number } | null {
    WHEN.lastIndex = i;
    const m = WHEN.exec(this.s);
    return m ? { number: m[1]!, end: WHEN.lastIndex } : null;
  }
}

/** The parsed prompt, or undefined where A1111's grammar refuses it. */
function parseSchedule(prompt: string): PromptNode[] | undefined {
  try {
    return new Parser(prompt).top();
  } catch (e) {
    if (e instanceof RefusedPrompt) return undefined;
    throw e;
  }
}

function* walk(nodes: readonly PromptNode[]): Generator<PromptNode> {
  for (const n of nodes) {
    yield n;
    if (n.kind === 'edit') yield* walk([...(n.from ?? []), ...n.to]);
    if (n.kind === 'alternate') for (const o of n.options) yield* walk(o);
  }
}

/**
 * The last step of an edit's first text: a number with a '.' is a fraction of the steps, one
 * without is a step; truncated toward zero, at most `steps` (0 or less: the second text throughout).
 */
function editEnd(when: string, steps: number): number {
  const v = when.includes('.') ? Number(when) * steps : Number(when);
  // Python's int() refuses infinity, so A1111 fails on such a prompt.
  if (!Number.isFinite(v)) throw new PainterError(`prompt edit step "${when}" is out of range (write e.g. [from:to:0.5] or [from:to:10])`);
  return Math.min(steps, Math.trunc(v));
}

function textAt(nodes: readonly PromptNode[], step: number, steps: number): string {
  let out = '';
  for (const n of nodes) {
    if (n.kind === 'text') out += n.text;
    else if (n.kind === 'edit') out += step <= editEnd(n.when, steps) ? textAt(n.from ?? [], step, steps) : textAt(n.to, step, steps);
    else out += textAt(n.options[(step - 1) % n.options.length]!, step, steps);
  }
  return out;
}

/** `[from:to:when]`, `[to:when]`, `[from::when]` (when = integer step, or a fraction of `steps` when written with a '.'), nested edits, `[a|b|…]` alternation (changes every step). */
export function promptSchedule(prompt: string, steps: number): ScheduledPrompt[] {
  if (!Number.isInteger(steps) || steps < 1) throw new RangeError(`steps must be a positive integer, got ${steps}`);
  const nodes = parseSchedule(prompt);
  if (!nodes) return [{ endAtStep: steps, text: prompt }];
  const ends = new Set([steps]);
  for (const n of walk(nodes)) {
    if (n.kind === 'edit') {
      const end = editEnd(n.when, steps);
      if (end >= 1) ends.add(end);
    } else if (n.kind === 'alternate') {
      for (let s = 1; s <= steps; s++) ends.add(s);
    }
  }
  return [...ends].sort((a, b) => a - b).map((endAtStep) => ({ endAtStep, text: textAt(nodes, endAtStep, steps) }));
}

/**
 * The entry of a schedule in effect at `step` (A1111's reconstruct_cond_batch): the first that
 * ends at or after it, else the first entry. A1111's samplers count steps from 0.
 */
export function entryAt<E extends { endAtStep: number }>(schedule: readonly E[], step: number): E {
  const entry = schedule.find((e) => step <= e.endAtStep) ?? schedule[0];
  if (!entry) throw new RangeError('empty prompt schedule');
  return entry;
}

/** The text in effect at `step` of a schedule (see entryAt). */
export function promptAtStep(schedule: readonly ScheduledPrompt[], step: number): string {
  return entryAt(schedule, step).text;
}

/** Whether the prompt contains edit or alternation syntax at all (cheap check). */
export function isEditedPrompt(prompt: string): boolean {
  if (!prompt.includes('[')) return false;
  const nodes = parseSchedule(prompt);
  return nodes !== undefined && [...walk(nodes)].some((n) => n.kind !== 'text');
}
