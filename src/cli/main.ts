/**
 * painter's command line: yargs definitions generated from the option table (options/table.ts)
 * over the library's commands, each loaded lazily. ONE top-level handler maps errors to exit codes
 * (0 ok, 1 user error, 2 usage, 130 interrupted).
 */
import yargs, { type Argv } from 'yargs';
import { shutdownWebgpu } from '../backend/webgpu.js';
import { requestThreads, threadSetting } from '../backend/wasm-threads.js';
import { packageVersion } from '../io/paths.js';
import { fileSystemError, isPainterError, UsageError } from '../errors.js';
import { BACKEND_OPTION, THREADS_OPTION, COMMAND_NAMES, COMMANDS, positionalUsage, type CommandName, type CommandSpec, type OptionSpec } from '../options/table.js';
import type { Args } from './args.js';

function describeWithDefault(spec: OptionSpec): string {
  const parts = [spec.describe];
  if (spec.default !== undefined && spec.default !== '') parts.push(`[default: ${JSON.stringify(spec.default)}]`);
  return parts.join(' ');
}

/**
 * Declares options on yargs from the option table. No yargs defaults: a value is present only
 * when the user passed it, so presets can sit between defaults and flags.
 */
function declare(y: Argv, specs: readonly OptionSpec[], global = false): Argv {
  for (const s of specs) {
    const type = s.type === 'integer' ? 'number' : s.type === 'string[]' ? 'string' : s.type;
    y.option(s.name, {
      type,
      array: s.type === 'string[]' ? true : undefined,
      describe: describeWithDefault(s),
      choices: s.choices ? [...s.choices] : undefined,
      alias: s.alias,
      requiresArg: s.type !== 'boolean',
      global: global || undefined,
    });
  }
  return y;
}

async function runCommand(name: CommandName, args: Args): Promise<void> {
  if (args['threads'] !== undefined) requestThreads(threadSetting(args['threads']));
  switch (name) {
    case 'invert':
      return (await import('./commands/invert.js')).invertCommand(args);
    case 'dreambooth':
      return (await import('./commands/dreambooth.js')).dreamboothCommand(args);
    case 'generate':
      return (await import('./commands/generate.js')).generateCommand(args);
    case 'edit':
      return (await import('./commands/edit.js')).editCommand(args);
    case 'ddim-invert':
      return (await import('./commands/ddim-invert.js')).ddimInvertCommand(args);
    case 'convert':
      return (await import('./commands/convert.js')).convertCommand(args);
    case 'merge':
      return (await import('./commands/merge.js')).mergeCommand(args);
    case 'bench':
      return (await import('./commands/bench.js')).benchCommand(args);
    case 'info':
      return (await import('./commands/info.js')).infoCommand(args);
    case 'report':
      return (await import('./commands/report.js')).reportCommand(args);
  }
}

function usage(c: CommandSpec): string {
  return `${c.name}${positionalUsage(c)}`;
}

function buildParser(argv: string[]): Argv {
  let y = declare(
    yargs(argv)
      .scriptName('painter')
      .usage('$0 <command> [options]\n\nPersonalize latent-diffusion text-to-image models (Textual Inversion, DreamBooth, LoRA) and edit pictures with them.'),
    [BACKEND_OPTION, THREADS_OPTION],
    true,
  );
  for (const name of COMMAND_NAMES) {
    const c: CommandSpec = COMMANDS[name];
    y = y.command(
      usage(c),
      c.describe,
      (sub) => declare((c.positionals ?? []).reduce((y, p) => y.positional(p.name, { type: 'string', describe: p.describe }), sub), c.options),
      // yargs' parsed values are untyped; each command checks them against the option table.
      (a) => runCommand(name, a as unknown as Args),
    );
  }
  return y
    .demandCommand(1, `Name a command: ${Object.keys(COMMANDS).join(', ')}.`)
    .strict()
    .recommendCommands()
    .version(packageVersion())
    .help()
    .alias('h', 'help')
    .wrap(Math.min(110, process.stdout.columns || 100))
    .exitProcess(false)
    .fail((msg, err) => {
      // yargs' own complaints (a flag without its value: "Not enough arguments following: steps") are usage errors too.
      if (err && err.name !== 'YError') throw err;
      const text = (msg ?? err?.message ?? 'bad usage').replace(/:?\s*\n\s*/g, ': ');
      // yargs spreads some messages over lines ("Invalid values:\n  Argument: …"): one line for the user.
      throw new UsageError(`${text}; run "painter --help" for usage`);
    });
}

/** Names of a command's options that take numbers. */
function numericOptions(command: string): Set<string> {
  const spec = (COMMANDS as Record<string, CommandSpec>)[command];
  return new Set((spec?.options ?? []).filter((o) => o.type === 'number' || o.type === 'integer').map((o) => o.name));
}

/**
 * A number option given text that is not a number, named with the text as typed (yargs would
 * turn it into NaN and the message could only say "got NaN"). Only the invoked command's options,
 * and nothing after `--`.
 */
function checkNumberFlags(argv: readonly string[]): void {
  const numeric = numericOptions(argv.find((a) => !a.startsWith('-')) ?? '');
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--') break;
    const m = /^--([a-z][a-z-]*)(?:=(.*))?$/.exec(argv[i]!);
    if (!m || !numeric.has(m[1]!)) continue;
    const text = m[2] ?? argv[i + 1];
    if (text === undefined || (m[2] === undefined && text.startsWith('--'))) continue; // yargs reports the missing value
    if (text.trim() === '' || Number.isNaN(Number(text))) throw new UsageError(`--${m[1]} must be a number, got "${text}"`);
  }
}

/** Runs the CLI and returns the exit code (never calls process.exit itself). */
export async function main(argv: string[]): Promise<number> {
  try {
    checkNumberFlags(argv);
    await buildParser(argv).parseAsync();
    return 0;
  } catch (caught) {
    const e = fileSystemError(caught) ?? caught;
    if (isPainterError(e)) {
      process.stderr.write(`painter: ${e.message}\n`);
      return e.exitCode;
    }
    process.stderr.write(`painter: unexpected error (please report it):\n${(e as Error)?.stack ?? String(e)}\n`);
    return 1;
  }
}

/** Entry point for bin/painter. */
export async function run(argv: string[]): Promise<void> {
  process.exitCode = await main(argv);
  // Dawn's GPU threads would keep the process alive (or abort it at exit) after the work is done.
  await shutdownWebgpu();
}
