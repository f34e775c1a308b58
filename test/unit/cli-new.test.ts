// `troupe new` and the command name the CLI prints, without a cluster. Installing and running a new project is in
// test/cluster/package.test.ts.
import test from 'ava';
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';
import { newProject } from '../../runtime/cli/new-project.ts';
import { troupeCommand } from '../../runtime/cli/on-path.ts';
import { UsageError } from '../../runtime/base/errors.ts';

const root = join(import.meta.dirname, '..', '..');
const temp = mkdtempSync(join(tmpdir(), 'troupe-cli-new-'));
test.after.always(() => rmSync(temp, { recursive: true, force: true }));

test('troupe new writes a project that depends on this troupe, and refuses a directory that is not empty', (t) => {
  const dir = join(temp, 'My App');
  const { troupeSpec } = newProject(dir);
  t.is(troupeSpec, `file:${root}`);
  t.deepEqual(readdirSync(dir).sort(), [
    '.gitignore',
    '.npmrc',
    'main.ts',
    'package.json',
    'tasks.ts',
    'tsconfig.json',
  ]);
  const pkg = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8'));
  t.is(pkg.name, 'my-app');
  t.is(pkg.dependencies.troupe, `file:${root}`);
  t.is(pkg.scripts.start, 'tsx main.ts');
  const own = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'));
  t.is(pkg.devDependencies.tsx, own.dependencies.tsx);
  t.false(readFileSync(join(dir, 'main.ts'), 'utf8').includes('shutdown'), 'the script ends without shutdown()');

  const error = t.throws(() => newProject(dir), { instanceOf: UsageError });
  t.regex(error.message, /is not empty/);
  t.is(newProject(join(temp, 'other'), 'file:/somewhere/troupe.tgz').troupeSpec, 'file:/somewhere/troupe.tgz');
  const empty = join(temp, 'empty');
  mkdirSync(empty);
  t.notThrows(() => newProject(empty)); // an empty directory is fine
  const file = join(temp, 'a-file');
  writeFileSync(file, '');
  t.throws(() => newProject(file), { instanceOf: UsageError, message: /is a file or a directory that is not empty/ });
});

test('the join line says troupe when it is on PATH, npx troupe otherwise (node_modules/.bin does not count)', (t) => {
  const bin = join(temp, 'bin');
  const dotBin = join(temp, 'project', 'node_modules', '.bin');
  const plain = join(temp, 'plain');
  for (const d of [bin, dotBin, plain]) mkdirSync(d, { recursive: true });
  for (const d of [bin, dotBin]) {
    writeFileSync(join(d, 'troupe'), '#!/bin/sh\n');
    chmodSync(join(d, 'troupe'), 0o755);
  }
  writeFileSync(join(plain, 'troupe'), 'not executable'); // a file that is not executable is not a command
  t.is(troupeCommand([plain, dotBin].join(delimiter)), 'npx troupe');
  t.is(troupeCommand(''), 'npx troupe');
  t.is(troupeCommand([plain, bin].join(delimiter)), 'troupe');
});
