/**
 * tfjs-backend-wasm's threaded-SIMD build in Node, so XNNPACK computes on every core. tfjs 4.22
 * cannot start it in Node by itself (measured; see TFJS-NOTES): its WASM_HAS_MULTITHREAD_SUPPORT
 * flag is false under Node; forced on, its init hands Emscripten `blob:` URLs for the pthread
 * worker script, which Node's worker_threads refuse; and its C++ side caps the pool at half the
 * logical cores (1 on a 2-core machine). Here the Emscripten module is instantiated directly,
 * with the worker script written to a real .cjs file, the glue's own path for the workers to
 * load, and the core count reported as twice the threads wanted; the result is registered as the
 * 'wasm' backend, so every kernel tfjs and painter registered for it applies unchanged.
 * XNNPACK splits outputs between threads without reordering sums: results are bit-identical to
 * the single-threaded build.
 */
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import { createRequire } from 'node:module';
import * as os from 'node:os';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { UsageError } from '../errors.js';

const require = createRequire(import.meta.url);

/** The WebAssembly global (TypeScript's lib here has no DOM types). */
const WASM = (globalThis as unknown as { WebAssembly: { instantiate(bytes: Uint8Array, imports: object): Promise<{ instance: unknown; module: unknown }> } }).WebAssembly;

let requested: number | undefined;

/** The thread count a caller asks for (the CLI's --threads), before the backend is loaded. */
export function requestThreads(n: number): void {
  requested = n;
}

/**
 * Threads to compute on: `flag` (--threads), else requestThreads', else PAINTER_THREADS, else
 * every core. An error names the setting when it is not a whole number ≥ 1.
 */
export function threadSetting(flag?: unknown, env: NodeJS.ProcessEnv = process.env): number {
  if (flag === undefined && requested !== undefined) return requested;
  const [raw, name] = flag !== undefined ? [String(flag), '--threads'] : [env['PAINTER_THREADS'], 'PAINTER_THREADS'];
  if (raw === undefined || raw === '') return Math.max(1, os.availableParallelism());
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 1) throw new UsageError(`${name} ${raw}: give a whole number of threads, 1 or more`);
  return n;
}

interface EmscriptenModule {
  cwrap(name: string, ret: string | null, args: string[]): (...a: number[]) => unknown;
  PThread?: { runningWorkers: { unref?: () => void }[]; unusedWorkers: { terminate?: () => void }[] };
}

/** The pthread worker script, which tfjs ships only as a string, as a file Node can start (once per content). */
function workerScript(outDir: string): string {
  const { wasmWorkerContents } = require(path.join(outDir, 'tfjs-backend-wasm-threaded-simd.worker.js')) as { wasmWorkerContents: string };
  // tfjs's own locateFile writes the same string into a Blob: its template literal turned the
  // script's "\n" escapes into real newlines inside string literals, so they are escaped back.
  const text = wasmWorkerContents.replace(/\n/g, '\\n');
  const hash = createHash('sha256').update(text).digest('hex').slice(0, 12);
  // .cjs: the script uses require/__filename, and painter's package is ESM.
  const file = path.join(os.tmpdir(), `painter-tfjs-wasm-threads-${hash}.worker.cjs`);
  if (!fs.existsSync(file)) {
    const temp = `${file}.${process.pid}.tmp`;
    fs.writeFileSync(temp, text);
    fs.renameSync(temp, file);
  }
  return file;
}

/** Boots the threaded build with `threads` threads; the BackendWasm computes on them. */
async function threadedBackend(threads: number): Promise<tf.KernelBackend> {
  const wasmPkg = require('@tensorflow/tfjs-backend-wasm') as { BackendWasm: new (m: EmscriptenModule) => tf.KernelBackend; setThreadsCount(n: number): void };
  const outDir = path.join(path.dirname(require.resolve('@tensorflow/tfjs-backend-wasm/package.json')), 'wasm-out');
  const glue = path.join(outDir, 'tfjs-backend-wasm-threaded-simd.js');
  const wasmFile = path.join(outDir, 'tfjs-backend-wasm-threaded-simd.wasm');
  const worker = workerScript(outDir);
  const factory = require(glue) as (config: object) => Promise<EmscriptenModule>;
  const module = await factory({
    locateFile: (p: string, prefix: string) => (p.endsWith('.worker.js') ? worker : p.endsWith('.wasm') ? wasmFile : prefix + p),
    // Every pthread worker loads this file (readFileSync + eval): the Emscripten glue alone.
    mainScriptUrlOrBlob: glue,
    instantiateWasm: (imports: { env: Record<string, unknown> }, receive: (instance: unknown, module: unknown) => void) => {
      // backend.cc takes min(requested, logical cores / 2) threads.
      imports.env['emscripten_num_logical_cores'] = () => 2 * threads;
      // The module goes to the pthread workers too.
      WASM.instantiate(fs.readFileSync(wasmFile), imports).then((r) => receive(r.instance, r.module));
      return {};
    },
  });
  // The bridge tfjs-backend-wasm's own init() builds.
  (module as unknown as { tfjs: object }).tfjs = {
    init: module.cwrap('init', null, []),
    initWithThreadsCount: module.cwrap('init_with_threads_count', null, ['number']),
    getThreadsCount: module.cwrap('get_threads_count', 'number', []),
    registerTensor: module.cwrap('register_tensor', null, ['number', 'number', 'number']),
    disposeData: module.cwrap('dispose_data', null, ['number']),
    dispose: module.cwrap('dispose', null, []),
  };
  wasmPkg.setThreadsCount(threads);
  const backend = new wasmPkg.BackendWasm(module);
  // Running pthreads would keep Node alive after the work is done; pre-spawned idle ones only cost memory.
  for (const w of module.PThread?.runningWorkers ?? []) w.unref?.();
  for (const w of module.PThread?.unusedWorkers.splice(0) ?? []) w.terminate?.();
  return backend;
}

let installed = 0;

/**
 * Makes the 'wasm' backend the threaded build with `threads` threads (call after importing
 * tfjs-backend-wasm, before it is set). One thread, no SIMD, or a failed start keeps tfjs's own
 * single-threaded backend.
 */
export function installWasmThreads(threads: number): void {
  // Once a wasm backend exists its tensors live in its heap: never swap it under them.
  const running = (tf.engine() as unknown as { registry: Record<string, unknown> }).registry['wasm'];
  if (threads <= 1 || installed > 0 || running) return;
  const stock = tf.findBackendFactory('wasm');
  if (!stock) return;
  tf.removeBackend('wasm');
  tf.registerBackend(
    'wasm',
    async () => {
      // `painter info` reads the flag synchronously later: resolve it now.
      if (!(await tf.env().getAsync('WASM_HAS_SIMD_SUPPORT'))) return stock();
      try {
        tf.env().set('WASM_HAS_MULTITHREAD_SUPPORT', true);
        return await threadedBackend(threads);
      } catch {
        tf.env().set('WASM_HAS_MULTITHREAD_SUPPORT', false);
        return stock();
      }
    },
    2,
  );
  installed = threads;
}
