// The node's side of shipping: materializes a job's runtime env into a per-hash directory of its cache, fetching from
// the object store (asking the driver to upload first when the store lacks an item), and keeps the cache bounded.
//
// <dir>/envs/<key>      a job's copy: its project's files, node_modules built from packages, node_modules/troupe
// <dir>/packages/<obj>  one package as shipped (named by its files' digest), shared by jobs through hard links
// <dir>/tmp/<pid>-<hex>/ a daemon's own: unpacked here first, then renamed into place: another node daemon on the
//                       machine sharing the cache sees a whole directory or none
// What comes from the store is untrusted: archives are checked as they unpack (pack.ts), nothing is written through a
// link, and the cache is this user's alone (0700; refused when another user could write into it).
import { randomBytes, createHash } from 'node:crypto';
import {
  chmod,
  chown,
  copyFile,
  link,
  lstat,
  mkdir,
  readdir,
  readFile,
  readlink,
  rename,
  rm,
  stat,
  symlink,
  utimes,
  writeFile,
} from 'node:fs/promises';
import { dirname, isAbsolute, join, relative, resolve, sep } from 'node:path';
import type { ObjectStore } from '@nats-io/obj';
import type { Bus } from '../bus/bus.ts';
import { ProtocolError, RuntimeEnvError } from '../base/errors.ts';
import { troupeHome } from '../base/config.ts';
import { formatBytes } from '../base/bytes.ts';
import type { RuntimeEnvRef } from '../protocol/jobs.ts';
import { subjects } from '../protocol/subjects.ts';
import { checkManifest, digestOf, objectNames, type PackageEntry } from './manifest.ts';
import { unpack, type UnpackOptions } from './pack.ts';
import { getBytes, getObject, openEnvStore } from './env-store.ts';
import { sameMachine } from './machine.ts';
import { installedPackage, troupeRoot } from './troupe-install.ts';
import { isAlive } from '../base/processes.ts';

export interface EnvCacheOptions {
  /** Default `<TROUPE_HOME>/runtime-envs`. */
  dir?: string;
  /** Bytes the cache may hold before the least recently used entries not in use go. Default
   * TROUPE_RUNTIME_ENV_CACHE_BYTES, else 10 GiB. */
  maxBytes?: number;
  /** The most bytes one package may unpack to. Default TROUPE_RUNTIME_ENV_PACKAGE_MAX_BYTES, else 2 GiB. */
  maxPackageBytes?: number;
  /** How long a copy materialize() handed out is kept from eviction for its caller to hold() it. Default 60 s. */
  graceMs?: number;
  /** One line per materialized env. */
  log?: (line: string) => void;
  /** A group that may read the copies (not change them): the workers' when they run as another user. */
  readers?: number;
}

/** Where a cache gets items: the object store (StoreSource), or anything that can read one by name. */
export interface EnvSource {
  /** Writes the item into the file `to`; its bytes, or undefined when there is no such item. `again`: the last copy
   * read was not what its name says; ask the job's driver to put its own over it first. */
  file(name: string, to: string, jobId: string | undefined, again?: boolean): Promise<number | undefined>;
  bytes(name: string, jobId: string | undefined, again?: boolean): Promise<Uint8Array | undefined>;
}

/** Items from the JetStream object store; one missing is asked of the job's driver (which uploads it) first. A read
 * that fails (another driver replacing the same object at that moment) is tried once more. */
export class StoreSource implements EnvSource {
  private store?: Promise<ObjectStore>;

  constructor(
    private readonly bus: Bus,
    /** How long to wait for a driver to upload an item (default 10 minutes). */
    private readonly shipTimeoutMs = 600_000,
  ) {}

  async file(name: string, to: string, jobId: string | undefined, again = false): Promise<number | undefined> {
    const os = await this.open();
    if (again) await this.askDriver(name, jobId, true);
    const n = await getObject(os, name, to).catch(() => undefined);
    if (n !== undefined) return n;
    await this.askDriver(name, jobId);
    return getObject(os, name, to).catch(() => getObject(os, name, to));
  }

  async bytes(name: string, jobId: string | undefined, again = false): Promise<Uint8Array | undefined> {
    const os = await this.open();
    if (again) await this.askDriver(name, jobId, true);
    const b = await getBytes(os, name);
    if (b) return b;
    await this.askDriver(name, jobId);
    return getBytes(os, name);
  }

