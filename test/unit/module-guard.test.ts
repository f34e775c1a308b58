// The worker's module guard: which module URLs a worker may import, decided before anything is imported.
import test from 'ava';
import { mkdirSync, mkdtempSync, realpathSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { checkModuleUrl, moduleFile, realPaths, within } from '../../runtime/worker/module-guard.ts';
import { ModuleRefusedError, UsageError } from '../../runtime/base/errors.ts';
import { LIBRARY_ACTORS } from '../../runtime/protocol/library-actors.ts';

function layout(t: import('ava').ExecutionContext) {
  const top = realpathSync(mkdtempSync(join(tmpdir(), 'troupe-guard-')));
  t.teardown(() => rmSync(top, { recursive: true, force: true }));
  const root = join(top, 'project');
  const outside = join(top, 'outside');
  mkdirSync(join(root, 'src'), { recursive: true });
  mkdirSync(outside);
  mkdirSync(join(top, 'project-sibling'));
  writeFileSync(join(root, 'src', 'tasks.ts'), 'export const x = 1;');
  writeFileSync(join(outside, 'evil.ts'), 'export const x = 1;');
  writeFileSync(join(top, 'project-sibling', 'evil.ts'), 'export const x = 1;');
  symlinkSync(outside, join(root, 'linked')); // a directory link from inside the root to outside it
  symlinkSync(join(outside, 'evil.ts'), join(root, 'src', 'evil-link.ts'));
  symlinkSync(join(root, 'src', 'tasks.ts'), join(root, 'inner-link.ts')); // a link that stays inside
  return { top, root, outside };
}
const url = (p: string) => pathToFileURL(p).href;

test('a file: module inside the root is allowed, as its real path', (t) => {
  const { root } = layout(t);
  t.is(checkModuleUrl(url(join(root, 'src', 'tasks.ts')), { root }), url(join(root, 'src', 'tasks.ts')));
  t.is(checkModuleUrl(url(join(root, 'inner-link.ts')), { root }), url(join(root, 'src', 'tasks.ts')));
  t.is(checkModuleUrl(url(join(root, 'src', '..', 'src', 'tasks.ts')), { root }), url(join(root, 'src', 'tasks.ts')));
});

test('every scheme but file: is refused, with no import', (t) => {
  const { root } = layout(t);
  for (const bad of [
    'data:text/javascript,export const x = 1',
    'http://127.0.0.1:1/x.js',
    'https://example.invalid/x.js',
    'node:child_process',
    'blob:nodedata:1234',
    'javascript:1',
    'file://otherhost/etc/passwd',
    `${url(join(root, 'src', 'tasks.ts'))}?again`,
    `${url(join(root, 'src', 'tasks.ts'))}#frag`,
    'src/tasks.ts',
    'file:///a%2Fb.ts',
    'file:///a%00b.ts',
    '/etc/passwd',
    '',
    'x'.repeat(5000),
  ]) {
    const e = t.throws(() => checkModuleUrl(bad, { root }), { instanceOf: ModuleRefusedError }, bad.slice(0, 60));
    t.regex(e!.message, /refusing to load/);
    t.true(e instanceof UsageError, 'a kind of UsageError: the caller named it');
  }
  for (const bad of [undefined, null, 7, {}, ['file:///x']])
    t.throws(() => checkModuleUrl(bad, { root }), { instanceOf: ModuleRefusedError });
});

test('outside the root is refused: another directory, a sibling with the same prefix, .., symlinks out', (t) => {
  const { top, root, outside } = layout(t);
  for (const bad of [
    join(outside, 'evil.ts'),
    join(top, 'project-sibling', 'evil.ts'),
    join(root, '..', 'outside', 'evil.ts'),
    join(root, 'linked', 'evil.ts'),
    join(root, 'src', 'evil-link.ts'),
  ])
    t.throws(() => checkModuleUrl(url(bad), { root }), { instanceOf: ModuleRefusedError, message: /outside the job/ });
  t.throws(() => checkModuleUrl(url(join(root, 'missing.ts')), { root }), {
    instanceOf: ModuleRefusedError,
    message: /cannot load .*ENOENT/,
  });
});

test("troupe's library actor modules are allowed exactly, and only when asked for", (t) => {
  const { root } = layout(t);
  const library = realPaths(Object.values(LIBRARY_ACTORS));
  t.is(library.size, Object.keys(LIBRARY_ACTORS).length);
  for (const u of Object.values(LIBRARY_ACTORS)) {
    t.is(checkModuleUrl(u, { root, library }), url(realpathSync(new URL(u))));
    t.throws(() => checkModuleUrl(u, { root }), { instanceOf: ModuleRefusedError }, 'not for a job spec');
  }
  // Another module in troupe's actors/ folder is not a library actor.
  const neighbour = new URL('../library/seeded-random.ts', LIBRARY_ACTORS.ParamServer).href;
  t.throws(() => checkModuleUrl(neighbour, { root, library }), { instanceOf: ModuleRefusedError });
});

test('the mapping to this machine runs after the shape check, and its result is checked', (t) => {
  const { root, outside } = layout(t);
  const driverRoot = '/driver/machine/project';
  const localUrl = (u: string) => u.replace(url(driverRoot), url(root));
  t.is(checkModuleUrl(url(`${driverRoot}/src/tasks.ts`), { root, localUrl }), url(join(root, 'src', 'tasks.ts')));
  t.throws(() => checkModuleUrl('data:,x', { root, localUrl: () => url(join(root, 'src', 'tasks.ts')) }), {
    instanceOf: ModuleRefusedError,
  });
  t.throws(() => checkModuleUrl(url(join(root, 'src', 'tasks.ts')), { root, localUrl: () => url(outside) }), {
    instanceOf: ModuleRefusedError,
  });
});

test('within(): the directory itself and what is below it, nothing beside it', (t) => {
  t.true(within('/a/b', '/a/b'));
  t.true(within('/a/b', '/a/b/c/d'));
  t.true(within('/a/b', '/a/b/..x'));
  t.false(within('/a/b', '/a/bc'));
  t.false(within('/a/b', '/a'));
  t.false(within('/a/b', '/a/b/../c'));
  t.is(moduleFile('file:///a/b.ts'), '/a/b.ts');
});
