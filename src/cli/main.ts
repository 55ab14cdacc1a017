/**
 * painter's command line: a thin yargs layer over the library. Commands are loaded lazily;
 * ONE top-level handler maps errors to exit codes (0 ok, 1 user error, 2 usage, 130 interrupted).
 */
import yargs, { type Argv } from 'yargs';
import { isPainterError, UsageError } from '../errors.js';
import { BACKEND_CHOICES } from '../backend/select.js';
import { camel, optionsFor, type CommandName, type OptionSpec } from './options.js';
import { packageVersion } from './version.js';

export type Args = Record<string, unknown> & { _: (string | number)[] };

function describeWithDefault(spec: OptionSpec): string {
  const parts = [spec.describe];
  if (spec.default !== undefined && spec.default !== '') parts.push(`[default: ${JSON.stringify(spec.default)}]`);
  return parts.join(' ');
}

/**
 * Declares a command's options on yargs from the option list. No yargs defaults: a value is
 * present only when the user passed it, so presets can sit between defaults and flags.
 */
function declare(y: Argv, specs: OptionSpec[]): Argv {
  for (const s of specs) {
    const type = s.type === 'integer' ? 'number' : s.type === 'string[]' ? 'string' : s.type;
    y.option(s.name, {
      type,
      array: s.type === 'string[]' ? true : undefined,
      describe: describeWithDefault(s),
      choices: s.choices ? [...s.choices] : undefined,
      alias: s.alias,
      requiresArg: s.type !== 'boolean',
    });
  }
  return y;
}

/** Only the options the user actually passed, keyed camelCase. */
export function passedOptions(args: Args, command: CommandName): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const s of optionsFor(command)) {
    const v = args[camel(s.name)];
    if (v !== undefined) out[camel(s.name)] = v;
  }
  if (typeof args['preset'] === 'string') out['preset'] = args['preset'];
  return out;
}

function buildParser(argv: string[]): Argv {
  const y = yargs(argv)
    .scriptName('painter')
    .usage('$0 <command> [options]\n\nPersonalize latent-diffusion text-to-image models: Textual Inversion, DreamBooth, LoRA.')
    .option('backend', {
      type: 'string',
      choices: [...BACKEND_CHOICES],
      describe: 'Compute backend (auto: tensorflow GPU → tensorflow CPU → wasm → cpu); also PAINTER_BACKEND',
      global: true,
      requiresArg: true,
    })
    .command(
      'invert <dir>',
      'Textual Inversion: learn a new word for a subject or style from 3–10 images',
      (c) =>
        declare(c.positional('dir', { type: 'string', describe: 'Folder of training images (jpg, png, webp)' }), optionsFor('invert')).option('json', {
          type: 'boolean',
          describe: 'Print the result as JSON on stdout',
        }),
      async (a) => (await import('./commands/invert.js')).invertCommand(a as unknown as Args),
    )
    .command(
      'dreambooth <dir>',
      'DreamBooth: fine-tune the model on a subject, with prior preservation (full or LoRA)',
      (c) =>
        declare(c.positional('dir', { type: 'string', describe: 'Folder of subject images (jpg, png, webp)' }), optionsFor('dreambooth')).option('json', {
          type: 'boolean',
          describe: 'Print the result as JSON on stdout',
        }),
      async (a) => (await import('./commands/dreambooth.js')).dreamboothCommand(a as unknown as Args),
    )
    .command(
      'generate <prompt>',
      'Text-to-image with classifier-free guidance, learned embeddings and LoRA',
      (c) => declare(c.positional('prompt', { type: 'string', describe: 'What to draw' }), optionsFor('generate')).option('json', { type: 'boolean', describe: 'Print files, seeds and timings as JSON on stdout' }),
      async (a) => (await import('./commands/generate.js')).generateCommand(a as unknown as Args),
    )
    .command(
      'bench',
      'Measure training and generation speed on this machine (median of repeated runs after warm-up)',
      (c) =>
        c
          .option('model', { type: 'string', describe: 'Model to measure [default: the bundled fixtures/tiny-sd-a]', requiresArg: true })
          .option('json', { type: 'boolean', describe: 'Print the report as JSON on stdout' })
          .option('runs', { type: 'number', describe: 'Timed runs per item [default: 10]', requiresArg: true })
          .option('warmup', { type: 'number', describe: 'Untimed warm-up runs per item [default: 2]', requiresArg: true })
          .option('only', { type: 'string', array: true, describe: 'Items to run: unet-train-step, ti-step, unet-forward, generate, vae-encode, vae-decode, matmul' })
          .option('profile', { type: 'boolean', describe: 'Also print per-kernel time of one training step' })
          .option('compare', { type: 'boolean', describe: "Run the suite with painter's fast CPU kernels off, then on" }),
      async (a) => (await import('./commands/bench.js')).benchCommand(a as unknown as Args),
    )
    .command(
      'info [file]',
      'Versions, compute backend, what a model folder holds, or the parameters stored in a PNG',
      (c) =>
        c
          .positional('file', { type: 'string', describe: 'A model folder or checkpoint to describe (same as --model)' })
          .option('model', { type: 'string', describe: 'A diffusers model folder or single-file .safetensors checkpoint to describe', requiresArg: true })
          .option('json', { type: 'boolean', describe: 'Print the report as JSON on stdout' }),
      async (a) => (await import('./commands/info.js')).infoCommand(a as unknown as Args),
    )
    .demandCommand(1, 'Name a command: invert, dreambooth, generate, bench or info.')
    .strict()
    .recommendCommands()
    .version(packageVersion())
    .help()
    .alias('h', 'help')
    .wrap(Math.min(110, process.stdout.columns || 100))
    .exitProcess(false)
    .fail((msg, err) => {
      if (err) throw err;
      throw new UsageError(`${msg}\nRun "painter --help" for usage.`);
    });
  return y;
}

/** Runs the CLI and returns the exit code (never calls process.exit itself). */
export async function main(argv: string[]): Promise<number> {
  try {
    await buildParser(argv).parseAsync();
    return 0;
  } catch (e) {
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
}
