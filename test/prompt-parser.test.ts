/**
 * AUTOMATIC1111's prompt language against modules/prompt_parser.py: the doctests of
 * parse_prompt_attention and get_learned_conditioning_prompt_schedules (base_steps only), diffusers'
 * lpw copy of the emphasis parser, and further cases whose expected values are A1111's code run
 * under lark (the grammar's Earley parser) with the same inputs.
 */
import { describe, expect, it } from 'vitest';
import { PainterError } from '../src/errors.js';
import { hasEmphasis, parsePromptAttention, type PromptFragment } from '../src/core/prompt/attention.js';
import { isEditedPrompt, promptAtStep, promptSchedule } from '../src/core/prompt/schedule.js';

const t = (text: string, weight: number): PromptFragment => ({ kind: 'text', text, weight });
const BREAK: PromptFragment = { kind: 'break' };

/** A schedule in A1111's doctest form, [end_at_step, text] pairs; 10 steps as in its doctests. */
const g = (prompt: string, steps = 10) => promptSchedule(prompt, steps).map((e) => [e.endAtStep, e.text]);

describe('parsePromptAttention', () => {
  it("gives A1111's doctest results, doubles included", () => {
    expect(parsePromptAttention('normal text')).toEqual([t('normal text', 1)]);
    expect(parsePromptAttention('an (important) word')).toEqual([t('an ', 1), t('important', 1.1), t(' word', 1)]);
    expect(parsePromptAttention('(unbalanced')).toEqual([t('unbalanced', 1.1)]);
    expect(parsePromptAttention('\\(literal\\]')).toEqual([t('(literal]', 1)]);
    expect(parsePromptAttention('(unnecessary)(parens)')).toEqual([t('unnecessaryparens', 1.1)]);
    // 1.3 × 1.1 × 1.1 in that order: 1.3 × 1.21 would be 1.573 exactly.
    expect(parsePromptAttention('a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).')).toEqual([
      t('a ', 1),
      t('house', 1.5730000000000004),
      t(' ', 1.1),
      t('on', 1),
      t(' a ', 1.1),
      t('hill', 0.55),
      t(', sun, ', 1.1),
      t('sky', 1.4641000000000006),
      t('.', 1.1),
    ]);
  });

  it("gives diffusers' lpw reference results", () => {
    expect(parsePromptAttention('a (cat:1.3) and a (dog) in the [forest], ((masterpiece))')).toEqual([
      t('a ', 1),
      t('cat', 1.3),
      t(' and a ', 1),
      t('dog', 1.1),
      t(' in the ', 1),
      t('forest', 0.9090909090909091),
      t(', ', 1),
      t('masterpiece', 1.2100000000000002),
    ]);
    expect(parsePromptAttention('(blurry:1.2), low quality')).toEqual([t('blurry', 1.2), t(', low quality', 1)]);
  });

  it('reads an empty prompt, and one with nothing but brackets, as one empty text', () => {
    expect(parsePromptAttention('')).toEqual([t('', 1)]);
    expect(parsePromptAttention('()')).toEqual([t('', 1)]);
  });

  it('multiplies nested and unclosed brackets as A1111 does', () => {
    expect(parsePromptAttention('((a)')).toEqual([t('a', 1.2100000000000002)]);
    expect(parsePromptAttention('[[a]]')).toEqual([t('a', 0.8264462809917354)]);
    expect(parsePromptAttention('[(a)]')).toEqual([t('a', 1)]);
    expect(parsePromptAttention('[a')).toEqual([t('a', 0.9090909090909091)]);
    expect(parsePromptAttention('(a:-1)')).toEqual([t('a', -1)]);
    expect(parsePromptAttention('x (a:.5) y')).toEqual([t('x ', 1), t('a', 0.5), t(' y', 1)]);
    expect(parsePromptAttention('(a: 1.2 )')).toEqual([t('a', 1.2)]);
    // Python's \d takes any decimal digit, and float() reads it.
    expect(parsePromptAttention('(a:١.٥)')).toEqual([t('a', 1.5)]);
  });

  it('keeps stray closers, colons and weights without an open bracket as text; drops a lone backslash', () => {
    expect(parsePromptAttention('a)')).toEqual([t('a)', 1)]);
    expect(parsePromptAttention('a:b')).toEqual([t('a:b', 1)]);
    expect(parsePromptAttention('a:1.2)')).toEqual([t('a:1.2)', 1)]);
    expect(parsePromptAttention('a\\\\b')).toEqual([t('a\\b', 1)]);
    expect(parsePromptAttention('a\\b')).toEqual([t('ab', 1)]);
  });

  it('refuses a weight that Python cannot read as a number, as A1111 does', () => {
    expect(() => parsePromptAttention('(a:1.2.3)')).toThrow(PainterError);
    expect(() => parsePromptAttention('(a:.)')).toThrow(/"\."/);
  });

  it('splits at BREAK, a whole word with the whitespace around it', () => {
    expect(parsePromptAttention('a BREAK b')).toEqual([t('a', 1), BREAK, t('b', 1)]);
    expect(parsePromptAttention('BREAK')).toEqual([t('', 1), BREAK, t('', 1)]);
    expect(parsePromptAttention('a BREAK\nBREAK b')).toEqual([t('a', 1), BREAK, t('', 1), BREAK, t('b', 1)]);
    expect(parsePromptAttention('a BREAKfast')).toEqual([t('a BREAKfast', 1)]);
    expect(parsePromptAttention('aBREAK b')).toEqual([t('aBREAK b', 1)]);
    // é is a letter to Python's \b, unlike JavaScript's.
    expect(parsePromptAttention('éBREAK')).toEqual([t('éBREAK', 1)]);
  });

  it('treats a bracketed BREAK as A1111 does: scaled, it is the word "BREAK"; at weight 0 it merges', () => {
    expect(parsePromptAttention('(a BREAK b)')).toEqual([t('a', 1.1), t('BREAK', -1.1), t('b', 1.1)]);
    expect(parsePromptAttention('(a BREAK b:0)')).toEqual([t('aBREAKb', 0)]);
  });
});

