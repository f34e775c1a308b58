#!/usr/bin/env node
// Lines stay within 120 characters (the formatter wraps code; comments and strings are wrapped by hand). Part of
// `npm run lint`. Counts characters, not bytes.
import { readFileSync } from 'node:fs';
import { execFileSync } from 'node:child_process';

const MAX = 120;
const files = execFileSync(
  'git',
  [
    'ls-files',
    '-co',
    '--exclude-standard',
    'runtime',
    'actors',
    'object-store',
    'examples',
    'test',
    'bench',
    'scripts',
  ],
  { encoding: 'utf8' },
)
  .split('\n')
  .filter((f) => /\.(ts|mts|mjs|cjs|js)$/.test(f));
const long = [];
for (const f of files) {
  readFileSync(f, 'utf8')
    .split('\n')
    .forEach((line, i) => {
      const n = [...line].length;
      if (n > MAX) long.push(`${f}:${i + 1}: ${n} characters`);
    });
}
if (long.length) {
  console.error(`${long.length} lines run past ${MAX} characters:\n${long.join('\n')}`);
  process.exit(1);
}
console.log(`line length: ${files.length} files, no line past ${MAX} characters`);
