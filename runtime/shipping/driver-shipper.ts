// The driver's side of shipping a job's runtime env: init() prepares it (lists, packs and hashes the project, scans
// node_modules, checks the size) and serves nodes' requests to upload an item when one needs it (lazy: a cluster on
// one machine never uploads anything). uploadRuntimeEnv() uploads everything at once, for a driver that will not
// stay (a submitted job).
import { createHash } from 'node:crypto';
import { mkdirSync, mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import type { ObjectStore } from '@nats-io/obj';
import type { Bus } from '../bus/bus.ts';
import { ProtocolError, RuntimeEnvError, UsageError } from '../base/errors.ts';
import { formatBytes } from '../base/bytes.ts';
import { troupeHome } from '../base/config.ts';
import { isAlive } from '../base/processes.ts';
import { jobRoot } from '../base/job-root.ts';
import { envVarProblem, type RuntimeEnvRef } from '../protocol/jobs.ts';
import { subjects } from '../protocol/subjects.ts';
import { largest, packageFiles, projectFiles } from './project-files.ts';
import { packFiles } from './pack.ts';
import { scanPackages } from './packages.ts';
import { digestOf, objectNames } from './manifest.ts';
import { machineOrigin } from './machine.ts';
import { troupeRoot } from './troupe-install.ts';
import { hasObject, openEnvStore, putObject } from './env-store.ts';

export interface RuntimeEnvOptions {
  /** The project to ship. Default: the nearest directory at or above the entry script's that holds a package.json. */
  workingDir?: string;
  /** The largest project init() ships, in bytes of its files before compression (node_modules not counted).
   * Default 256 MB. */
  maxBytes?: number;
  /** Environment variables for the job's workers, on every node, set before any of the job's code loads. Names may
   * not start with TROUPE_. */
  env?: Record<string, string>;
}

export const DEFAULT_MAX_BYTES = 256 * 1024 * 1024;

/** Checks what the user passed; throws UsageError naming the bad option. */
export function checkRuntimeEnvOptions(o: RuntimeEnvOptions): void {
  if (typeof o !== 'object' || o === null) throw new UsageError('runtimeEnv must be an object or false');
  if (o.workingDir !== undefined) {
    let dir = false;
    try {
      dir = statSync(o.workingDir).isDirectory();
    } catch {
      /* below */
    }
    if (!dir) throw new UsageError(`runtimeEnv.workingDir ${String(o.workingDir)} is not a directory`);
  }
  if (o.maxBytes !== undefined && !(Number.isSafeInteger(o.maxBytes) && o.maxBytes > 0))
    throw new UsageError(`runtimeEnv.maxBytes must be a positive whole number of bytes, not ${String(o.maxBytes)}`);
  if (o.env !== undefined) {
    if (typeof o.env !== 'object' || o.env === null) throw new UsageError('runtimeEnv.env must be an object');
    for (const [k, v] of Object.entries(o.env)) {
      const why = envVarProblem(k, v);
      if (why) throw new UsageError(`runtimeEnv.env: ${why}`);
    }
  }
}

/** One item a node may ask for: a file packed already, bytes, or a package directory packed on first request. */
type Item = { file: string } | { bytes: Uint8Array } | { dir: string };

/** A job's runtime env, prepared on the driver: its reference (what nodes get in the JobRef) and the items behind
 * it. */
export class PreparedEnv {
  private readonly packing = new Map<string, Promise<string | Uint8Array>>();

  private constructor(
    readonly ref: RuntimeEnvRef,
    readonly root: string,
    private readonly items: Map<string, Item>,
    private readonly tmp: string,
    private readonly removeTmp: () => void,
  ) {}

  /** Lists, packs and hashes the project at `root` and scans its node_modules. Throws RuntimeEnvError when the
   * project is over maxBytes. */
  static async prepare(o: RuntimeEnvOptions, root = o.workingDir ? resolve(o.workingDir) : jobRoot()) {
    const files = await projectFiles(root);
    const total = files.reduce((n, f) => n + f.size, 0);
    const max = o.maxBytes ?? DEFAULT_MAX_BYTES;
    if (total > max)
      throw new RuntimeEnvError(
        `the project ${root} has ${formatBytes(total)} of files to ship, over runtimeEnv.maxBytes ` +
          `(${formatBytes(max)}). Largest: ${largest(files)
            .map((f) => `${f.path} (${formatBytes(f.size)})`)
            .join(', ')}. Exclude what workers do not need with a .troupeignore file in the project (the syntax ` +
          'of .gitignore), or raise runtimeEnv.maxBytes',
      );
    const tmp = outgoingDir();
    const removeTmp = () => rmSync(tmp, { recursive: true, force: true });
    process.once('exit', removeTmp); // a driver that exits without leaving
    try {
      const items = new Map<string, Item>();
      const wdFile = join(tmp, 'wd.tgz');
      const wd = await packFiles(
        root,
        files.map((f) => f.path),
        wdFile,
      );
      items.set(objectNames.workingDir(wd.sha256), { file: wdFile });
      const scanned = await scanPackages(root);
      for (const [object, dir] of scanned.sources) items.set(object, { dir });
      const manifest = new TextEncoder().encode(JSON.stringify(scanned.manifest));
      const manifestSha = createHash('sha256').update(manifest).digest('hex');
      items.set(objectNames.manifest(manifestSha), { bytes: manifest });
      const ref: RuntimeEnvRef = {
        workingDir: { sha256: wd.sha256, bytes: total },
        packages: { sha256: manifestSha, count: scanned.manifest.packages.length },
        origin: machineOrigin(root),
        troupe: troupeRoot(),
      };
      if (o.env && Object.keys(o.env).length) ref.env = { ...o.env };
      return new PreparedEnv(ref, root, items, tmp, removeTmp);
    } catch (e) {
      process.off('exit', removeTmp);
      removeTmp();
      throw e;
    }
  }

  /** Every item's object name. */
  names(): string[] {
    return [...this.items.keys()];
  }

  has(name: string): boolean {
    return this.items.has(name);
  }

  /** The item's bytes or file, packing a package directory the first time: a RuntimeEnvError if its files are no
   * longer those its name was made from. */
  source(name: string): Promise<string | Uint8Array> {
    const item = this.items.get(name);
    if (!item) return Promise.reject(new ProtocolError(`this job has no runtime env item ${name}`));
    if ('file' in item) return Promise.resolve(item.file);
    if ('bytes' in item) return Promise.resolve(item.bytes);
    let p = this.packing.get(name);
    if (!p) {
      const file = join(this.tmp, `pkg-${this.packing.size}.tgz`);
      p = (async () => {
        const packed = await packFiles(item.dir, await packageFiles(item.dir), file);
        if (packed.sha256 !== digestOf(name))
          throw new RuntimeEnvError(
            `the package at ${item.dir} changed after init() named it by its files: run the script again`,
          );
        return file;
      })();
      this.packing.set(name, p);
    }
    return p;
  }

  close(): void {
    process.off('exit', this.removeTmp);
    this.removeTmp();
  }
}

/** Uploads a prepared env's items into the object store when a node asks (each at most once per driver; never when
 * the store has it already, from this job or another), counting the bytes it sent. */
export class DriverShipper {
  private store?: Promise<ObjectStore>;
  private readonly uploads = new Map<string, Promise<number>>();
  private readonly putAgain = new Set<string>();
  /** Bytes this driver put into the object store. */
  shippedBytes = 0;

  constructor(
    private readonly bus: Bus,
    readonly env: PreparedEnv,
    private readonly onShipped: (bytes: number) => void = () => undefined,
  ) {}

  /** Serves nodes' requests for this job's items. */
  serve(jobId: string): void {
    this.bus.serve(subjects.jobShip(jobId), async (req: { name?: unknown; again?: unknown }) => {
      if (typeof req?.name !== 'string' || !this.env.has(req.name))
        throw new ProtocolError(`a ship request must name one of this job's runtime env items`);
      await this.ship(req.name, req.again === true);
      return { ok: true };
    });
  }

  /** Puts the item into the object store unless it is there; resolves to the bytes this call sent. `again`: a node
   * found other bytes under its name (anyone holding a driver credential can put an object): put ours over them,
   * once per item. */
  ship(name: string, again = false): Promise<number> {
    const before = this.uploads.get(name);
    const over = again && !this.putAgain.has(name);
    if (before && !over) return before;
    if (over) this.putAgain.add(name);
    const put = () => this.upload(name, over);
    const p = before ? before.then(put, put) : put(); // after the upload of it still under way
    this.uploads.set(name, p);
    p.catch(() => this.uploads.delete(name)); // a failed upload may be tried again
    return p;
  }

  /** Every item not in the store yet. */
  async shipAll(): Promise<number> {
    let n = 0;
    for (const name of this.env.names()) n += await this.ship(name);
    return n;
  }

  private async upload(name: string, over: boolean): Promise<number> {
    this.store ??= openEnvStore(this.bus);
    const os = await this.store;
    // Another driver may upload the same item at the same moment: both write the same bytes, and a reader retries.
    if (!over && (await hasObject(os, name))) return 0;
    const bytes = await putObject(os, name, await this.env.source(name));
    this.shippedBytes += bytes;
    this.onShipped(this.shippedBytes);
    return bytes;
  }
}

/** Prepares the project's runtime env and uploads every item the object store does not have yet (the project, the
 * manifest, each package not shipped before): for a driver that submits a job and exits, so nodes can materialize
 * it without it (`materialize()` in env-cache.ts). */
export async function uploadRuntimeEnv(bus: Bus, opts: RuntimeEnvOptions = {}): Promise<RuntimeEnvRef> {
  checkRuntimeEnvOptions(opts);
  const env = await PreparedEnv.prepare(opts);
  try {
    await new DriverShipper(bus, env).shipAll();
    return env.ref;
  } finally {
    env.close();
  }
}

/** A directory of this process's own for packs on their way out, under TROUPE_HOME (which tests make and remove):
 * removed when the process exits, and by the next driver on this machine if it was killed before it could. */
function outgoingDir(): string {
  const parent = join(troupeHome(), 'outgoing');
  mkdirSync(parent, { recursive: true, mode: 0o700 });
  for (const name of readdirSync(parent)) {
    const pid = Number(name.split('-')[0]);
    if (Number.isInteger(pid) && pid > 0 && !isAlive(pid)) rmSync(join(parent, name), { recursive: true, force: true });
  }
  return mkdtempSync(join(parent, `${process.pid}-`));
}