  private async askDriver(name: string, jobId: string | undefined, again = false): Promise<void> {
    if (!jobId) return;
    try {
      const req = again ? { name, again } : { name };
      await this.bus.request(subjects.jobShip(jobId), req, { timeoutMs: this.shipTimeoutMs });
    } catch (e) {
      throw new RuntimeEnvError(`could not get ${name} of job ${jobId} from its driver: ${(e as Error).message}`, {
        cause: e,
      });
    }
  }

  private open(): Promise<ObjectStore> {
    this.store ??= openEnvStore(this.bus);
    return this.store;
  }
}

/** What a worker of the job runs in. */
export interface LocalEnv {
  /** The job's root here: the driver's root itself (same machine, or nothing shipped) or a copy. */
  root: string;
  env?: Record<string, string>;
}

interface Entry {
  bytes: number;
  lastUsed: number;
  holds: number;
  /** Handed out by materialize() until then: not evicted before its caller takes a hold. */
  pinnedUntil: number;
}

/** In each entry, written before its atomic rename into place: what it is. An entry without the right one (half-made
 * by an older troupe, or not made by us) is made again. */
const MARKER = '.troupe-entry';
const DAY_MS = 24 * 3600_000;

export class EnvCache {
  readonly dir: string;
  readonly maxBytes: number;
  readonly maxPackageBytes: number;
  private readonly graceMs: number;
  private readonly making = new Map<string, Promise<string>>();
  private readonly entries = new Map<string, Entry>();
  /** This daemon's own: another daemon sharing the cache never touches it (nor this one theirs while they live). */
  private readonly tmpRoot: string;
  private loaded?: Promise<void>;
  /** Reuse, commit and eviction run one at a time, so an entry checked for reuse is not evicted meanwhile. */
  private lock: Promise<unknown> = Promise.resolve();

  constructor(
    private readonly source: EnvSource,
    private readonly o: EnvCacheOptions = {},
  ) {
    this.dir = o.dir ?? join(troupeHome(), 'runtime-envs');
    this.maxBytes = o.maxBytes ?? (Number(process.env.TROUPE_RUNTIME_ENV_CACHE_BYTES) || 10 * 2 ** 30);
    this.maxPackageBytes =
      o.maxPackageBytes ?? (Number(process.env.TROUPE_RUNTIME_ENV_PACKAGE_MAX_BYTES) || 2 * 2 ** 30);
    this.graceMs = o.graceMs ?? 60_000;
    this.tmpRoot = join(this.dir, 'tmp', `${process.pid}-${randomBytes(6).toString('hex')}`);
  }

  /** Where a worker of this job runs: the root in place when nothing was shipped or the driver is on this machine,
   * else the copy (materialized first). */
  async localEnv(job: { id: string; root: string; env?: RuntimeEnvRef }): Promise<LocalEnv> {
    const ref = job.env;
    const root =
      ref?.workingDir && !sameMachine(ref.origin, job.root) ? await this.materialize(ref, job.root, job.id) : job.root;
    return ref?.env ? { root, env: ref.env } : { root };
  }

  /** A shipped directory here: itself on the machine it was shipped from, else this node's copy (from the store
   * alone: for `troupe job submit`, whose CLI uploaded everything and left). */
  async localDir(ref: RuntimeEnvRef, dir: string): Promise<string> {
    return sameMachine(ref.origin, dir) ? dir : this.materialize(ref, dir);
  }

  /** The local directory holding the env's copy of the project, made at most once per hash (concurrent calls share
   * one). `jobId` names the driver to ask for items the store lacks; without it (or with the driver gone) they must
   * be in the store already (uploadRuntimeEnv). The copy is not evicted for `graceMs` after this resolves: take a
   * hold() by then, or use acquire(). */
  materialize(ref: RuntimeEnvRef, jobRoot: string, jobId?: string): Promise<string> {
    if (!ref.workingDir) return Promise.resolve(jobRoot);
    const key = createHash('sha256')
      .update(`${ref.workingDir.sha256}:${ref.packages?.sha256 ?? ''}:${troupeRoot()}`)
      .digest('hex')
      .slice(0, 40);
    let p = this.making.get(key);
    if (!p) {
      p = this.make(key, ref, jobId).finally(() => this.making.delete(key));
      this.making.set(key, p);
    }
    return p;
  }

