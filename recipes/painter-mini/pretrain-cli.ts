/**
 * `npm run pretrain:mini`: the command line of painter-mini's pretraining recipe (pretrain.ts).
 * Ctrl-C stops with a checkpoint of the running stage; --resume continues it.
 */
import { parseArgs } from 'node:util';
import { numberArg } from './script-args.js';
import { pretrainMini, PRETRAIN_DEFAULTS, type PretrainSettings } from './pretrain.js';
import { BACKEND_CHOICES, UsageError, selectBackend, type BackendChoice } from '../../src/index.js';

const OPTIONS = {
  seed: { type: 'string' },
  out: { type: 'string' },
  'run-dir': { type: 'string' },
  'vae-steps': { type: 'string' },
  steps: { type: 'string' },
  'vae-batch': { type: 'string' },
  batch: { type: 'string' },
  'vae-lr': { type: 'string' },
  lr: { type: 'string' },
  'checkpoint-every': { type: 'string' },
  'text-steps': { type: 'string' },
  'object-loss-weight': { type: 'string' },
  timesteps: { type: 'string' },
  size: { type: 'string' },
  'hires-steps': { type: 'string' },
  'vae-hires-steps': { type: 'string' },
  'decoder-steps': { type: 'string' },
  'caption-omit': { type: 'string' },
  jobs: { type: 'string' },
  resume: { type: 'boolean' },
  snapshot: { type: 'string' },
  backend: { type: 'string' },
} as const;

/** The `pretrain:mini` command; returns the summary line. Ctrl-C stops with a checkpoint. */
export async function main(argv: string[], log: (line: string) => void = () => {}): Promise<string> {
  let values: Record<string, unknown>;
  try {
    values = parseArgs({ args: argv, options: OPTIONS, strict: true }).values;
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
  const backend = (values['backend'] as string | undefined) ?? 'auto';
  if (!BACKEND_CHOICES.includes(backend as BackendChoice)) throw new UsageError(`--backend ${backend}: choose one of ${BACKEND_CHOICES.join(', ')}`);
  const d = PRETRAIN_DEFAULTS;
  const timesteps = (values['timesteps'] as string | undefined) ?? d.timesteps;
  if (timesteps !== 'uniform' && timesteps !== 'stratified') throw new UsageError(`--timesteps ${timesteps}: choose uniform or stratified`);
  const imageSize = numberArg(values['size'], 'size', d.sizes.imageSize, 'count');
  const settings: Partial<PretrainSettings> = {
    seed: numberArg(values['seed'], 'seed', d.seed, 'seed'),
    out: (values['out'] as string | undefined) ?? d.out,
    runDir: (values['run-dir'] as string | undefined) ?? d.runDir,
    vaeSteps: numberArg(values['vae-steps'], 'vae-steps', d.vaeSteps, 'count'),
    ldmSteps: numberArg(values['steps'], 'steps', d.ldmSteps, 'count'),
    vaeBatch: numberArg(values['vae-batch'], 'vae-batch', d.vaeBatch, 'count'),
    batch: numberArg(values['batch'], 'batch', d.batch, 'count'),
    vaeLr: numberArg(values['vae-lr'], 'vae-lr', d.vaeLr, 'positive'),
    lr: numberArg(values['lr'], 'lr', d.lr, 'positive'),
    checkpointEvery: numberArg(values['checkpoint-every'], 'checkpoint-every', d.checkpointEvery, 'count'),
    textSteps: numberArg(values['text-steps'], 'text-steps', d.textSteps, 'seed'),
    timesteps,
    objectLossWeight: numberArg(values['object-loss-weight'], 'object-loss-weight', d.objectLossWeight, 'weight'),
    sizes: { ...d.sizes, imageSize },
    // Stage 4 doubles the size: by default only from the recipe's own 32×32.
    hiresSteps: numberArg(values['hires-steps'], 'hires-steps', imageSize === d.sizes.imageSize ? d.hiresSteps : 0, 'seed'),
    vaeHiresSteps: numberArg(values['vae-hires-steps'], 'vae-hires-steps', imageSize === d.sizes.imageSize ? d.vaeHiresSteps : 0, 'seed'),
    decoderSteps: numberArg(values['decoder-steps'], 'decoder-steps', d.decoderSteps, 'seed'),
    captionOmit: numberArg(values['caption-omit'], 'caption-omit', d.captionOmit, 'fraction'),
    jobs: numberArg(values['jobs'], 'jobs', d.jobs, 'count'),
    resume: values['resume'] === true,
    snapshot: values['snapshot'] as string | undefined,
  };
  await selectBackend(backend as BackendChoice);
  let stop = false;
  const onSigint = () => {
    stop = true;
  };
  process.once('SIGINT', onSigint);
  try {
    const r = await pretrainMini(settings, {
      log,
      shouldStop: () => stop,
      onStep: (stage, st) => {
        if (st.step % 10 === 0 || st.step === st.steps) log(`${stage} ${st.step}/${st.steps} loss ${st.loss.toFixed(4)} ${Math.round(st.msPerStep)} ms/step`);
      },
    });
    const diffusion = (r.hires ?? r.ldm).finalLoss.toPrecision(3);
    return `painter-mini saved to ${r.out}: vae loss ${r.vae.finalLoss.toPrecision(3)}, diffusion loss ${diffusion}, scaling_factor ${r.scalingFactor.toPrecision(4)}`;
  } finally {
    process.off('SIGINT', onSigint);
  }
}
