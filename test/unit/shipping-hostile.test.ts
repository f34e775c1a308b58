// What a node does with hostile items from the object store (archives, manifests) and a cache another user could
// reach: it refuses them with a typed error and writes nothing outside its cache.
import test, { type ExecutionContext } from 'ava';
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  chmodSync,
  existsSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gunzipSync, gzipSync } from 'node:zlib';
import * as tar from 'tar';
import { packFiles, tarDigest, unpack } from '../../runtime/shipping/pack.ts';
import { EnvCache, type EnvSource } from '../../runtime/shipping/env-cache.ts';
import { digestOf, type Manifest, objectNames } from '../../runtime/shipping/manifest.ts';
import { scanPackages } from '../../runtime/shipping/packages.ts';
import { packageFiles } from '../../runtime/shipping/project-files.ts';
import { PreparedEnv } from '../../runtime/shipping/driver-shipper.ts';
import { ProtocolError, RuntimeEnvError } from '../../runtime/base/errors.ts';
import type { RuntimeEnvRef } from '../../runtime/protocol/jobs.ts';

// Drivers keep their packages' digests and packs under TROUPE_HOME: this file's own, removed at the end.
const home = mkdtempSync(join(tmpdir(), 'troupe-test-'));
process.env.TROUPE_HOME = home;
test.after.always(() => rmSync(home, { recursive: true, force: true }));

function dir(t: ExecutionContext, prefix: string): string {
  const d = mkdtempSync(join(tmpdir(), prefix));
  t.teardown(() => rmSync(d, { recursive: true, force: true }));
  return d;
}

interface RawEntry {
  path: string;
  type?: 'File' | 'Directory' | 'SymbolicLink' | 'Link' | 'FIFO' | 'CharacterDevice';
  body?: string;
  linkpath?: string;
}

/** A gzipped tar written header by header: what a hostile driver could upload, not what packFiles makes. */
function rawTar(entries: RawEntry[]): Buffer {
  const blocks: Buffer[] = [];
  for (const e of entries) {
    const body = Buffer.from(e.body ?? '');
    const type = e.type ?? 'File';
    const h = new tar.Header({
      path: e.path,
      type,
      mode: type === 'Directory' ? 0o755 : 0o644,
      size: type === 'File' ? body.length : 0,
      linkpath: e.linkpath,
      mtime: new Date(0),
    });
    const header = Buffer.alloc(512);
    h.encode(header);
    blocks.push(header);
    if (type === 'File' && body.length) blocks.push(body, Buffer.alloc((512 - (body.length % 512)) % 512));
  }
  blocks.push(Buffer.alloc(1024));
  return gzipSync(Buffer.concat(blocks));
}

