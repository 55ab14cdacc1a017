/** What yargs parsed for a command, and the backend choice (--backend, else PAINTER_BACKEND). */
import { parseBackendChoice, type BackendChoice } from '../backend/select.js';

/** yargs' parsed arguments: camelCase option keys, positionals by name. */
export type Args = Readonly<Record<string, unknown>> & { _: (string | number)[] };

export function backendChoice(args: Args): BackendChoice {
  const flag = args['backend'];
  return typeof flag === 'string' ? parseBackendChoice(flag, '--backend') : parseBackendChoice(process.env['PAINTER_BACKEND'] || undefined, 'PAINTER_BACKEND');
}

export function jsonFlag(args: Args): boolean {
  return args['json'] === true;
}

/** A positional argument as text (yargs may parse a number-like one as a number). */
export function positional(args: Args, name: string): string | undefined {
  const v = args[name];
  return v === undefined ? undefined : String(v);
}