describe('hasEmphasis', () => {
  it('is false for text the plain encoding reads the same', () => {
    for (const p of ['a photo of a cat', '', 'a: b', 'a)', 'a]']) expect(hasEmphasis(p), p).toBe(false);
  });

  it('is true for weights, escapes, BREAK, and brackets that change the text', () => {
    for (const p of ['(a)', '[a]', '(a:1)', '\\(a\\)', 'a BREAK b', 'a(', 'a\\b']) expect(hasEmphasis(p), p).toBe(true);
  });
});

describe('promptSchedule', () => {
  it("gives A1111's doctest results", () => {
    expect(g('test')).toEqual([[10, 'test']]);
    expect(g('a [b:3]')).toEqual([[3, 'a '], [10, 'a b']]);
    expect(g('a [b: 3]')).toEqual([[3, 'a '], [10, 'a b']]);
    expect(g('a [[[b]]:2]')).toEqual([[2, 'a '], [10, 'a [[b]]']]);
    expect(g('[(a:2):3]')).toEqual([[3, ''], [10, '(a:2)']]);
    expect(g('a [b : c : 1] d')).toEqual([[1, 'a b  d'], [10, 'a  c  d']]);
    expect(g('a[b:[c:d:2]:1]e')).toEqual([[1, 'abe'], [2, 'ace'], [10, 'ade']]);
    expect(g('a [unbalanced')).toEqual([[10, 'a [unbalanced']]);
    expect(g('a [b:.5] c')).toEqual([[5, 'a  c'], [10, 'a b c']]);
    expect(g('((a][:b:c [d:3]')).toEqual([[3, '((a][:b:c '], [10, '((a][:b:c d']]);
    expect(g('[a|(b:1.1)]')).toEqual([
      [1, 'a'], [2, '(b:1.1)'], [3, 'a'], [4, '(b:1.1)'], [5, 'a'],
      [6, '(b:1.1)'], [7, 'a'], [8, '(b:1.1)'], [9, 'a'], [10, '(b:1.1)'],
    ]);
    expect(g('[fe|]male')).toEqual([
      [1, 'female'], [2, 'male'], [3, 'female'], [4, 'male'], [5, 'female'],
      [6, 'male'], [7, 'female'], [8, 'male'], [9, 'female'], [10, 'male'],
    ]);
    expect(g('[fe|||]male')).toEqual([
      [1, 'female'], [2, 'male'], [3, 'male'], [4, 'male'], [5, 'female'],
      [6, 'male'], [7, 'male'], [8, 'male'], [9, 'female'], [10, 'male'],
    ]);
  });

  it("follows A1111's code where its doctest is stale: a `|` outside an alternation refuses the grammar", () => {
    // The doctest ("not handling this right now") says [[5, 'a  c'], [10, 'a {b|d{ c']]; it
    // predates the alternation syntax, which took `|` out of plain text.
    expect(g('a [{b|d{:.5] c')).toEqual([[10, 'a [{b|d{:.5] c']]);
  });

  it("gives the schedule of A1111's prompt_parser.py header example", () => {
    const p = 'fantasy landscape with a [mountain:lake:0.25] and [an oak:a christmas tree:0.75][ in foreground::0.6][ in background:0.25] [shoddy:masterful:0.5]';
    expect(g(p, 100)).toEqual([
      [25, 'fantasy landscape with a mountain and an oak in foreground shoddy'],
      [50, 'fantasy landscape with a lake and an oak in foreground in background shoddy'],
      [60, 'fantasy landscape with a lake and an oak in foreground in background masterful'],
      [75, 'fantasy landscape with a lake and an oak in background masterful'],
      [100, 'fantasy landscape with a lake and a christmas tree in background masterful'],
    ]);
  });

  it('returns entries with the step they end at and their text', () => {
    expect(promptSchedule('a [b::3] c', 10)).toEqual([
      { endAtStep: 3, text: 'a b c' },
      { endAtStep: 10, text: 'a  c' },
    ]);
  });

  it('reads `when` as a step, or a fraction of the steps when it has a point, truncated and clamped', () => {
    expect(g('a [b:c:0] d')).toEqual([[10, 'a c d']]);
    expect(g('a [b:c:-2] d')).toEqual([[10, 'a c d']]);
    expect(g('a [b:c:0.05] d')).toEqual([[10, 'a c d']]);
    expect(g('a [b:c:15] d')).toEqual([[10, 'a b d']]);
    expect(g('[a:b:+4]')).toEqual([[4, 'a'], [10, 'b']]);
    expect(g('[a:b:2.]')).toEqual([[10, 'a']]);
    expect(g('[a:b:.5]', 3)).toEqual([[1, 'a'], [3, 'b']]);
    expect(g('[a:b:0.34]', 3)).toEqual([[1, 'a'], [3, 'b']]);
    // lark's number takes an exponent; without a point it is a step: 1e1 = 10, 5e-1 → 0.
    expect(g('[a:b:1e1]')).toEqual([[10, 'a']]);
    expect(g('[a:b:5e-1]')).toEqual([[10, 'b']]);
  });

  it('without a hires pass, a `when` of 1 or more with a point is a fraction past the end: the first text throughout', () => {
    expect(g('a [b:1.5] c')).toEqual([[10, 'a  c']]);
  });

  it("allows Python's whitespace around the number", () => {
    expect(g('a [b:c: 3 ] d')).toEqual([[3, 'a b d'], [10, 'a c d']]);
    expect(g('a [b:c:\t3\n] d')).toEqual([[3, 'a b d'], [10, 'a c d']]);
    expect(g('a [b:c:\u30003] d')).toEqual([[3, 'a b d'], [10, 'a c d']]);
    expect(g('a [b:c:\ufeff3] d')).toEqual([[10, 'a [b:c:\ufeff3] d']]);
  });

  it('leaves emphasis brackets in the text for parsePromptAttention', () => {
    expect(g('(a:1.2) [b] (c) [d:e:5]')).toEqual([[5, '(a:1.2) [b] (c) d'], [10, '(a:1.2) [b] (c) e']]);
    expect(g('(a [b:c:2] d:1.2)')).toEqual([[2, '(a b d:1.2)'], [10, '(a c d:1.2)']]);
    expect(g('[ (a:b) |c]', 4)).toEqual([[1, ' (a:b) '], [2, 'c'], [3, ' (a:b) '], [4, 'c']]);
  });

  it('does not read escaped brackets or colons as an edit', () => {
    expect(g('\\[b:3]')).toEqual([[10, '\\[b:3]']]);
    expect(g('[b\\:3]')).toEqual([[10, '[b\\:3]']]);
  });

  it('nests, chains and alternates edits', () => {
    expect(g('[a|[b:c:2]]', 4)).toEqual([[1, 'a'], [2, 'b'], [3, 'a'], [4, 'c']]);
    expect(g('[a:1][b:2]')).toEqual([[1, ''], [2, 'a'], [10, 'ab']]);
    expect(g('x [a|b] y [c:d:2]', 3)).toEqual([[1, 'x a y c'], [2, 'x b y c'], [3, 'x a y d']]);
    expect(g('[a|b|c]', 5)).toEqual([[1, 'a'], [2, 'b'], [3, 'c'], [4, 'a'], [5, 'b']]);
    expect(g('[a|b]', 1)).toEqual([[1, 'a']]);
  });

  it('keeps groups that are neither edits nor alternations as text', () => {
    for (const p of ['[a:b:3|c]', '[a|b:3]', '[a:b:c:3]', '[a:b:3x]', '[(a:3]']) expect(g(p), p).toEqual([[10, p]]);
  });

  it('takes a prompt the grammar refuses as one text, as A1111 does', () => {
    for (const p of ['a|b [c:3]', 'a [b|c', 'a [b:3] \\', 'a [b:3] \\\nc']) expect(g(p), p).toEqual([[10, p]]);
    // Python's `.` takes a carriage return, so this backslash escapes it.
    expect(g('a [b:3] \\\rc')).toEqual([[3, 'a  \\\rc'], [10, 'a b \\\rc']]);
  });

  it("reads an edit before a stray bracket as an edit (A1111's result there depends on Python's hash seed)", () => {
    expect(g('[c:3](')).toEqual([[3, '('], [10, 'c(']]);
    expect(g('a [b:3]] c')).toEqual([[3, 'a ] c'], [10, 'a b] c']]);
  });

  it('reads long runs of brackets and deep nesting (A1111 overflows at 500 edits), and refuses deeper than 1000', () => {
    expect(g('('.repeat(5000))).toEqual([[10, '('.repeat(5000)]]);
    expect(g('[a:'.repeat(200) + 'b' + ':1]'.repeat(200))).toEqual([[1, 'a'], [10, 'b']]);
    expect(g('[a:'.repeat(500) + 'b' + ':1]'.repeat(500))).toEqual([[1, 'a'], [10, 'b']]);
    expect(() => g('('.repeat(1001) + ')'.repeat(1001))).toThrow(PainterError);
  });

  it('refuses a `when` Python cannot make an integer, and a step count that is not one', () => {
    expect(() => g('[a:b:1e999]')).toThrow(PainterError);
    expect(() => promptSchedule('a', 0)).toThrow(RangeError);
    expect(() => promptSchedule('a', 2.5)).toThrow(RangeError);
  });
});

describe('promptAtStep', () => {
  it('gives the first entry ending at or after the step, else the first entry', () => {
    const schedule = promptSchedule('a [b:3]', 10);
    expect([1, 2, 3, 4, 10].map((s) => promptAtStep(schedule, s))).toEqual(['a ', 'a ', 'a ', 'a b', 'a b']);
    expect(promptAtStep(schedule, 11)).toBe('a ');
    expect(() => promptAtStep([], 1)).toThrow(RangeError);
  });
});

describe('isEditedPrompt', () => {
  it('is true for edits and alternations, even ones that never change the text', () => {
    for (const p of ['a [b:c:3]', '[a|b]', '[a:b:0]', '(x [a::20])']) expect(isEditedPrompt(p), p).toBe(true);
  });

  it('is false for emphasis, escapes and prompts the grammar refuses', () => {
    for (const p of ['a cat', '(a:1.2) [b]', '\\[a:3]', 'a|b [c:3]', '[a:b:c:3]']) expect(isEditedPrompt(p), p).toBe(false);
  });
});
