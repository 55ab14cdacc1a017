/** Numeric options of painter's repository scripts (pretrain:mini, train:classifier, bench:concepts). */

/** count: a whole number ≥ 1; seed: a whole number ≥ 0; positive: any number > 0; weight: any number ≥ 0; fraction: 0 ≤ p < 1. */
export type NumberKind = 'count' | 'seed' | 'positive' | 'weight' | 'fraction';
import { UsageError } from '../../src/index.js';

const WANT: Record<NumberKind, string> = {
  count: 'a positive whole number',
  seed: 'a whole number, 0 or more',
  positive: 'a positive number',
  weight: 'a number, 0 or more',
  fraction: 'a fraction from 0 up to (not including) 1',
};

const VALID: Record<NumberKind, (v: number) => boolean> = {
  count: (v) => Number.isInteger(v) && v >= 1,
  seed: (v) => Number.isInteger(v) && v >= 0,
  positive: (v) => Number.isFinite(v) && v > 0,
  weight: (v) => Number.isFinite(v) && v >= 0,
  fraction: (v) => v >= 0 && v < 1,
};

/** The value of `--name` (a string from parseArgs), `fallback` when absent; a UsageError naming the flag otherwise. */
export function numberArg(raw: unknown, name: string, fallback: number, kind: NumberKind): number {
  if (raw === undefined) return fallback;
  const v = Number(raw);
  if (raw === '' || !VALID[kind](v)) throw new UsageError(`--${name} ${String(raw)}: give ${WANT[kind]}`);
  return v;
}
