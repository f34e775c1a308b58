// The driver API: init(), shutdown(), put(), get(), wait().
import { hostname } from 'node:os';
import { existsSync, readFileSync, realpathSync } from 'node:fs';
import { resolve, sep } from 'node:path';
import { randomBytes } from 'node:crypto';
import { Core, currentCore, hasCore, type WaitOptions } from '../core/core.ts';
import { readClusterFile, parseAddress, type ClusterFile } from '../base/config.ts';
import { ConnectionError, AuthenticationError, TlsTrustError, UsageError } from '../base/errors.ts';
import { holdUntil } from '../base/keep-alive.ts';
import { Gcs } from '../state/gcs.ts';
import { jobRoot } from '../base/job-root.ts';
import { troupeRoot } from '../shipping/troupe-install.ts';
import { startHead, type StartedCluster } from '../cluster/local-cluster.ts';
import type { ResourceFlags } from '../cluster/machine-resources.ts';
import { ObjectRef } from '../../object-store/object-ref.ts';
import type { JobInfo } from '../protocol/cluster.ts';
import type { JobRef } from '../protocol/jobs.ts';
import {
  checkRuntimeEnvOptions,
  DriverShipper,
  PreparedEnv,
  type RuntimeEnvOptions,
} from '../shipping/driver-shipper.ts';
import { SUBMISSION_ID } from '../protocol/submissions.ts';

export interface InitOptions extends ResourceFlags {
  /** host:port of a running cluster. Default: TROUPE_ADDRESS, then the current-cluster file, else a new local
   * cluster. */
  address?: string;
  /** Cluster token. Default: TROUPE_TOKEN, then the current-cluster file. */
  token?: string;
  /** For a new local cluster: where the object store lives (default /dev/shm). */
  objectStoreDir?: string;
  /** For a new local cluster: bytes of objects held in memory (default 30% of RAM); more spill to disk. */
  objectStoreMemory?: number;
  /** For a new local cluster: where objects spill when memory is full (default: the session dir); false: never. */
  spillDir?: string | false;
  /** Print what tasks and actors write, prefixed like "(Trainer pid=1234)" (default true). */
  logToDriver?: boolean;
  /** What the job's workers run in: its project (shipped to nodes on other machines when they need it), its
   * dependencies, and environment variables. Default `{}`: the project of the entry script, shipped as needed.
   * false: nothing shipped; every node loads the job's modules from the same path (and no variables are set). */
  runtimeEnv?: RuntimeEnvOptions | false;
  /** For a cluster whose bus is TLS, from a machine that has not joined it: its CA, as PEM text or a file's path.
   * Default: TROUPE_TLS_CA, else the CA saved on this machine for the address (`troupe start --address
   * … --ca-sha256 …` saves it). */
  tlsCa?: string;
}

export interface ClusterInfo {
  address: string;
  /** True when init() started the cluster and shutdown() will stop it. */
  embedded: boolean;
  jobId: string;
}

let embedded: StartedCluster | undefined;
let job: { gcs: Gcs; info: JobInfo; shipper?: DriverShipper } | undefined;
/** The shutdown under way: a second call waits for the same one. */
let leaving: Promise<void> | undefined;

/** Joins a cluster, or starts a local one (nats-server, head, one node daemon) when there is none to join.
 * The script needs no shutdown(): when nothing is left to run or await, troupe leaves as shutdown() would. */
export function init(opts: InitOptions = {}): Promise<ClusterInfo> {
  return holdUntil(start(opts)); // nothing else may be in the loop while the cluster starts
}