test('unpack refuses what would land outside, links leaving the archive, specials and bombs', async (t) => {
  const base = dir(t, 'troupe-ship-hostile-');
  const cases: Record<string, RawEntry[]> = {
    dotdot: [{ path: '../escaped', body: 'x' }],
    nested_dotdot: [{ path: 'a/../../escaped', body: 'x' }],
    absolute: [{ path: join(base, 'escaped'), body: 'x' }],
    hardlink_out: [{ path: 'h', type: 'Link', linkpath: '../escaped' }],
    hardlink_abs: [{ path: 'h', type: 'Link', linkpath: '/etc/passwd' }],
    symlink_abs: [{ path: 'node_modules', type: 'SymbolicLink', linkpath: base }],
    symlink_up: [{ path: 'a/b', type: 'SymbolicLink', linkpath: '../../..' }],
    symlink_then_write: [
      { path: 'l', type: 'SymbolicLink', linkpath: base },
      { path: 'l/escaped', body: 'x' },
    ],
    fifo: [{ path: 'f', type: 'FIFO' }],
    device: [{ path: 'd', type: 'CharacterDevice' }],
  };
  for (const [name, entries] of Object.entries(cases)) {
    const file = join(base, `${name}.tgz`);
    writeFileSync(file, rawTar(entries));
    const into = join(base, 'into', name);
    await t.throwsAsync(unpack(file, into, { maxBytes: 1000 }), { instanceOf: ProtocolError }, name);
    t.false(existsSync(join(base, 'escaped')), name);
    t.false(existsSync(join(base, 'into', 'escaped')), name);
  }
  // Not a gzip at all, or one cut short.
  writeFileSync(join(base, 'plain.tgz'), 'not an archive');
  await t.throwsAsync(unpack(join(base, 'plain.tgz'), join(base, 'plain')), { instanceOf: ProtocolError });
  writeFileSync(join(base, 'cut.tgz'), rawTar([{ path: 'a', body: 'y'.repeat(5000) }]).subarray(0, 30));
  await t.throwsAsync(unpack(join(base, 'cut.tgz'), join(base, 'cut')), { instanceOf: ProtocolError });
  // One that breaks off in the middle of a file: refused, and the file it was writing is closed (no fd left behind).
  const whole = gzipSync(gunzipSync(rawTar([{ path: 'big', body: 'y'.repeat(4 << 20) }])), { level: 0 });
  writeFileSync(join(base, 'broken.tgz'), Buffer.concat([whole.subarray(0, whole.length / 2), Buffer.from('junk')]));
  for (let i = 0; i < 5; i++)
    await t.throwsAsync(unpack(join(base, 'broken.tgz'), join(base, `broken-${i}`)), { instanceOf: ProtocolError });
  const openHere = () =>
    readdirSync('/proc/self/fd')
      .map((fd) => {
        try {
          return readlinkSync(join('/proc/self/fd', fd));
        } catch {
          return ''; // closed meanwhile
        }
      })
      .filter((to) => to.startsWith(join(base, 'broken-')));
  // tar closes the file as its stream ends, a moment after the refusal: give it 2 s.
  for (let i = 0; i < 40 && openHere().length; i++) await new Promise((r) => setTimeout(r, 50));
  t.deepEqual(openHere(), [], 'no file left open');
  // A gzip bomb: over the bound, unpacking stops (RuntimeEnvError, naming the setting).
  const bomb = join(base, 'bomb.tgz');
  writeFileSync(
    bomb,
    rawTar([
      { path: 'a', body: 'y'.repeat(600) },
      { path: 'b', body: 'y'.repeat(600) },
    ]),
  );
  const e = await t.throwsAsync(unpack(bomb, join(base, 'bomb'), { maxBytes: 1000, limit: 'TROUPE_X' }), {
    instanceOf: RuntimeEnvError,
  });
  t.regex(e!.message, /more than 1000 B \(TROUPE_X\)/);
  t.false(existsSync(join(base, 'bomb/b')), 'nothing past the bound is written');
  // A link that stays inside, and a hard link to a file of the archive, are kept.
  const ok = join(base, 'ok.tgz');
  writeFileSync(
    ok,
    rawTar([
      { path: 'lib/x.js', body: 'x' },
      { path: 'lib/y.js', type: 'Link', linkpath: 'lib/x.js' },
      { path: 'node_modules/.bin/x', type: 'SymbolicLink', linkpath: '../../lib/x.js' },
    ]),
  );
  const tarSha = createHash('sha256')
    .update(gunzipSync(readFileSync(ok)))
    .digest('hex');
  t.is(await unpack(ok, join(base, 'ok')), tarSha, 'the sha256 of the tar it unpacked');
  t.is(readFileSync(join(base, 'ok/node_modules/.bin/x'), 'utf8'), 'x');
  t.is(statSync(join(base, 'ok/lib/y.js')).ino, statSync(join(base, 'ok/lib/x.js')).ino);
});

/** An env whose items are whatever the test says, as a hostile driver would upload them. */
async function hostileEnv(t: ExecutionContext, packages: Record<string, Buffer>, manifest: Manifest) {
  const base = dir(t, 'troupe-ship-hostile-env-');
  mkdirSync(join(base, 'project'));
  writeFileSync(join(base, 'project/package.json'), '{}');
  const wd = await packFiles(join(base, 'project'), ['package.json'], join(base, 'wd.tgz'));
  const manifestBytes = Buffer.from(JSON.stringify(manifest));
  const manifestSha = createHash('sha256').update(manifestBytes).digest('hex');
  const items = new Map<string, Buffer>([
    [objectNames.workingDir(wd.sha256), readFileSync(join(base, 'wd.tgz'))],
    [objectNames.manifest(manifestSha), manifestBytes],
    ...Object.entries(packages),
  ]);
  const asked: string[] = [];
  const source: EnvSource = {
    async file(name, to) {
      const b = items.get(name);
      if (!b) return undefined;
      asked.push(name);
      writeFileSync(to, b);
      return b.length;
    },
    async bytes(name) {
      asked.push(name);
      return items.get(name);
    },
  };
  const ref: RuntimeEnvRef = {
    workingDir: { sha256: wd.sha256, bytes: 2 },
    packages: { sha256: manifestSha, count: manifest.packages.length },
  };
  return { source, ref, asked, root: join(base, 'project') };
}

