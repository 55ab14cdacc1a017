/**
 * The second process of `pretrain:mini --jobs 2` (pretrain-side.ts): trains stage 5 of the run
 * described by argv[2] (the settings as JSON) on the backend named by argv[3], and reports its
 * log lines and steps on stdout as JSON lines. Ctrl-C (or the parent's SIGINT) stops it with a
 * checkpoint and exit code 130.
 */
import sharp from 'sharp';
import { pretrainDecoder, type PretrainSettings } from './pretrain.js';
import { INTERRUPTED_EXIT, type SideMessage } from './pretrain-side.js';
import { InterruptedError, selectBackend, type BackendChoice } from '../../src/index.js';

sharp.concurrency(1);
const [settings, backend] = process.argv.slice(2);
const send = (m: SideMessage) => void process.stdout.write(JSON.stringify(m) + '\n');
let stop = false;
process.on('SIGINT', () => {
  stop = true;
});
try {
  await selectBackend(backend as BackendChoice);
  await pretrainDecoder(JSON.parse(settings!) as PretrainSettings, {
    log: (line) => send({ log: line }),
    onStep: (stage, report) => send({ stage, report }),
    shouldStop: () => stop,
  });
} catch (e) {
  process.exitCode = e instanceof InterruptedError ? INTERRUPTED_EXIT : 1;
  if (!(e instanceof InterruptedError)) process.stderr.write(`${(e as Error).message}\n`);
}
