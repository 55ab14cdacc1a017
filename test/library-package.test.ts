/**
 * painter as a dependency: a scratch project installs it from its local path with npm (offline)
 * and runs `import { generate, invert, dreambooth } from 'painter'` through the package's
 * "exports", as a user's program would. Needs the built dist/ (`npm test` builds first).
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { FIXTURES, ROOT, TINY_SD_A } from './helpers.js';

// Real path: the scratch program reports paths from its (resolved) working directory.
const tmp = fs.realpathSync(fs.mkdtempSync(path.join(os.tmpdir(), 'painter-package-')));
const PHOTOS = path.join(FIXTURES, 'photos', 'cat');
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

/**
 * A directory dependency installs as a symlink (--install-links=false), so npm fetches nothing
 * and painter's own node_modules serve its dependencies.
 */
const NPM_INSTALL = ['install', '--no-audit', '--no-fund', '--offline', '--ignore-scripts', '--install-links=false', ROOT];

/** The environment without the npm_* variables that `npm test` / npx set for painter's own package. */
function cleanEnv(): NodeJS.ProcessEnv {
  return Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.toLowerCase().startsWith('npm_')));
}

/** The user's program: each command once, the smallest run that still writes its result file. */
const RUN_SCRIPT = `import * as path from 'node:path';
import { generate, invert, dreambooth } from 'painter';

const here = process.cwd();
const model = ${JSON.stringify(TINY_SD_A)};
const photos = ${JSON.stringify(PHOTOS)};
const g = await generate({ prompt: 'a photo of a cat', model, steps: 2, count: 1, seed: 1, width: 32, height: 32, out: path.join(here, 'outputs'), backend: 'wasm' });
const i = await invert({
  dir: photos, token: '<scratch-cat>', initToken: 'cat', model, steps: 2, resolution: 32, validationEvery: 0,
  out: path.join(here, 'runs', 'invert'), embeddingsDir: path.join(here, 'embeddings'), backend: 'wasm',
});
const d = await dreambooth({
  dir: photos, class: 'cat', mode: 'lora', model, steps: 2, resolution: 32, priorPreservation: false, validationEvery: 0,
  out: path.join(here, 'runs', 'dreambooth'), backend: 'wasm',
});
console.log(JSON.stringify({
  resolved: import.meta.resolve('painter'),
  types: [typeof generate, typeof invert, typeof dreambooth],
  generate: { files: g.files.map((f) => f.file), backend: g.backend.name },
  invert: { output: i.output, installed: i.installed, steps: i.steps },
  dreambooth: { output: d.output, steps: d.steps },
}));
`;

describe('painter installed from a local path', () => {
  it("a scratch project runs import { generate, invert, dreambooth } from 'painter'", () => {
    expect(fs.existsSync(path.join(ROOT, 'dist', 'src', 'index.js')), 'dist/src/index.js is missing: run `npm run build`').toBe(true);
    fs.writeFileSync(path.join(tmp, 'package.json'), JSON.stringify({ name: 'scratch', private: true, type: 'module' }));

    const install = spawnSync('npm', NPM_INSTALL, { cwd: tmp, encoding: 'utf8', env: cleanEnv(), timeout: 30_000 });
    expect(install.status, `npm install failed:\n${install.stderr}`).toBe(0);
    const linked = path.join(tmp, 'node_modules', 'painter');
    expect(fs.lstatSync(linked).isSymbolicLink()).toBe(true);
    expect(fs.realpathSync(linked)).toBe(fs.realpathSync(ROOT));
    expect(JSON.parse(fs.readFileSync(path.join(tmp, 'package.json'), 'utf8')).dependencies.painter).toMatch(/^file:/);

    fs.writeFileSync(path.join(tmp, 'run.mjs'), RUN_SCRIPT);
    const run = spawnSync(process.execPath, ['run.mjs'], { cwd: tmp, encoding: 'utf8', env: { ...cleanEnv(), PAINTER_BACKEND: '' }, timeout: 60_000 });
    // Warnings on stderr are allowed; the result is the one JSON line on stdout.
    expect(run.status, `node run.mjs failed:\n${run.stderr}`).toBe(0);
    const result = JSON.parse(run.stdout.trim().split('\n').at(-1)!);

    // Resolved through the package's "exports" to the built entry point, not to src/.
    expect(fs.realpathSync(new URL(result.resolved))).toBe(fs.realpathSync(path.join(ROOT, 'dist', 'src', 'index.js')));
    expect(result.types).toEqual(['function', 'function', 'function']);

    expect(result.generate.backend).toBe('wasm');
    expect(result.generate.files).toHaveLength(1);
    const png = result.generate.files[0] as string;
    expect(png.startsWith(tmp)).toBe(true);
    expect(png).toMatch(/\.png$/);
    expect(fs.readFileSync(png).subarray(1, 4).toString('latin1')).toBe('PNG');

    expect(result.invert.steps).toBe(2);
    expect(fs.existsSync(result.invert.output)).toBe(true);
    expect(result.invert.installed).toBe(path.join(tmp, 'embeddings', path.basename(result.invert.installed)));
    expect(fs.existsSync(result.invert.installed)).toBe(true);

    expect(result.dreambooth.steps).toBe(2);
    expect(result.dreambooth.output.startsWith(path.join(tmp, 'runs', 'dreambooth'))).toBe(true);
    expect(fs.existsSync(result.dreambooth.output)).toBe(true);
  }, 120_000);
});
