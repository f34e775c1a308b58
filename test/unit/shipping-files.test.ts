// Which files of a project ship, and how they pack: ignore rules, determinism, the size limit.
import test from 'ava';
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { projectFiles } from '../../runtime/shipping/project-files.ts';
import { packFiles } from '../../runtime/shipping/pack.ts';
import { checkRuntimeEnvOptions, PreparedEnv } from '../../runtime/shipping/driver-shipper.ts';
import { ProtocolError, RuntimeEnvError, UsageError } from '../../runtime/base/errors.ts';
import { checkRuntimeEnv } from '../../runtime/protocol/jobs.ts';

// PreparedEnv keeps its packs under TROUPE_HOME: this file's own, removed at the end.
const home = mkdtempSync(join(tmpdir(), 'troupe-test-'));
process.env.TROUPE_HOME = home;
test.after.always(() => rmSync(home, { recursive: true, force: true }));

function tree(t: { teardown(f: () => void): void }, files: Record<string, string | number>): string {
  const root = mkdtempSync(join(tmpdir(), 'troupe-ship-files-'));
  t.teardown(() => rmSync(root, { recursive: true, force: true }));
  for (const [path, content] of Object.entries(files)) {
    mkdirSync(dirname(join(root, path)), { recursive: true });
    writeFileSync(join(root, path), typeof content === 'number' ? Buffer.alloc(content, 1) : content);
  }
  return root;
}

test('.gitignore at every level and .troupeignore decide; .git and node_modules never ship', async (t) => {
  const root = tree(t, {
    'package.json': '{}',
    '.gitignore': 'dist/\n*.log\n',
    '.troupeignore': 'data/big.bin\n',
    'src/a.ts': 'a',
    'src/.gitignore': 'generated.ts\n!keep.log\n',
    'src/generated.ts': 'g',
    'src/deep/generated.ts': 'nested pattern applies below too',
    'src/keep.log': '*.log above, but the deeper !keep.log wins, as in git',
    'data/big.bin': 'x',
    'data/small.bin': 'y',
    'dist/out.js': 'z',
    'debug.log': 'l',
    '.git/HEAD': 'ref',
    'node_modules/x/index.js': 'x',
    'lib/node_modules/y/index.js': 'y',
  });
  symlinkSync('src/a.ts', join(root, 'link.ts'));
  const paths = (await projectFiles(root)).map((f) => f.path);
  t.deepEqual(paths, [
    '.gitignore',
    '.troupeignore',
    'data/small.bin',
    'link.ts',
    'package.json',
    'src/.gitignore',
    'src/a.ts',
    'src/keep.log',
  ]);
});

test('the same files pack to the same sha256, whatever their times; a change gives another', async (t) => {
  const files = { 'package.json': '{}', 'a.ts': 'export const a = 1;', 'sub/b.ts': 'b' };
  const one = tree(t, files);
  await new Promise((r) => setTimeout(r, 20)); // other mtimes
  const two = tree(t, files);
  const out = tree(t, {});
  const pack = async (root: string, name: string) =>
    packFiles(
      root,
      (await projectFiles(root)).map((f) => f.path),
      join(out, name),
    );
  const a = await pack(one, 'a.tgz');
  const b = await pack(two, 'b.tgz');
  t.is(a.sha256, b.sha256);
  writeFileSync(join(two, 'a.ts'), 'export const a = 2;');
  const c = await pack(two, 'c.tgz');
  t.not(c.sha256, a.sha256);
});

test('a project over maxBytes fails at prepare, naming its five largest files and .troupeignore', async (t) => {
  const root = tree(t, {
    'package.json': '{}',
    'a.bin': 600,
    'b.bin': 500,
    'c.bin': 400,
    'd.bin': 300,
    'e.bin': 200,
    'f.bin': 100,
  });
  const e = await t.throwsAsync(PreparedEnv.prepare({ maxBytes: 1000 }, root), { instanceOf: RuntimeEnvError });
  for (const f of ['a.bin (600 B)', 'b.bin (500 B)', 'c.bin (400 B)', 'd.bin (300 B)', 'e.bin (200 B)'])
    t.true(e!.message.includes(f), f);
  t.false(e!.message.includes('f.bin'));
  t.regex(e!.message, /\.troupeignore/);
  const ok = await PreparedEnv.prepare({ maxBytes: 10_000 }, root);
  t.teardown(() => ok.close());
  t.is(ok.ref.workingDir?.bytes, 2102);
});

test('runtimeEnv.env: TROUPE_*, variables troupe sets or reads only at start, and bad names are UsageErrors', (t) => {
  t.notThrows(() => checkRuntimeEnvOptions({ env: { APP_MODE: 'x', _under: '' } }));
  const bad: Record<string, string>[] = [{ TROUPE_TOKEN: 'x' }, { 'BAD-NAME': 'x' }, { '1X': 'x' }, { OK: 7 as never }];
  bad.push({ CUDA_VISIBLE_DEVICES: '0' }, { NODE_OPTIONS: '--max-old-space-size=100' }, { troupe_x: 'y' });
  for (const env of bad)
    t.throws(() => checkRuntimeEnvOptions({ env }), { instanceOf: UsageError }, JSON.stringify(env));
  t.throws(() => checkRuntimeEnvOptions({ maxBytes: -1 }), { instanceOf: UsageError });
  t.throws(() => checkRuntimeEnvOptions({ workingDir: '/no/such/dir' }), { instanceOf: UsageError });
});

test('a runtime env from the bus is checked strictly: hashes, origin, variables', (t) => {
  const sha = 'a'.repeat(64);
  const good = {
    workingDir: { sha256: sha, bytes: 10 },
    packages: { sha256: sha, count: 2 },
    origin: { hostname: 'h', bootId: 'b', rootId: '1:2' },
    env: { A: 'b' },
  };
  t.deepEqual(checkRuntimeEnv(good), good);
  const bad = [
    { workingDir: { sha256: 'x', bytes: 1 } },
    { workingDir: { sha256: sha, bytes: -1 } },
    { packages: { sha256: sha.toUpperCase(), count: 1 } },
    { origin: { hostname: 'h', bootId: 'b', rootId: '../x' } },
    { env: { TROUPE_TOKEN: 'x' } },
    { env: { A: 'nul\0' } },
    [],
  ];
  for (const env of bad) t.throws(() => checkRuntimeEnv(env), { instanceOf: ProtocolError }, JSON.stringify(env));
});