/** The name an archive has in the store: its tar's sha256 (a node checks it). */
const stored = (archive: Buffer) => objectNames.package(createHash('sha256').update(gunzipSync(archive)).digest('hex'));

const storeEntry = (path: string, name: string, archive: Buffer) => ({
  path,
  name,
  version: '1.0.0',
  source: { kind: 'store' as const, object: stored(archive) },
});

test('a manifest path under a link a package holds is refused: nothing is written through it', async (t) => {
  const victim = dir(t, 'troupe-ship-victim-');
  writeFileSync(join(victim, 'keep'), 'mine');
  // A link inside the package (allowed), then a manifest entry beneath it.
  const evil = rawTar([
    { path: 'package.json', body: '{"name":"evil","version":"1.0.0"}' },
    { path: 'lib/.keep', body: '' },
    { path: 'node_modules', type: 'SymbolicLink', linkpath: 'lib' },
  ]);
  const x = rawTar([{ path: 'package.json', body: '{"name":"x","version":"1.0.0"}' }]);
  const { source, ref, root } = await hostileEnv(
    t,
    { [stored(evil)]: evil, [stored(x)]: x },
    {
      packages: [storeEntry('node_modules/evil', 'evil', evil), storeEntry('node_modules/evil/node_modules/x', 'x', x)],
    },
  );
  const cacheDir = dir(t, 'troupe-ship-cache-');
  const cache = new EnvCache(source, { dir: cacheDir });
  const e = await t.throwsAsync(cache.materialize(ref, root), { instanceOf: ProtocolError });
  t.regex(e!.message, /node_modules\/evil\/node_modules/);
  t.deepEqual(readdirSync(join(cacheDir, 'envs')), [], 'no copy made');
  const evilDir = join(cacheDir, 'packages', encodeURIComponent(stored(evil)));
  t.deepEqual(readdirSync(join(evilDir, 'lib')), ['.keep'], 'nothing written via the link');

  // A package linking out of itself never gets into the cache.
  const out = rawTar([
    { path: 'package.json', body: '{"name":"out","version":"1.0.0"}' },
    { path: 'node_modules', type: 'SymbolicLink', linkpath: victim },
  ]);
  const second = await hostileEnv(
    t,
    { [stored(out)]: out },
    { packages: [storeEntry('node_modules/out', 'out', out)] },
  );
  const other = new EnvCache(second.source, { dir: cacheDir });
  await t.throwsAsync(other.materialize(second.ref, second.root), { instanceOf: ProtocolError });
  t.false(existsSync(join(cacheDir, 'packages', encodeURIComponent(stored(out)))));
  t.deepEqual(readdirSync(victim), ['keep']);
});

test('the cache is ours alone: one others can write to is refused; planted entries are made again', async (t) => {
  const pkgX = rawTar([
    { path: 'package.json', body: '{"name":"x","version":"1.0.0"}' },
    { path: 'index.js', body: 'real' },
  ]);
  const { source, ref, root, asked } = await hostileEnv(
    t,
    { [stored(pkgX)]: pkgX },
    { packages: [storeEntry('node_modules/x', 'x', pkgX)] },
  );
  const open = dir(t, 'troupe-ship-cache-');
  chmodSync(open, 0o777);
  const e = await t.throwsAsync(new EnvCache(source, { dir: open }).materialize(ref, root), {
    instanceOf: RuntimeEnvError,
  });
  t.true(e!.message.includes(open) && /writable by group or others/.test(e!.message), e!.message);
  const e2 = await t.throwsAsync(new EnvCache(source, { dir: join(open, 'runtime-envs') }).materialize(ref, root), {
    instanceOf: RuntimeEnvError,
  });
  t.true(e2!.message.includes(open) && /swap the cache/.test(e2!.message), e2!.message);

  const cacheDir = join(dir(t, 'troupe-ship-cache-'), 'runtime-envs');
  // Another user's package, planted where the node would look (no marker), and a daemon's leftovers.
  const planted = join(cacheDir, 'packages', encodeURIComponent(stored(pkgX)));
  mkdirSync(planted, { recursive: true });
  writeFileSync(join(planted, 'index.js'), 'planted');
  const dead = join(cacheDir, 'tmp', `${2 ** 22 + 1}-beef`);
  const live = join(cacheDir, 'tmp', `${process.pid}-beef`);
  mkdirSync(dead, { recursive: true });
  mkdirSync(live, { recursive: true });
  const cache = new EnvCache(source, { dir: cacheDir });
  const copy = await cache.materialize(ref, root);
  t.is(readFileSync(join(copy, 'node_modules/x/index.js'), 'utf8'), 'real');
  t.true(asked.includes(stored(pkgX)), 'fetched again');
  t.is(statSync(cacheDir).mode & 0o777, 0o700);
  t.false(existsSync(dead), "a dead daemon's half-made copies are swept");
  t.true(existsSync(live), "a live daemon's are left alone");
  t.is(statSync(join(copy, 'node_modules/x/index.js')).mode & 0o222, 0, 'package files are read-only');
  t.false(existsSync(join(copy, 'node_modules/x/.troupe-entry')), 'the marker is not in the copy');
  // Sizes: the copy's hard links to packages count once, in packages/.
  const sizes = Object.fromEntries(cache.list().map((e) => [e.dir.includes('/envs/') ? 'env' : 'pkg', e.bytes]));
  t.true(sizes.pkg > 'real'.length && sizes.env < sizes.pkg + 2, JSON.stringify(sizes));
  rmSync(live, { recursive: true });

  // A later daemon reuses the marked entries without fetching.
  asked.length = 0;
  t.is(await new EnvCache(source, { dir: cacheDir }).materialize(ref, root), copy);
  t.deepEqual(asked, []);
  t.true(lstatSync(copy).isDirectory());
});