async function start(opts: InitOptions): Promise<ClusterInfo> {
  if (process.env.TROUPE_WORKER_ID) {
    throw new UsageError(
      'init() was called inside a worker: a module that defines remote functions also calls init(); keep remote ' +
        'functions in their own module',
    );
  }
  if (hasCore() || leaving)
    throw new UsageError('init() was already called in this process: call (and await) shutdown() first');
  let address = opts.address ?? (process.env.TROUPE_ADDRESS || undefined);
  let token = opts.token ?? (process.env.TROUPE_TOKEN || undefined);
  let localNode: ClusterFile['localNode'];
  const file = address ? undefined : readClusterFile();
  if (file) {
    address = file.address;
    token ??= file.token;
    localNode = file.localNode;
  } else if (address) {
    // The cluster `troupe start` started here, named by its address: its token and local node are in the file too.
    const saved = savedCluster(address);
    token ??= saved?.token;
    localNode = saved?.localNode;
  }
  let client: Core | undefined;
  // Workers are bound to this job: a later run, whose code may have changed, never reuses one that loaded ours.
  const jobId = randomBytes(4).toString('hex');
  const runtimeEnv = opts.runtimeEnv ?? {};
  if (runtimeEnv !== false) checkRuntimeEnvOptions(runtimeEnv);
  const envOpts = runtimeEnv || {};
  const vars = envOpts.env && Object.keys(envOpts.env).length ? { ...envOpts.env } : undefined;
  const jobRef: Omit<JobRef, 'driver'> = {
    id: jobId,
    // Real: module URLs name real paths, and a worker maps them by this prefix.
    root: realRoot(envOpts.workingDir ? resolve(envOpts.workingDir) : jobRoot()),
    ...(vars ? { env: { env: vars } } : {}),
  };
  // Joining a cluster, whose nodes may be on other machines: pack and hash the project now (a project over the size
  // limit fails here), upload only what a node asks for. An embedded cluster is this machine alone: nothing to pack.
  // Nor is a script of troupe's own checkout (its tests, benchmarks, examples): a copy of it would hold a second
  // runtime beside the worker's; nodes load it from their own checkout, at the same path.
  let prepared: PreparedEnv | undefined;
  if (address && runtimeEnv !== false && !insideTroupe(jobRef.root)) {
    prepared = await PreparedEnv.prepare(runtimeEnv, jobRef.root);
    jobRef.env = prepared.ref;
  }
  if (address) {
    if (!token)
      throw new AuthenticationError(`no token for the cluster at ${address}: set TROUPE_TOKEN or pass init({ token })`);
    try {
      client = await Core.connect({
        address,
        token,
        role: 'driver',
        localNode,
        logToDriver: opts.logToDriver,
        job: jobRef,
        tlsCa: caOption(opts.tlsCa),
      });
    } catch (e) {
      if (e instanceof TlsTrustError) throw e; // a cluster that is there but not trusted: never a local one instead
      // A current-cluster file left by a cluster that is gone: say so and start afresh, as `ray.init()` would.
      if (!file || e instanceof AuthenticationError || !(e instanceof ConnectionError)) throw e;
      console.warn(
        `troupe: the cluster in the current-cluster file (${file.address}) is not running; starting a local one`,
      );
      address = undefined;
      prepared?.close();
      prepared = undefined;
      jobRef.env = vars ? { env: vars } : undefined;
    }
  }
  if (!client) {
    // Its daemons do not keep this process running; they stop when it ends (at the end of the script, see leave()),
    // and exit by themselves when it dies without leaving (process.exit(), a crash: exitWithParent in daemon.ts).
    embedded = await startHead({ ...opts, detached: false, holdProcess: false });
    try {
      client = await Core.connect({
        address: embedded.address,
        token: embedded.token,
        role: 'driver',
        localNode: {
          nodeId: embedded.nodeId,
          objectDir: embedded.objectDir,
          objectStoreMemory: embedded.objectStoreMemory,
        },
        logToDriver: opts.logToDriver,
        job: jobRef,
      });
    } catch (e) {
      await embedded.stop();
      embedded = undefined;
      throw e;
    }
  }
  const info: JobInfo = {
    jobId,
    procId: client.procId,
    pid: process.pid,
    hostname: hostname(),
    cwd: process.cwd(),
    entrypoint: process.argv.slice(1).join(' '),
    state: 'RUNNING',
    startedAt: new Date().toISOString(),
    ...(prepared ? { shippedBytes: 0 } : {}),
    // `troupe job submit` started this driver: the submission's record ends this job when the driver exits.
    submissionId: SUBMISSION_ID.test(process.env.TROUPE_SUBMISSION_ID ?? '')
      ? process.env.TROUPE_SUBMISSION_ID
      : undefined,
  };
  let gcs: Gcs;
  try {
    gcs = await Gcs.open(client.bus);
    await gcs.jobs.put(info.jobId, info);
  } catch (e) {
    // Not joined after all: leave nothing behind, and let a second init() try again.
    prepared?.close();
    await client.close().catch(() => undefined);
    await embedded?.stop().catch(() => undefined);
    embedded = undefined;
    throw e;
  }
  job = { gcs, info };
  if (prepared) {
    const joined = job;
    let recorded = Promise.resolve();
    // Nodes ask for the items they lack; what this driver uploads goes into its job record as it grows.
    joined.shipper = new DriverShipper(client.bus, prepared, (bytes) => {
      joined.info.shippedBytes = bytes;
      recorded = recorded.then(() => gcs.jobs.put(info.jobId, joined.info).catch(() => undefined));
    });
    joined.shipper.serve(jobId);
  }
  process.on('beforeExit', leaveAtEnd);
  return { address: client.bus.address, embedded: !!embedded, jobId: info.jobId };
}

