/** Numeric options of painter's repository scripts (pretrain:mini, train:classifier, bench:concepts). */
import { UsageError } from '../errors.js';

/** count: a whole number ≥ 1; seed: a whole number ≥ 0; positive: any number > 0; weight: any number ≥ 0. */
export type NumberKind = 'count' | 'seed' | 'positive' | 'weight';

const WANT: Record<NumberKind, string> = { count: 'a positive whole number', seed: 'a whole number, 0 or more', positive: 'a positive number', weight: 'a number, 0 or more' };

/** The value of `--name` (a string from parseArgs), `fallback` when absent; a UsageError naming the flag otherwise. */
export function numberArg(raw: unknown, name: string, fallback: number, kind: NumberKind): number {
  if (raw === undefined) return fallback;
  const v = Number(raw);
  const ok =
    kind === 'positive' ? Number.isFinite(v) && v > 0 : kind === 'weight' ? Number.isFinite(v) && v >= 0 : Number.isInteger(v) && v >= (kind === 'seed' ? 0 : 1);
  if (!ok) throw new UsageError(`--${name} ${String(raw)}: give ${WANT[kind]}`);
  return v;
}