  /** materialize() with the hold taken: the copy stays until `release()`. */
  async acquire(ref: RuntimeEnvRef, jobRoot: string, jobId?: string): Promise<{ dir: string; release: () => void }> {
    const dir = await this.materialize(ref, jobRoot, jobId);
    return { dir, release: this.hold(dir) };
  }

  /** A worker uses the env at `dir`: it is not evicted until the returned release is called. */
  hold(dir: string): () => void {
    const e = this.entries.get(dir);
    if (!e) return () => undefined; // the root in place: not ours
    e.holds++;
    e.lastUsed = Date.now();
    let released = false;
    return () => {
      if (released) return;
      released = true;
      e.holds--;
      e.lastUsed = Date.now();
    };
  }

  private async make(key: string, ref: RuntimeEnvRef, jobId: string | undefined): Promise<string> {
    await this.load();
    const dir = join(this.dir, 'envs', key);
    const marker = `env ${key}\n`;
    if (await this.reuse(dir, marker)) return dir;
    const started = Date.now();
    const fetched = { bytes: 0 };
    const tmp = await this.tmpPath();
    try {
      // The driver counted the project's bytes: more than twice that (and some slack) is not its project.
      await this.fetchInto(objectNames.workingDir(ref.workingDir!.sha256), tmp, jobId, fetched, {
        maxBytes: 2 * ref.workingDir!.bytes + 64 * 2 ** 20,
      });
      // Only the manifest makes node_modules (a project archive never holds one; a link there could lead elsewhere).
      await rm(join(tmp, 'node_modules'), { recursive: true, force: true });
      let packages = 0;
      if (ref.packages) {
        const manifest = await this.fetchManifest(ref.packages.sha256, jobId, fetched);
        for (const entry of manifest.packages) if (entry.source.kind === 'native') nativeHere(entry); // fail first
        for (const entry of manifest.packages) {
          await this.place(entry, tmp, jobId, fetched);
          packages++;
        }
      }
      // troupe is never shipped: the job gets this node's own, the one its workers run.
      await parentInside(tmp, 'node_modules/troupe');
      await rm(join(tmp, 'node_modules', 'troupe'), { recursive: true, force: true });
      await symlink(troupeRoot(), join(tmp, 'node_modules', 'troupe'), 'dir');
      await this.commit(tmp, dir, marker);
      this.o.log?.(
        `troupe: runtime env ${key} ready in ${Date.now() - started} ms (${packages} package entries; fetched ` +
          `${formatBytes(fetched.bytes)})`,
      );
      return dir;
    } catch (e) {
      await rm(tmp, { recursive: true, force: true });
      throw e;
    }
  }

  /** Puts one manifest entry at its path in the copy being made, never through a link (a package's files may hold
   * links, and the manifest could name a path under one). */
  private async place(entry: PackageEntry, into: string, jobId: string | undefined, fetched: { bytes: number }) {
    const to = join(into, entry.path);
    await parentInside(into, entry.path);
    await rm(to, { recursive: true, force: true }); // a link itself goes, not what it points to
    const s = entry.source;
    if (s.kind === 'link') await symlink(s.target, to);
    else if (s.kind === 'troupe') await symlink(troupeRoot(), to, 'dir');
    else if (s.kind === 'native') await symlink(nativeHere(entry), to, 'dir');
    else await linkTree(await this.pkg(s.object, jobId, fetched), to);
  }

  /** A package's directory in the cache, fetched and unpacked once (concurrent calls share one). */
  private pkg(object: string, jobId: string | undefined, fetched: { bytes: number }): Promise<string> {
    const dir = join(this.dir, 'packages', encodeURIComponent(object));
    const key = `pkg:${dir}`;
    let p = this.making.get(key);
    if (!p) {
      p = (async () => {
        const marker = `pkg ${object}\n`;
        if (await this.reuse(dir, marker)) return dir;
        const tmp = await this.tmpPath();
        try {
          await this.fetchInto(object, tmp, jobId, fetched, {
            maxBytes: this.maxPackageBytes,
            limit: 'TROUPE_RUNTIME_ENV_PACKAGE_MAX_BYTES',
          });
          await seal(tmp);
          await this.commit(tmp, dir, marker);
          return dir;
        } finally {
          await rm(tmp, { recursive: true, force: true });
        }
      })().finally(() => this.making.delete(key));
      this.making.set(key, p);
    }
    return p;
  }

