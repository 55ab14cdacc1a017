/**
 * AUTOMATIC1111's emphasis syntax (modules/prompt_parser.py, parse_prompt_attention):
 * `(x)` ×1.1, `[x]` ÷1.1, `(x:w)` ×w, nesting multiplies, `\(` `\)` `\[` `\]` `\\` are literal,
 * brackets left open apply to the end of the prompt, and `BREAK` starts a new chunk. The result
 * must be the same list of texts and doubles as A1111's, so the algorithm keeps its order of
 * operations: each closing bracket multiplies every fragment since its opening one, in place.
 */
import { PainterError } from '../../errors.js';

export type PromptFragment = { kind: 'text'; text: string; weight: number } | { kind: 'break' };

/**
 * Python's `\s` in a str pattern (the characters for which str.isspace() holds). JavaScript's
 * `\s` differs: it has U+FEFF and lacks U+001C–U+001F and U+0085. For use inside `[…]`.
 */
export const PY_WHITESPACE = String.raw`\t\n\v\f\r\x1c-\x1f \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000`;

/** Python's `\w` in a str pattern: letters, every kind of number, underscore. For use inside `[…]`. */
const PY_WORD = String.raw`\p{L}\p{N}_`;

/**
 * A1111's re_attention, alternative for alternative: an escape (a lone backslash too), an
 * opening bracket, `:weight)`, a closing bracket, a run of text, a lone colon. Python's `\d`
 * matches every decimal digit (Unicode Nd), so does the weight here.
 */
const TOKEN = new RegExp(
  String.raw`\\[()[\]\\]?|[([]|:[${PY_WHITESPACE}]*([+-]?[.\p{Nd}]+)[${PY_WHITESPACE}]*\)|[)\]]|[^\\()[\]:]+|:`,
  'gu',
);

/** A1111's re_break, with `\b` spelled out because JavaScript's `\b` knows only ASCII letters. */
const BREAK = new RegExp(`[${PY_WHITESPACE}]*(?<![${PY_WORD}])BREAK(?![${PY_WORD}])[${PY_WHITESPACE}]*`, 'u');

const ROUND_MULTIPLIER = 1.1;
const SQUARE_MULTIPLIER = 1 / 1.1;

/** What Python's float() accepts of the weight pattern's strings (it raises on `.` or `1.2.3`). */
const PY_FLOAT = /^[+-]?(?:\d+\.?\d*|\.\d+)$/;

/** Decimal digits in Unicode come in runs of ten from zero, so a digit's value is its place in its run. */
function asciiDigits(s: string): string {
  return s.replace(/[^\x00-\x7f]/gu, (d) => {
    let zero = d.codePointAt(0)!;
    while (/\p{Nd}/u.test(String.fromCodePoint(zero - 1))) zero--;
    return String((d.codePointAt(0)! - zero) % 10);
  });
}

function parseWeight(text: string, prompt: string): number {
  const ascii = asciiDigits(text);
  if (!PY_FLOAT.test(ascii)) {
    // A1111 stops here with Python's ValueError; say which weight instead.
    throw new PainterError(`prompt emphasis weight "${text}" is not a number, in "${prompt}" (write e.g. (word:1.2))`);
  }
  return Number(ascii);
}

/** A1111's parse_prompt_attention: (x) ×1.1, ((x)) ×1.21, [x] ÷1.1, (x:1.3), escapes \( \) \[ \] \\, unbalanced brackets, BREAK, adjacent equal weights merged. */
export function parsePromptAttention(prompt: string): PromptFragment[] {
  // A1111's own representation, BREAK as the pair ('BREAK', -1): brackets around a BREAK scale
  // its -1 too, and then it is read as the word "BREAK" (its tokenizer checks for exactly -1).
  const res: [string, number][] = [];
  const round: number[] = [];
  const square: number[] = [];
  const multiplyFrom = (start: number, multiplier: number) => {
    for (let p = start; p < res.length; p++) res[p]![1] *= multiplier;
  };

  for (const m of prompt.matchAll(TOKEN)) {
    const text = m[0];
    const weight = m[1];
    if (text.startsWith('\\')) res.push([text.slice(1), 1]);
    else if (text === '(') round.push(res.length);
    else if (text === '[') square.push(res.length);
    else if (weight !== undefined && round.length > 0) multiplyFrom(round.pop()!, parseWeight(weight, prompt));
    else if (text === ')' && round.length > 0) multiplyFrom(round.pop()!, ROUND_MULTIPLIER);
    else if (text === ']' && square.length > 0) multiplyFrom(square.pop()!, SQUARE_MULTIPLIER);
    else {
      text.split(BREAK).forEach((part, i) => {
        if (i > 0) res.push(['BREAK', -1]);
        res.push([part, 1]);
      });
    }
  }
  for (const start of round) multiplyFrom(start, ROUND_MULTIPLIER);
  for (const start of square) multiplyFrom(start, SQUARE_MULTIPLIER);
  if (res.length === 0) res.push(['', 1]);

  // Merge runs of equal weights, as A1111 does, before BREAK is told apart from text (a zero
  // weight merges a BREAK into its neighbours: -0 equals 0).
  let i = 0;
  while (i + 1 < res.length) {
    if (res[i]![1] === res[i + 1]![1]) {
      res[i]![0] += res[i + 1]![0];
      res.splice(i + 1, 1);
    } else i++;
  }
  return res.map(([text, weight]) => (text === 'BREAK' && weight === -1 ? { kind: 'break' } : { kind: 'text', text, weight }));
}

/** True when the prompt uses any emphasis syntax or BREAK (so the plain ≤75-token encoding cannot be used). */
export function hasEmphasis(prompt: string): boolean {
  const fragments = parsePromptAttention(prompt);
  const only = fragments[0]!;
  // Escapes and stray backslashes change the text even at weight 1.
  return !(fragments.length === 1 && only.kind === 'text' && only.weight === 1 && only.text === prompt);
}
