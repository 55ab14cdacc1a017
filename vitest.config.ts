import * as os from 'node:os';
import * as path from 'node:path';
import { defineConfig } from 'vitest/config';

// The SD-1.5-shaped pipeline on webgpu takes minutes: only `npm run test:sd15` runs it.
const sd15 = process.env['PAINTER_SD15'] === '1';

export default defineConfig({
  test: {
    include: sd15 ? ['test/sd15/**/*.test.ts'] : ['test/**/*.test.ts', 'recipes/*/test/**/*.test.ts'],
    exclude: sd15 ? [] : ['test/sd15/**', '**/node_modules/**'],
    pool: 'forks',
    // Each test file computes on one thread (PAINTER_THREADS=1 below), one file per core: the suite
    // uses every core without oversubscribing them.
    maxWorkers: Math.max(1, os.availableParallelism()),
    testTimeout: sd15 ? 900_000 : 120_000,
    hookTimeout: sd15 ? 900_000 : 120_000,
    // `painter invert` installs embeddings into this folder: keep tests out of ./embeddings.
    env: { PAINTER_EMBEDDINGS: path.join(os.tmpdir(), `painter-test-embeddings-${process.pid}`), PAINTER_THREADS: '1' },
  },
});