  /** The job's manifest, checked against its sha256 (asked of its driver again once, as fetchInto()). */
  private async fetchManifest(sha: string, jobId: string | undefined, fetched: { bytes: number }) {
    const name = objectNames.manifest(sha);
    for (let again = false; ; again = true) {
      const bytes = await this.source.bytes(name, jobId, again);
      if (!bytes) throw new RuntimeEnvError(`the job's package manifest ${name} is not in the object store`);
      fetched.bytes += bytes.length;
      if (createHash('sha256').update(bytes).digest('hex') === sha)
        return checkManifest(JSON.parse(new TextDecoder().decode(bytes)));
      if (again || !jobId) throw new ProtocolError(`the package manifest ${name} does not match its hash`);
    }
  }

  /** Fetches the archive `name` and unpacks it into `into`. Its tar must have the sha256 its name ends in: the store
   * takes objects from anyone holding a driver credential, so a copy that does not (or that unpack() refuses) is
   * unpacked for nothing, and the job's driver is asked to put its own over it, once. */
  private async fetchInto(
    name: string,
    into: string,
    jobId: string | undefined,
    fetched: { bytes: number },
    o: UnpackOptions,
  ): Promise<void> {
    const archive = `${into}.tgz`;
    try {
      for (let again = false; ; again = true) {
        const n = await this.source.file(name, archive, jobId, again);
        if (n === undefined)
          throw new RuntimeEnvError(`${name} is not in the object store and its driver did not ship it`);
        fetched.bytes += n;
        // An archive refused as it unpacks is not the driver's either (or its project breaks a rule: then the
        // driver's own copy is refused the same way).
        const got = await unpack(archive, into, o).catch((e: unknown) => {
          if (e instanceof ProtocolError) return e;
          throw e;
        });
        if (got === digestOf(name)) return;
        await rm(into, { recursive: true, force: true });
        if (again || !jobId) {
          if (got instanceof ProtocolError) throw got;
          const why = again ? ', even once its driver put it again' : '';
          throw new ProtocolError(`${name} from the object store does not match its sha256${why}`);
        }
      }
    } finally {
      await rm(archive, { force: true });
    }
  }

  private async tmpPath(): Promise<string> {
    await mkdir(this.tmpRoot, { recursive: true, mode: 0o700 });
    return join(this.tmpRoot, randomBytes(8).toString('hex'));
  }

  private locked<T>(f: () => Promise<T>): Promise<T> {
    const p = this.lock.then(f);
    this.lock = p.catch(() => undefined);
    return p;
  }

  /** Whether `dir` holds a whole entry made by us (then it is pinned for the caller); one that does not goes. */
  private reuse(dir: string, marker: string): Promise<boolean> {
    return this.locked(async () => {
      if ((await readFile(join(dir, MARKER), 'utf8').catch(() => undefined)) === marker) {
        let e = this.entries.get(dir);
        if (!e) {
          e = { bytes: await du(dir, dir.startsWith(join(this.dir, 'envs'))), lastUsed: 0, holds: 0, pinnedUntil: 0 };
          this.entries.set(dir, e); // another daemon made it since load()
        }
        this.handOut(dir, e);
        return true;
      }
      this.entries.delete(dir);
      await rm(dir, { recursive: true, force: true });
      return false;
    });
  }

  /** Marks a finished directory and renames it into place; another process that got there first wins, and ours
   * goes. */
  private async commit(tmp: string, dir: string, marker: string): Promise<void> {
    await rm(join(tmp, MARKER), { recursive: true, force: true }); // never written through a link an archive made
    await writeFile(join(tmp, MARKER), marker, { flag: 'wx', mode: 0o400 });
    if (this.o.readers !== undefined) await share(tmp, this.o.readers); // unpack made it 0700
    await this.locked(async () => {
      await mkdir(dirname(dir), { recursive: true, mode: 0o700 });
      try {
        await rename(tmp, dir);
      } catch (e) {
        if ((await readFile(join(dir, MARKER), 'utf8').catch(() => undefined)) !== marker) throw e;
        await rm(tmp, { recursive: true, force: true });
      }
      const e = { bytes: await du(dir, dir.startsWith(join(this.dir, 'envs'))), lastUsed: 0, holds: 0, pinnedUntil: 0 };
      this.entries.set(dir, e);
      this.handOut(dir, e);
      await this.evict(dir);
    });
  }