test('with a readers group (workers as another user) the copies are theirs to read, not to change', async (t) => {
  const pkgX = rawTar([
    { path: 'package.json', body: '{"name":"x","version":"1.0.0"}' },
    { path: 'index.js', body: 'real' },
  ]);
  const { source, ref, root } = await hostileEnv(
    t,
    { [stored(pkgX)]: pkgX },
    { packages: [storeEntry('node_modules/x', 'x', pkgX)] },
  );
  // As root, nobody's group, and a worker's read tried as nobody; as anyone else, our own group.
  const asRoot = process.getuid?.() === 0;
  const readers = asRoot ? 65534 : process.getgid!();
  const top = dir(t, 'troupe-ship-cache-');
  chmodSync(top, 0o711); // as the node daemon makes TROUPE_HOME passable
  const cacheDir = join(top, 'runtime-envs');
  const copy = await new EnvCache(source, { dir: cacheDir, readers }).materialize(ref, root);
  for (const d of [cacheDir, join(cacheDir, 'envs'), join(cacheDir, 'packages')]) {
    t.is(statSync(d).mode & 0o7777, 0o750, d);
    t.is(statSync(d).gid, readers, d);
  }
  t.is(statSync(join(cacheDir, 'tmp')).mode & 0o777, 0o700, 'copies being made stay private');
  if (asRoot) {
    const asNobody = (code: string) =>
      spawnSync(process.execPath, ['-e', code], { uid: 65534, gid: 65534, encoding: 'utf8' });
    const file = JSON.stringify(join(copy, 'node_modules/x/index.js'));
    const read = asNobody(`process.stdout.write(require("fs").readFileSync(${file}, "utf8"))`);
    t.is(read.stdout, 'real', read.stderr);
    t.not(asNobody(`require('fs').writeFileSync(${file}, 'planted')`).status, 0);
    t.not(asNobody(`require('fs').writeFileSync(${JSON.stringify(join(copy, 'planted.js'))}, 'x')`).status, 0);
  }
  // A daemon without readers makes the cache its own alone again.
  await new EnvCache(source, { dir: cacheDir }).materialize(ref, root);
  t.is(statSync(cacheDir).mode & 0o777, 0o700);
});