/** The script is done: nothing of its own is left to run and nothing awaits troupe. Leaves as shutdown() would; the
 * process then ends with the script's exit code. Tasks and calls it did not await are stopped, as in Ray. */
function leaveAtEnd(): void {
  const failed = process.exitCode !== undefined && Number(process.exitCode) !== 0;
  leave(failed ? 'FAILED' : 'SUCCEEDED').catch((e) => console.error('troupe: could not leave the cluster:', e));
}

/** Whether `dir` (a real path) is troupe's own package directory or inside it. */
function insideTroupe(dir: string): boolean {
  const own = realpathSync(troupeRoot());
  return dir === own || dir.startsWith(own + sep);
}

const realRoot = (dir: string) => (existsSync(dir) ? realpathSync(dir) : dir);

/** The current-cluster file, if it is of the cluster at `address` (`troupe start` on this machine started or joined
 * it): its token, and the node whose store a driver here puts its large objects into. */
function savedCluster(address: string): ClusterFile | undefined {
  const wanted = parseAddress(address); // a bad address is the caller's mistake: say so here
  try {
    const file = readClusterFile();
    return file && parseAddress(file.address) === wanted ? file : undefined;
  } catch {
    return undefined; // an unreadable current-cluster file is no reason to fail a join by address
  }
}

/** Leaves the cluster, returning leases; stops the cluster if init() started it. Optional: troupe does this itself
 * when the script ends. Calling it again, or before init(), does nothing. */
export function shutdown(): Promise<void> {
  return leave('SUCCEEDED');
}

function leave(state: JobInfo['state']): Promise<void> {
  if (!hasCore()) return leaving ?? Promise.resolve();
  leaving ??= holdUntil(
    close(state).finally(() => {
      leaving = undefined;
    }),
  );
  return leaving;
}

async function close(state: JobInfo['state']): Promise<void> {
  process.off('beforeExit', leaveAtEnd);
  const client = currentCore();
  try {
    if (job) {
      if (job.shipper) job.info.shippedBytes = job.shipper.shippedBytes;
      await job.gcs.jobs
        .put(job.info.jobId, { ...job.info, state, endedAt: new Date().toISOString() })
        .catch(() => undefined);
      job.shipper?.env.close();
      job = undefined;
    }
    await client.close();
  } finally {
    if (embedded) {
      const e = embedded;
      embedded = undefined;
      await e.stop();
    }
  }
}

/** Stores a value in the cluster. Throws SerializationError here if it cannot be sent. */
export function put<T>(value: T): ObjectRef<T> {
  if (value instanceof ObjectRef) throw new UsageError('put() of an ObjectRef: pass the ref itself instead');
  return currentCore().put(value);
}

/** The value of a ref, or of each ref in an array. A failed task rethrows its TaskError. */
export function get<T>(ref: ObjectRef<T>, opts?: { timeoutMs?: number }): Promise<T>;
export function get<T extends readonly ObjectRef<unknown>[]>(
  refs: T,
  opts?: { timeoutMs?: number },
): Promise<{ [K in keyof T]: T[K] extends ObjectRef<infer V> ? V : never }>;
export function get(
  refs: ObjectRef<unknown> | readonly ObjectRef<unknown>[],
  opts: { timeoutMs?: number } = {},
): Promise<unknown> {
  const c = currentCore();
  if (Array.isArray(refs)) return Promise.all(refs.map((r) => c.get(r, opts.timeoutMs)));
  return c.get(refs as ObjectRef<unknown>, opts.timeoutMs);
}

/** Splits refs into [ready, pending] once numReturns are ready or timeoutMs has passed. Both keep the input order. */
export function wait<T>(refs: ObjectRef<T>[], opts?: WaitOptions): Promise<[ObjectRef<T>[], ObjectRef<T>[]]> {
  return currentCore().wait(refs, opts);
}

/** init({ tlsCa }): PEM text as it is, else the PEM in the file it names. */
function caOption(ca: string | undefined): string | undefined {
  if (ca === undefined || ca.includes('-----BEGIN')) return ca;
  try {
    return readFileSync(ca, 'utf8');
  } catch (e) {
    throw new UsageError(`init({ tlsCa }): ${ca}: ${(e as Error).message}`);
  }
}
