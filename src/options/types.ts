/**
 * The typed options of every command, derived from the option table (table.ts) at the type
 * level: a kebab-case name becomes a camelCase key, the option's type and choices its value type,
 * and an option with a default always holds a value once resolved. No option is cast by hand.
 */
import type { COMMANDS, CommandName, OptionSpec } from './table.js';

/** "grad-accum" → "gradAccum". */
type Camel<S extends string> = S extends `${infer H}-${infer T}` ? `${H}${Capitalize<Camel<T>>}` : S;

type ValueOf<S extends OptionSpec> = S['type'] extends 'boolean'
  ? boolean
  : S['type'] extends 'number' | 'integer'
    ? number
    : S['type'] extends 'string[]'
      ? string[]
      : S extends { readonly choices: readonly (infer C)[] }
        ? C
        : string;

/** A command's options once defaults, preset and flags are resolved (CLI-only options left out). */
export type OptionsOf<L extends readonly OptionSpec[]> = {
  -readonly [S in L[number] as S extends { readonly scope: 'cli' } ? never : Camel<S['name']>]: S extends { readonly default: string | number | boolean }
    ? ValueOf<S>
    : ValueOf<S> | undefined;
};

export type InvertOptions = OptionsOf<(typeof COMMANDS)['invert']['options']>;
export type DreamboothOptions = OptionsOf<(typeof COMMANDS)['dreambooth']['options']>;
export type GenerateOptions = OptionsOf<(typeof COMMANDS)['generate']['options']>;
export type EditOptions = OptionsOf<(typeof COMMANDS)['edit']['options']>;
export type DdimInvertOptions = OptionsOf<(typeof COMMANDS)['ddim-invert']['options']>;
export type BenchOptions = OptionsOf<(typeof COMMANDS)['bench']['options']>;
export type InfoOptions = OptionsOf<(typeof COMMANDS)['info']['options']>;
export type ReportOptions = OptionsOf<(typeof COMMANDS)['report']['options']>;
export type ConvertOptions = OptionsOf<(typeof COMMANDS)['convert']['options']>;
export type MergeOptions = OptionsOf<(typeof COMMANDS)['merge']['options']>;

export interface CommandOptions {
  invert: InvertOptions;
  dreambooth: DreamboothOptions;
  generate: GenerateOptions;
  edit: EditOptions;
  'ddim-invert': DdimInvertOptions;
  bench: BenchOptions;
  info: InfoOptions;
  report: ReportOptions;
  convert: ConvertOptions;
  merge: MergeOptions;
}

/** What a caller passes for a command: any of its options, each optional. */
export type OptionInput<C extends CommandName> = Partial<CommandOptions[C]>;