test('a package is named by its files: edited, it ships anew; its digest is kept while no file changes', async (t) => {
  const root = dir(t, 'troupe-ship-digest-');
  mkdirSync(join(root, 'node_modules/a'), { recursive: true });
  writeFileSync(join(root, 'node_modules/a/package.json'), '{"name":"a","version":"1.0.0"}');
  writeFileSync(join(root, 'node_modules/a/index.js'), 'module.exports = 1;');
  const objectOf = async () => {
    const { manifest } = await scanPackages(root);
    return (manifest.packages.find((p) => p.path === 'node_modules/a')!.source as { object: string }).object;
  };
  // Two drivers naming it at once (one's record may land while the other writes its own).
  const both = await Promise.all([scanPackages(root), scanPackages(root)]);
  t.deepEqual(both[0].manifest, both[1].manifest);
  const first = await objectOf();
  const files = await packageFiles(join(root, 'node_modules/a'));
  t.is(first, objectNames.package(await tarDigest(join(root, 'node_modules/a'), files)));

  // The machine's record is what names it while no file changed: a false one planted there is used as it is.
  const records = join(process.env.TROUPE_HOME!, 'package-digests');
  const record = readdirSync(records).find((n) => readFileSync(join(records, n), 'utf8') === digestOf(first))!;
  t.truthy(record);
  writeFileSync(join(records, record), 'f'.repeat(64));
  t.is(await objectOf(), objectNames.package('f'.repeat(64)));

  // patch-package: same version, a file changed in place (same size), so another key and another name.
  writeFileSync(join(root, 'node_modules/a/index.js'), 'module.exports = 2;');
  const patched = await objectOf();
  t.not(patched, first);
  t.is(patched, objectNames.package(await tarDigest(join(root, 'node_modules/a'), files)));

  // Changed after init() named it: the driver refuses to ship other files under the name.
  const env = await PreparedEnv.prepare({}, root);
  t.teardown(() => env.close());
  writeFileSync(join(root, 'node_modules/a/index.js'), 'module.exports = 3;');
  const e = await t.throwsAsync(env.source(patched), { instanceOf: RuntimeEnvError });
  t.regex(e!.message, /changed after init\(\) named it/);
});

test('a copy in the store unlike what its name says is put again by the driver; a second one is refused', async (t) => {
  const real = rawTar([
    { path: 'package.json', body: '{"name":"x","version":"1.0.0"}' },
    { path: 'index.js', body: 'real' },
  ]);
  const planted = rawTar([
    { path: 'package.json', body: '{"name":"x","version":"1.0.0"}' },
    { path: 'index.js', body: 'planted' },
  ]);
  const env = await hostileEnv(t, { [stored(real)]: real }, { packages: [storeEntry('node_modules/x', 'x', real)] });
  /** A store holding `bad` under the real package's name until its driver was asked `fixedAfter` times to put its
   * own again. */
  const store = (fixedAfter: number, bad = planted) => {
    const again: string[] = [];
    const source: EnvSource = {
      async file(name, to, jobId, putAgain) {
        if (putAgain) again.push(name);
        if (name !== stored(real) || again.length >= fixedAfter) return env.source.file(name, to, jobId);
        writeFileSync(to, bad);
        return bad.length;
      },
      bytes: (name, jobId) => env.source.bytes(name, jobId),
    };
    return { source, again };
  };
  const packagesIn = (cacheDir: string) => readdirSync(join(cacheDir, 'packages'));

  const once = store(1);
  const copy = await new EnvCache(once.source, { dir: dir(t, 'troupe-ship-cache-') }).materialize(
    env.ref,
    env.root,
    'job1',
  );
  t.is(readFileSync(join(copy, 'node_modules/x/index.js'), 'utf8'), 'real', 'the copy put again is the one used');
  t.deepEqual(once.again, [stored(real)]);
  // One that unpack() refuses is put again too.
  const base = dir(t, 'troupe-ship-refused-');
  const hostile = store(1, rawTar([{ path: join(base, 'escaped'), body: 'x' }]));
  const cache = dir(t, 'troupe-ship-cache-');
  await new EnvCache(hostile.source, { dir: cache }).materialize(env.ref, env.root, 'job1');
  t.deepEqual(hostile.again, [stored(real)]);
  t.false(existsSync(join(base, 'escaped')));

  // Planted again after the driver put its own: refused, and nothing is kept.
  const never = store(Number.POSITIVE_INFINITY);
  const cacheDir = dir(t, 'troupe-ship-cache-');
  const e = await t.throwsAsync(new EnvCache(never.source, { dir: cacheDir }).materialize(env.ref, env.root, 'job1'), {
    instanceOf: ProtocolError,
  });
  t.regex(e!.message, /does not match its sha256, even once its driver put it again/);
  t.deepEqual(never.again, [stored(real)], 'asked once');
  t.deepEqual(packagesIn(cacheDir), []);

  // Without a driver to ask (a submitted job's, gone): refused at once.
  const alone = store(Number.POSITIVE_INFINITY);
  const e2 = await t.throwsAsync(new EnvCache(alone.source, { dir: cacheDir }).materialize(env.ref, env.root), {
    instanceOf: ProtocolError,
  });
  t.regex(e2!.message, /does not match its sha256$/);
  t.deepEqual(alone.again, []);
});
