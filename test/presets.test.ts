import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import yaml from 'js-yaml';
import { listPresets, loadPreset, resolveConfig, validatePreset } from '../src/options/resolve.js';
import type { CommandName } from '../src/options/table.js';
import { PainterError } from '../src/errors.js';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'painter-presets-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

function writePreset(name: string, text: string): string {
  const file = path.join(tmp, name);
  fs.writeFileSync(file, text);
  return file;
}

describe('presets', () => {
  it('every bundled preset is valid for the command it names', () => {
    const names = listPresets();
    expect(names).toEqual(expect.arrayContaining(['ti-object', 'ti-style', 'ti-person', 'dreambooth-lora', 'dreambooth-full', 'pivotal-lora', 'lora-style']));
    for (const name of names) {
      const file = path.join('presets', `${name}.yaml`);
      const command = (yaml.load(fs.readFileSync(file, 'utf8')) as { command: CommandName }).command;
      const r = loadPreset(name, command);
      expect(r.errors, name).toEqual([]);
      expect(Object.keys(r.config).length, name).toBeGreaterThan(3);
    }
  });

  it('lists every unknown key, wrong type and out-of-range value at once, with file and key', () => {
    const file = writePreset('bad.yaml', 'command: invert\nstepz: 10\nlr: fast\nvectors: 0\nbatch: 1.5\nmode: sculpture\ntoken: "<x>"\n');
    const r = loadPreset(file, 'invert');
    expect(r.errors).toHaveLength(6);
    const all = r.errors.join('\n');
    for (const part of ['"stepz": unknown option', '"lr" must be a number', '"vectors" must be at least 1', '"batch" must be a whole number', '"mode" must be one of object, style', '"token": cannot be set by a preset']) {
      expect(all).toContain(part);
    }
    for (const e of r.errors) expect(e.startsWith(file)).toBe(true);
  });

  it('rejects a preset written for another command', () => {
    const r = validatePreset({ command: 'dreambooth', steps: 5 }, 'invert', 'x.yaml');
    expect(r.errors).toEqual(['x.yaml: key "command": this preset is for "dreambooth", not "invert"']);
  });

  it('resolves defaults < preset < flags actually passed', () => {
    const file = writePreset('mine.yaml', 'steps: 42\nlr: 0.002\nflip: false\n');
    const cfg = resolveConfig('invert', { preset: file, lr: 0.1 });
    expect(cfg['steps']).toBe(42); // preset over default 1000
    expect(cfg['lr']).toBe(0.1); // flag over preset
    expect(cfg['flip']).toBe(false); // preset over default true
    expect(cfg['vectors']).toBe(1); // default
    const plain = resolveConfig('invert', {});
    expect(plain['steps']).toBe(1000);
  });

  it('a bad preset or flag value is a PainterError that says what is wrong', () => {
    const file = writePreset('worse.yaml', 'steps: -3\nwarmup-steps: many\n');
    expect(() => resolveConfig('invert', { preset: file })).toThrow(PainterError);
    expect(() => resolveConfig('invert', { preset: file })).toThrow(/"steps" must be at least 1[\s\S]*"warmup-steps" must be a number/);
    expect(() => resolveConfig('invert', { preset: 'no-such-preset' })).toThrow(/no such preset; bundled presets: .*ti-object/);
    expect(() => resolveConfig('generate', { steps: 0 })).toThrow('--steps must be at least 1');
    const broken = writePreset('broken.yaml', 'steps: [1,\n');
    expect(() => resolveConfig('invert', { preset: broken })).toThrow(/broken\.yaml: not valid YAML/);
  });
});
