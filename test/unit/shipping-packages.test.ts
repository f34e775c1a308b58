// The node_modules scan (nested, scoped, linked inside and outside the project, native parts) and the node's cache
// that materializes a job's copy from it.
import test, { type ExecutionContext } from 'ava';
import {
  copyFileSync,
  existsSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readlinkSync,
  realpathSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { scanPackages } from '../../runtime/shipping/packages.ts';
import { PreparedEnv } from '../../runtime/shipping/driver-shipper.ts';
import { EnvCache, type EnvSource } from '../../runtime/shipping/env-cache.ts';
import { troupeRoot } from '../../runtime/shipping/troupe-install.ts';
import { ProtocolError, RuntimeEnvError } from '../../runtime/base/errors.ts';
import { checkManifest, objectNames } from '../../runtime/shipping/manifest.ts';
import { tarDigest } from '../../runtime/shipping/pack.ts';
import { packageFiles } from '../../runtime/shipping/project-files.ts';

// PreparedEnv keeps its packs under TROUPE_HOME: this file's own, removed at the end.
const home = mkdtempSync(join(tmpdir(), 'troupe-test-'));
process.env.TROUPE_HOME = home;
test.after.always(() => rmSync(home, { recursive: true, force: true }));

const ignoreVersion = (
  JSON.parse(readFileSync(join(troupeRoot(), 'node_modules/ignore/package.json'), 'utf8')) as {
    version: string;
  }
).version;

function dir(t: ExecutionContext, prefix: string): string {
  const d = mkdtempSync(join(tmpdir(), prefix));
  t.teardown(() => rmSync(d, { recursive: true, force: true }));
  return d;
}

function write(root: string, files: Record<string, string>): void {
  for (const [path, content] of Object.entries(files)) {
    mkdirSync(dirname(join(root, path)), { recursive: true });
    writeFileSync(join(root, path), content);
  }
}

const pkg = (name: string, version: string, extra: object = {}) => JSON.stringify({ name, version, ...extra });

/** A project with plain, nested, scoped, linked (inside and outside) and native packages. */
function project(t: ExecutionContext): { root: string; outside: string } {
  const root = dir(t, 'troupe-ship-pkgs-');
  const outside = dir(t, 'troupe-ship-outside-');
  write(root, {
    'package.json': pkg('app', '1.0.0'),
    'main.ts': 'export {}',
    'libs/local/package.json': pkg('local', '0.1.0'),
    'libs/local/index.js': 'export const local = 1;',
    'node_modules/.package-lock.json': '{}',
    'node_modules/plain/package.json': pkg('plain', '1.2.3'),
    'node_modules/plain/index.js': 'module.exports = "plain";',
    'node_modules/plain/node_modules/inner/package.json': pkg('inner', '2.0.0'),
    'node_modules/plain/node_modules/inner/index.js': 'module.exports = "inner";',
    'node_modules/@scope/thing/package.json': pkg('@scope/thing', '3.0.0'),
    'node_modules/@scope/thing/lib/x.js': 'x',
    'node_modules/gyp/package.json': pkg('gyp', '1.0.0'),
    'node_modules/gyp/binding.gyp': '{}',
    'node_modules/addon/package.json': pkg('addon', '1.0.0'),
    'node_modules/addon/build/Release/addon.node': 'ELF',
    'node_modules/ignore/package.json': pkg('ignore', ignoreVersion, { os: ['linux'] }),
    'node_modules/troupe/package.json': pkg('troupe', '0.0.1'),
  });
  write(outside, { 'package.json': pkg('far', '9.9.9'), 'index.js': 'module.exports = "far";' });
  symlinkSync('../libs/local', join(root, 'node_modules/local'));
  symlinkSync(outside, join(root, 'node_modules/far'));
  mkdirSync(join(root, 'node_modules/.bin'));
  symlinkSync('../plain/index.js', join(root, 'node_modules/.bin/plain'));
  return { root, outside };
}

test('the scan: nested and scoped packages, links inside and outside the project, native parts, troupe', async (t) => {
  const { root, outside } = project(t);
  const { manifest, sources } = await scanPackages(root);
  const by = Object.fromEntries(manifest.packages.map((p) => [p.path, p]));
  t.deepEqual(
    manifest.packages.map((p) => p.path),
    [
      'node_modules/.bin/plain',
      'node_modules/@scope/thing',
      'node_modules/addon',
      'node_modules/far',
      'node_modules/gyp',
      'node_modules/ignore',
      'node_modules/local',
      'node_modules/plain',
      'node_modules/plain/node_modules/inner',
      'node_modules/troupe',
    ],
  );
  t.deepEqual(by['node_modules/.bin/plain'].source, { kind: 'link', target: '../plain/index.js' });
  // Every shipped package, nested, scoped or linked from outside the project, is named by its files' tar.
  const shipped = {
    'node_modules/@scope/thing': join(root, 'node_modules/@scope/thing'),
    'node_modules/far': realpathSync(outside),
    'node_modules/plain': join(root, 'node_modules/plain'),
    'node_modules/plain/node_modules/inner': join(root, 'node_modules/plain/node_modules/inner'),
  };
  for (const [path, at] of Object.entries(shipped)) {
    const object = objectNames.package(await tarDigest(at, await packageFiles(at)));
    t.deepEqual(by[path].source, { kind: 'store', object }, path);
    t.is(sources.get(object), at, path);
  }
  t.is(sources.size, 4);
  t.deepEqual(by['node_modules/local'].source, { kind: 'link', target: '../libs/local' });
  for (const native of ['addon', 'gyp', 'ignore']) t.is(by[`node_modules/${native}`].source.kind, 'native', native);
  t.is(by['node_modules/troupe'].source.kind, 'troupe');
});

/** Items straight from a prepared env, counting what the cache asked for. */
function sourceOf(env: PreparedEnv): EnvSource & { asked: string[] } {
  const asked: string[] = [];
  return {
    asked,
    async file(name, to) {
      if (!env.has(name)) return undefined;
      asked.push(name);
      const from = await env.source(name);
      if (typeof from === 'string') copyFileSync(from, to);
      else writeFileSync(to, from);
      return statSync(to).size;
    },
    async bytes(name) {
      if (!env.has(name)) return undefined;
      asked.push(name);
      return (await env.source(name)) as Uint8Array;
    },
  };
}

test('a node materializes the copy once (concurrent calls share it), then reuses it without fetching', async (t) => {
  const { root } = project(t);
  rmSync(join(root, 'node_modules/gyp'), { recursive: true });
  rmSync(join(root, 'node_modules/addon'), { recursive: true });
  const env = await PreparedEnv.prepare({}, root);
  t.teardown(() => env.close());
  const cacheDir = dir(t, 'troupe-ship-cache-');
  const source = sourceOf(env);
  const cache = new EnvCache(source, { dir: cacheDir });
  const [a, b] = await Promise.all([cache.materialize(env.ref, root), cache.materialize(env.ref, root)]);
  t.is(a, b);
  t.is(source.asked.filter((n) => n.startsWith('wd-')).length, 1, 'one fetch for two concurrent requests');
  t.is(readFileSync(join(a, 'main.ts'), 'utf8'), 'export {}');
  t.is(readFileSync(join(a, 'node_modules/plain/node_modules/inner/index.js'), 'utf8'), 'module.exports = "inner";');
  t.is(readFileSync(join(a, 'node_modules/@scope/thing/lib/x.js'), 'utf8'), 'x');
  t.is(readFileSync(join(a, 'node_modules/far/index.js'), 'utf8'), 'module.exports = "far";');
  t.is(readlinkSync(join(a, 'node_modules/local')), '../libs/local');
  t.is(readFileSync(join(a, 'node_modules/local/index.js'), 'utf8'), 'export const local = 1;');
  t.is(readlinkSync(join(a, 'node_modules/.bin/plain')), '../plain/index.js');
  t.is(realpathSync(join(a, 'node_modules/troupe')), realpathSync(troupeRoot()), "the node's own troupe");
  t.is(
    realpathSync(join(a, 'node_modules/ignore')),
    realpathSync(join(troupeRoot(), 'node_modules/ignore')),
    "a native package: the node's own of the same version",
  );
  // Package files are hard links into the node's package cache.
  const plain = join(root, 'node_modules/plain');
  const object = objectNames.package(await tarDigest(plain, await packageFiles(plain)));
  const cached = join(cacheDir, 'packages', encodeURIComponent(object), 'index.js');
  t.is(statSync(cached).ino, statSync(join(a, 'node_modules/plain/index.js')).ino);
  t.false(existsSync(join(a, '.git')));

  // A node daemon started later, same cache dir: nothing fetched.
  const again = sourceOf(env);
  const later = new EnvCache(again, { dir: cacheDir });
  t.is(await later.materialize(env.ref, root), a);
  t.deepEqual(again.asked, []);
});

test("a native package the node lacks fails with a RuntimeEnvError naming it and the node's version", async (t) => {
  const { root } = project(t);
  rmSync(join(root, 'node_modules/addon'), { recursive: true });
  const env = await PreparedEnv.prepare({}, root);
  t.teardown(() => env.close());
  const cache = new EnvCache(sourceOf(env), { dir: dir(t, 'troupe-ship-cache-') });
  const e = await t.throwsAsync(cache.materialize(env.ref, root), { instanceOf: RuntimeEnvError });
  t.regex(e!.message, /gyp@1\.0\.0 .*native parts.*this one has no gyp/);
  t.deepEqual(cache.list(), [], 'checked before any package is fetched; no copy made');
});

test('eviction: over maxBytes the least recently used copy goes, never one a live worker uses', async (t) => {
  const cacheDir = dir(t, 'troupe-ship-cache-');
  const made: Array<{ env: PreparedEnv; root: string }> = [];
  for (const name of ['one', 'two', 'three']) {
    const root = dir(t, `troupe-ship-${name}-`);
    write(root, { 'package.json': pkg(name, '1.0.0'), 'data.txt': name.repeat(400) });
    const env = await PreparedEnv.prepare({}, root);
    t.teardown(() => env.close());
    made.push({ env, root });
  }
  const sources = made.map(({ env }) => sourceOf(env));
  const source: EnvSource = {
    file: (n, to, j) => sources.find((_s, i) => made[i].env.has(n))!.file(n, to, j),
    bytes: (n, j) => sources.find((_s, i) => made[i].env.has(n))!.bytes(n, j),
  };
  const cache = new EnvCache(source, { dir: cacheDir, maxBytes: 2000, graceMs: 0 });
  const { dir: one, release } = await cache.acquire(made[0].env.ref, made[0].root);
  const two = await cache.materialize(made[1].env.ref, made[1].root);
  t.true(existsSync(one), 'in use: kept though the cache is over its bound');
  t.true(existsSync(two));
  release();
  await new Promise((r) => setTimeout(r, 5));
  const three = await cache.materialize(made[2].env.ref, made[2].root);
  t.false(existsSync(one), 'the least recently used, no longer in use, went');
  t.true(existsSync(three));
  t.true(lstatSync(three).isDirectory());

  // Handed out by materialize() and not yet held: kept for graceMs (default 60 s) though the cache is over its bound.
  const patient = new EnvCache(source, { dir: dir(t, 'troupe-ship-cache-'), maxBytes: 2000 });
  const first = await patient.materialize(made[0].env.ref, made[0].root);
  await patient.materialize(made[1].env.ref, made[1].root);
  await patient.materialize(made[2].env.ref, made[2].root);
  t.true(existsSync(first), 'not evicted between materialize() and its caller taking a hold');
});

test('a manifest from the store is checked: paths under node_modules/, links inside, nothing under a link', (t) => {
  const object = objectNames.package('a'.repeat(64));
  const ok = { path: 'node_modules/a', name: 'a', version: '1.0.0', source: { kind: 'store', object } };
  t.is(checkManifest({ packages: [ok] }).packages.length, 1);
  const bad = [
    { ...ok, source: { kind: 'store', object: 'pkg-a@1.0.0' } }, // by name and version: anyone could put one first
    { ...ok, source: { kind: 'store', object: `${object}0` } },
    { ...ok, path: '../etc/passwd' },
    { ...ok, path: 'node_modules/../x' },
    { ...ok, path: 'src/a' },
    { ...ok, source: { kind: 'store', object: '../../x' } },
    { ...ok, source: { kind: 'link', target: '../../../etc' } },
    { ...ok, source: { kind: 'link', target: '/etc' } },
    { ...ok, name: 'a b' },
  ];
  for (const e of bad)
    t.throws(() => checkManifest({ packages: [e] }), { instanceOf: ProtocolError }, JSON.stringify(e));
  t.throws(
    () =>
      checkManifest({
        packages: [
          { path: 'node_modules/troupe', name: 'troupe', version: '1.0.0', source: { kind: 'troupe' } },
          { ...ok, path: 'node_modules/troupe/package.json' },
        ],
      }),
    { instanceOf: ProtocolError },
  );
});