  private handOut(dir: string, e: Entry): void {
    e.lastUsed = Date.now();
    e.pinnedUntil = e.lastUsed + this.graceMs;
    const now = new Date();
    void utimes(dir, now, now).catch(() => undefined); // for the next daemon's load()
  }

  /** What an earlier daemon left: its entries, by last use (mtime). Once, before anything is made. */
  private load(): Promise<void> {
    this.loaded ??= this.loadOnce();
    return this.loaded;
  }

  private async loadOnce(): Promise<void> {
    await mkdir(dirname(this.dir), { recursive: true, mode: 0o700 });
    await safeParent(dirname(this.dir));
    const readers = this.o.readers;
    await ownDir(this.dir, readers);
    for (const sub of ['envs', 'packages']) await ownDir(join(this.dir, sub), readers);
    await ownDir(join(this.dir, 'tmp'));
    for (const sub of ['envs', 'packages']) {
      const parent = join(this.dir, sub);
      for (const name of await readdir(parent).catch(() => [] as string[])) {
        const dir = join(parent, name);
        if (this.entries.has(dir)) continue;
        const st = await stat(dir).catch(() => undefined);
        if (st)
          this.entries.set(dir, {
            bytes: await du(dir, sub === 'envs'),
            lastUsed: st.mtimeMs,
            holds: 0,
            pinnedUntil: 0,
          });
      }
    }
    // Half-made copies of daemons that died (a live one's are its own), and any older than a day.
    for (const name of await readdir(join(this.dir, 'tmp')).catch(() => [] as string[])) {
      const path = join(this.dir, 'tmp', name);
      const pid = /^(\d+)-[0-9a-f]+$/.exec(name)?.[1];
      const st = await lstat(path).catch(() => undefined);
      if (pid && isAlive(Number(pid)) && st && Date.now() - st.mtimeMs < DAY_MS) continue;
      await rm(path, { recursive: true, force: true });
    }
  }

  /** While over maxBytes: the least recently used entry that no live worker uses, not just handed out (and not
   * `keep`) goes. Runs under the lock. */
  private async evict(keep: string): Promise<void> {
    let total = [...this.entries.values()].reduce((n, e) => n + e.bytes, 0);
    while (total > this.maxBytes) {
      const now = Date.now();
      let victim: [string, Entry] | undefined;
      for (const [dir, e] of this.entries)
        if (dir !== keep && e.holds === 0 && e.pinnedUntil <= now && !(victim && victim[1].lastUsed <= e.lastUsed))
          victim = [dir, e];
      if (!victim) return;
      this.entries.delete(victim[0]);
      total -= victim[1].bytes;
      await rm(victim[0], { recursive: true, force: true });
    }
  }

  /** For tests and status: the entries the cache holds. */
  list(): Array<{ dir: string; bytes: number; lastUsed: number; inUse: boolean }> {
    return [...this.entries].map(([dir, e]) => ({ dir, bytes: e.bytes, lastUsed: e.lastUsed, inUse: e.holds > 0 }));
  }
}

/** Creates the cache's directory (mode 0700; 0750 with the group `readers`) or checks the one there: ours, a
 * directory, not writable by group or others. Another user able to write into it could plant a package that jobs
 * then run. */
async function ownDir(dir: string, readers?: number): Promise<void> {
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const st = await lstat(dir);
  const uid = process.getuid?.();
  const why = !st.isDirectory()
    ? 'is not a directory (a link?)'
    : uid !== undefined && st.uid !== uid
      ? `is owned by uid ${st.uid}, not this daemon's (${uid})`
      : st.mode & 0o022
        ? 'is writable by group or others'
        : undefined;
  if (why)
    throw new RuntimeEnvError(
      `the runtime env cache ${dir} ${why}: another user could plant code jobs would run. Remove it, or set ` +
        'TROUPE_HOME to a directory of your own',
    );
  if (readers !== undefined) await share(dir, readers);
  else if (st.mode & 0o077) await chmod(dir, 0o700);
}

/** Lets the group `readers` read `dir` (not change it): 0750, owner unchanged. */
async function share(dir: string, readers: number): Promise<void> {
  await chown(dir, (await lstat(dir)).uid, readers);
  await chmod(dir, 0o750);
}

