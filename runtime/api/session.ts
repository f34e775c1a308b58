// The driver API: init(), shutdown(), put(), get(), wait().
import { hostname } from 'node:os';
import { randomBytes } from 'node:crypto';
import { Core, currentCore, hasCore, type WaitOptions } from '../core/core.ts';
import { readClusterFile, parseAddress, type ClusterFile } from '../base/config.ts';
import { ConnectionError, AuthenticationError, UsageError } from '../base/errors.ts';
import { Gcs } from '../state/gcs.ts';
import { jobRoot } from '../base/job-root.ts';
import { startHead, type StartedCluster } from '../cluster/local-cluster.ts';
import type { ResourceFlags } from '../cluster/machine-resources.ts';
import { ObjectRef } from '../../object-store/object-ref.ts';
import type { JobInfo } from '../protocol/cluster.ts';

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
}

export interface ClusterInfo {
  address: string;
  /** True when init() started the cluster and shutdown() will stop it. */
  embedded: boolean;
  jobId: string;
}

let embedded: StartedCluster | undefined;
let job: { gcs: Gcs; info: JobInfo } | undefined;

/** Joins a cluster, or starts a local one (nats-server, head, one node daemon) when there is none to join. */
export async function init(opts: InitOptions = {}): Promise<ClusterInfo> {
  if (process.env.TROUPE_WORKER_ID) {
    throw new UsageError(
      'init() was called inside a worker: a module that defines remote functions also calls init(); keep remote ' +
        'functions in their own module',
    );
  }
  if (hasCore()) throw new UsageError('init() was already called in this process: call shutdown() first');
  let address = opts.address ?? (process.env.TROUPE_ADDRESS || undefined);
  let token = opts.token ?? (process.env.TROUPE_TOKEN || undefined);
  let localNode: ClusterFile['localNode'];
  const file = address ? undefined : readClusterFile();
  if (file) {
    address = file.address;
    token ??= file.token;
    localNode = file.localNode;
  } else if (address) {
    localNode = localNodeOf(address);
  }
  let client: Core | undefined;
  // Workers are bound to this job: a later run, whose code may have changed, never reuses one that loaded ours.
  const jobId = randomBytes(4).toString('hex');
  const jobRef = { id: jobId, root: jobRoot() };
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
      });
    } catch (e) {
      // A current-cluster file left by a cluster that is gone: say so and start afresh, as `ray.init()` would.
      if (!file || e instanceof AuthenticationError || !(e instanceof ConnectionError)) throw e;
      console.warn(
        `troupe: the cluster in the current-cluster file (${file.address}) is not running; starting a local one`,
      );
      address = undefined;
    }
  }
  if (!client) {
    embedded = await startHead({ ...opts, detached: false });
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
  };
  const gcs = await Gcs.open(client.bus);
  await gcs.jobs.put(info.jobId, info);
  job = { gcs, info };
  return { address: client.bus.address, embedded: !!embedded, jobId: info.jobId };
}

/** The node this machine runs in the cluster at `address`, if `troupe start` here joined that cluster: a driver given
 * the address (TROUPE_ADDRESS on the head machine, say) still puts its large objects into this node's store. */
function localNodeOf(address: string): ClusterFile['localNode'] {
  const wanted = parseAddress(address); // a bad address is the caller's mistake: say so here
  try {
    const file = readClusterFile();
    return file && parseAddress(file.address) === wanted ? file.localNode : undefined;
  } catch {
    return undefined; // an unreadable current-cluster file is no reason to fail a join by address
  }
}

/** Leaves the cluster, returning leases; stops the cluster if init() started it. */
export async function shutdown(): Promise<void> {
  if (!hasCore()) return;
  const client = currentCore();
  if (job) {
    await job.gcs.jobs
      .put(job.info.jobId, { ...job.info, state: 'SUCCEEDED', endedAt: new Date().toISOString() })
      .catch(() => undefined);
    job = undefined;
  }
  await client.close();
  if (embedded) {
    const e = embedded;
    embedded = undefined;
    await e.stop();
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
