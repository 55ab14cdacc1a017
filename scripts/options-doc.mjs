#!/usr/bin/env node
// Writes the README's option tables from the option table (src/options/table.ts), between the
// README's markers. A test fails when the README differs from what this writes.
// Usage: npm run docs:options
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const root = path.join(path.dirname(fileURLToPath(import.meta.url)), '..');
const { withOptionsMarkdown } = await import(pathToFileURL(path.join(root, 'dist', 'src', 'options', 'markdown.js')).href);
const file = path.join(root, 'README.md');
const before = fs.readFileSync(file, 'utf8');
const after = withOptionsMarkdown(before);
if (after === undefined) {
  console.error('README.md has no option-table markers; add the two marker lines of src/options/markdown.ts where the tables belong');
  process.exitCode = 1;
} else if (after === before) {
  console.error('README.md option tables are up to date');
} else {
  fs.writeFileSync(file, after);
  console.error('README.md option tables rewritten');
}
