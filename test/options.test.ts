/** The one option table: what the README and the command line show comes from it. */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { optionsMarkdown, README_BEGIN, README_END, withOptionsMarkdown } from '../src/options/markdown.js';
import { inputFrom, resolveConfig } from '../src/options/resolve.js';
import { COMMANDS, camel } from '../src/options/table.js';
import { ROOT } from './helpers.js';

describe('the option table', () => {
  it("is what the README's option tables say (run `npm run docs:options` after changing it)", () => {
    const readme = fs.readFileSync(path.join(ROOT, 'README.md'), 'utf8');
    expect(readme).toContain(README_BEGIN);
    expect(readme).toContain(README_END);
    expect(withOptionsMarkdown(readme)).toBe(readme);
    // Every option of every command is in the generated text.
    const text = optionsMarkdown();
    for (const c of Object.values(COMMANDS)) for (const o of c.options) expect(text, `${c.name} --${o.name}`).toContain(`\`--${o.name}`);
  });

  it('a README that drifted from the table is told apart', () => {
    const readme = fs.readFileSync(path.join(ROOT, 'README.md'), 'utf8');
    const drifted = readme.replace('Number of optimisation steps', 'Number of steps');
    expect(drifted).not.toBe(readme);
    expect(withOptionsMarkdown(drifted)).toBe(readme);
  });

  it('resolves every option with a default to a value, and checks passed values against their spec', () => {
    const o = resolveConfig('generate', {});
    for (const s of COMMANDS.generate.options) if (s.default !== undefined && s.name !== 'json') expect(o, s.name).toHaveProperty(camel(s.name), s.default);
    expect(resolveConfig('generate', { steps: 7 }).steps).toBe(7);
    expect(() => inputFrom('generate', { steps: Number.NaN })).toThrow(/--steps must be a number/);
    expect(() => inputFrom('generate', { guidance: Infinity })).toThrow(/--guidance must be a finite number/);
    // Values of other commands' options and CLI-only flags are not the command's options.
    expect(inputFrom('generate', { classImages: 3, json: true, steps: 2 })).toEqual({ steps: 2 });
  });
});
