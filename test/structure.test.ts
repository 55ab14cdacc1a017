/**
 * The source tree's shape (issue: architecture): no import cycles, only bin/ reaches the CLI, no
 * file over ~500 lines — checked by the shared import-graph tool, as CI runs it.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { ROOT } from './helpers.js';

const TOOL = path.join(ROOT, '..', 'shared', 'tools', 'import-graph.py');

describe('source structure', () => {
  it.skipIf(!fs.existsSync(TOOL))('has no import cycles, no imports into cli/ from outside it, no file over 500 lines', () => {
    const r = spawnSync('python3', [TOOL], { cwd: ROOT, encoding: 'utf8' });
    expect(r.status, r.stdout + r.stderr).toBe(0);
    expect(r.stdout).toMatch(/0 cycle\(s\), 0 import\(s\) into cli\/, 0 file\(s\) over 500 lines/);
  });

  it('ships the library, not the painter-mini recipe', () => {
    const pkg = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { files: string[]; exports: { '.': { default: string } } };
    expect(pkg.exports['.'].default).toBe('./dist/src/index.js');
    expect(pkg.files).toContain('dist/src');
    expect(pkg.files.some((f) => f.startsWith('recipes') || f === 'dist' || f.startsWith('dist/recipes'))).toBe(false);
    // Nothing in src/ imports the recipe.
    const offenders = fs
      .readdirSync(path.join(ROOT, 'src'), { recursive: true, encoding: 'utf8' })
      .filter((f) => f.endsWith('.ts') && /from '[^']*recipes\//.test(fs.readFileSync(path.join(ROOT, 'src', f), 'utf8')));
    expect(offenders).toEqual([]);
  });
});
