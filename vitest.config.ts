import * as os from 'node:os';
import * as path from 'node:path';
import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts', 'recipes/*/test/**/*.test.ts'],
    pool: 'forks',
    // Each test file computes on one thread (wasm), so one file per core: the suite uses every core.
    maxWorkers: Math.max(1, os.availableParallelism()),
    testTimeout: 120_000,
    hookTimeout: 120_000,
    // `painter invert` installs embeddings into this folder: keep tests out of ./embeddings.
    env: { PAINTER_EMBEDDINGS: path.join(os.tmpdir(), `painter-test-embeddings-${process.pid}`) },
  },
});