/** The cache's parent (TROUPE_HOME): whoever owns it could move our cache aside and put theirs there. Ours or
 * root's, and writable by others only with the sticky bit (as /tmp). */
async function safeParent(dir: string): Promise<void> {
  const st = await stat(dir);
  const uid = process.getuid?.();
  if (uid === undefined) return;
  const why =
    st.uid !== uid && st.uid !== 0
      ? `is owned by uid ${st.uid}, not this daemon's (${uid})`
      : st.mode & 0o022 && !(st.mode & 0o1000)
        ? 'is writable by group or others'
        : undefined;
  if (why)
    throw new RuntimeEnvError(
      `${dir}, which holds the runtime env cache, ${why}: another user could swap the cache. Set TROUPE_HOME to a ` +
        'directory of your own',
    );
}

/** Makes each directory on `rel`'s way from `root` (not the last part), refusing to go through a link or a file:
 * nothing the cache writes may land outside the copy. */
async function parentInside(root: string, rel: string): Promise<void> {
  let at = root;
  for (const part of rel.split('/').slice(0, -1)) {
    at = join(at, part);
    let st = await lstat(at).catch(() => undefined);
    if (!st) {
      await mkdir(at).catch((e: NodeJS.ErrnoException) => {
        if (e.code !== 'EEXIST') throw e;
      });
      st = await lstat(at);
    }
    if (!st.isDirectory())
      throw new ProtocolError(`${rel} would be written through ${relative(root, at)}, which is not a directory`);
  }
}

/** A package as cached: its files read-only (every job's copy shares them through hard links), its directories
 * ours to remove. */
async function seal(dir: string): Promise<void> {
  await chmod(dir, 0o755);
  for (const e of await readdir(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) await seal(p);
    else if (e.isFile()) await chmod(p, (await lstat(p)).mode & 0o555);
  }
}

/** This node's installation of a package with native parts, which must be the version the job has. */
function nativeHere(entry: PackageEntry): string {
  const mine = installedPackage(entry.name!);
  if (!mine || mine.version !== entry.version)
    throw new RuntimeEnvError(
      `${entry.name}@${entry.version} (at ${entry.path}) has native parts, which are not shipped: a node uses ` +
        `its own installation, and this one has ${mine ? `${entry.name}@${mine.version}` : `no ${entry.name}`}. ` +
        `Install ${entry.name}@${entry.version} next to troupe on every node`,
    );
  return mine.dir;
}

/** Bytes of the files under dir, each inode once. `ownOnly`: a copy's files hard-linked from elsewhere (its packages,
 * counted in packages/) are not counted. */
async function du(dir: string, ownOnly: boolean, seen = new Set<number>()): Promise<number> {
  let n = 0;
  for (const e of await readdir(dir, { withFileTypes: true }).catch(() => [])) {
    const p = join(dir, e.name);
    if (e.isDirectory()) n += await du(p, ownOnly, seen);
    else if (e.isFile()) {
      const st = await lstat(p);
      if (seen.has(st.ino) || (ownOnly && st.nlink > 1)) continue;
      seen.add(st.ino);
      n += st.size;
    }
  }
  return n;
}

/** Recreates the package `src` at `dest` with hard links to its files (a copy where they are on other file systems);
 * its links only where they stay inside it. `dest` must not exist, its parent must be checked. */
async function linkTree(src: string, dest: string, top = src): Promise<void> {
  await mkdir(dest);
  for (const e of await readdir(src, { withFileTypes: true })) {
    if (src === top && e.name === MARKER) continue;
    const from = join(src, e.name);
    const to = join(dest, e.name);
    if (e.isDirectory()) await linkTree(from, to, top);
    else if (e.isSymbolicLink()) {
      const target = await readlink(from);
      const lands = relative(top, resolve(src, target));
      if (isAbsolute(target) || lands === '..' || lands.startsWith(`..${sep}`) || isAbsolute(lands))
        throw new ProtocolError(`the package link ${relative(top, from)} -> ${target} leaves the package`);
      await symlink(target, to);
    } else if (e.isFile())
      await link(from, to).catch((err: NodeJS.ErrnoException) => {
        if (err.code === 'EXDEV' || err.code === 'EPERM' || err.code === 'EMLINK') return copyFile(from, to);
        throw err;
      });
  }
}
