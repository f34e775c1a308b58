// Jobs: which driver's run a lease, an actor or a worker process belongs to.
import { isAbsolute } from 'node:path';
import { ProtocolError } from '../base/errors.ts';

/** What a job's workers run in (Ray's runtime_env): its project's files and dependencies, shipped to nodes on other
 * machines through the JetStream object store, and environment variables. Items are named by content. */
export interface RuntimeEnvRef {
  /** The project's files (gitignored, .troupeignored, .git and node_modules left out): a gzipped tar, named by its
   * tar's sha256 (pack.ts). Absent: the job loads its modules from its root's path on every node. */
  workingDir?: { sha256: string; bytes: number };
  /** The manifest of the job's node_modules tree (runtime/shipping/manifest.ts), stored as JSON. */
  packages?: { sha256: string; count: number };
  /** Where the driver runs: a node with the same host name, boot id and root directory (device and inode) uses the
   * root in place instead of a copy. */
  origin?: { hostname: string; bootId: string; rootId: string };
  /** Environment variables for the job's workers, set before any of its code loads. */
  env?: Record<string, string>;
  /** The driver's troupe (its package root): module URLs of troupe's own actors under it map to each node's own. */
  troupe?: string;
}

/** The job (one driver's run, from init() to shutdown()) that work belongs to. A worker is bound to the first job it
 * is leased to and serves no other: the modules it imported are that job's code, and a later run may have changed
 * them. Work submitted from inside a worker belongs to the worker's job. */
export interface JobRef {
  /** Made by init() (JobInfo.jobId). */
  id: string;
  /** The driver's process id: its silence ends the job for the nodes holding its workers. */
  driver: string;
  /** Absolute path of the job's root (its project): workers load only modules inside it (or inside its copy). */
  root: string;
  /** Its runtime env; absent: the root in place, no variables. */
  env?: RuntimeEnvRef;
}

const JOB_ID = /^[A-Za-z0-9_-]{1,64}$/;
const SHA256 = /^[0-9a-f]{64}$/;
/** A variable name a job may set: a portable shell name, not one of troupe's own. */
export const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

/** A job from the bus, checked: it decides which worker process runs what, and which modules may load. */
export function checkJob(job: unknown, what = 'a lease request'): JobRef {
  const j = job as Partial<JobRef> | undefined;
  if (
    typeof j?.id !== 'string' ||
    !JOB_ID.test(j.id) ||
    typeof j.driver !== 'string' ||
    !JOB_ID.test(j.driver) ||
    typeof j.root !== 'string' ||
    !isAbsolute(j.root)
  )
    throw new ProtocolError(
      `${what} needs job { id, driver, root }: ids of 1 to 64 letters, digits, - or _, and an absolute root`,
    );
  const out: JobRef = { id: j.id, driver: j.driver, root: j.root };
  if (j.env !== undefined) out.env = checkRuntimeEnv(j.env, what);
  return out;
}

/** A driver's registration of its job with the head (subjects.headJobRegister), sent when it connects. The head
 * keeps the first registration of each job id: leases and actor starts of the job carry the head's record, never the
 * root a requester names, so the job's root is decided by the cluster, not by a message. */
export interface JobRegistration {
  job: JobRef;
  /** The registering driver's NATS user (its public key, `U…`: each connection signs a user of its own). What only
   * the job's driver may ask of the head comes signed by that user (a checkpoint's removal). Absent on a bus of plain
   * tokens, which has no users. */
  key?: string;
}

const USER_KEY = /^U[A-Z2-7]{55}$/;

/** A registration from the bus, checked. */
export function checkJobRegistration(msg: unknown): { job: JobRef; key?: string } {
  const m = msg as Partial<JobRegistration> | undefined;
  const job = checkJob(m?.job, 'a job registration');
  if (m?.key === undefined) return { job };
  if (typeof m.key !== 'string' || !USER_KEY.test(m.key))
    throw new ProtocolError("a job registration's key must be a NATS user's public key (U…)");
  return { job, key: m.key };
}

/** Whether two records of a job say the same (a driver's resent registration, not another driver's). */
export function sameJob(a: JobRef, b: JobRef): boolean {
  return JSON.stringify(canonical(a)) === JSON.stringify(canonical(b));
}

function canonical(v: unknown): unknown {
  if (typeof v !== 'object' || v === null) return v;
  return Object.fromEntries(
    Object.keys(v)
      .filter((k) => (v as Record<string, unknown>)[k] !== undefined)
      .sort()
      .map((k) => [k, canonical((v as Record<string, unknown>)[k])]),
  );
}

/** A runtime env reference from the bus, checked strictly: its hashes name what a node fetches and unpacks, and its
 * variables go into worker processes. */
export function checkRuntimeEnv(env: unknown, what = 'a job'): RuntimeEnvRef {
  const bad = (why: string): never => {
    throw new ProtocolError(`${what} has a bad runtime env: ${why}`);
  };
  if (typeof env !== 'object' || env === null || Array.isArray(env)) bad('not an object');
  const e = env as Record<string, unknown>;
  const out: RuntimeEnvRef = {};
  const item = (v: unknown, size: string, name: string) => {
    const o = v as Record<string, unknown> | null;
    if (typeof o !== 'object' || o === null || typeof o.sha256 !== 'string' || !SHA256.test(o.sha256))
      bad(`${name} needs a sha256 of 64 hex digits`);
    const n = o![size];
    if (!Number.isSafeInteger(n) || (n as number) < 0) bad(`${name}.${size} must be a count`);
    return { sha256: o!.sha256 as string, n: n as number };
  };
  if (e.workingDir !== undefined) {
    const { sha256, n } = item(e.workingDir, 'bytes', 'workingDir');
    out.workingDir = { sha256, bytes: n };
  }
  if (e.packages !== undefined) {
    const { sha256, n } = item(e.packages, 'count', 'packages');
    out.packages = { sha256, count: n };
  }
  if (e.origin !== undefined) {
    const o = e.origin as Record<string, unknown> | null;
    if (
      typeof o !== 'object' ||
      o === null ||
      typeof o.hostname !== 'string' ||
      o.hostname.length > 255 ||
      typeof o.bootId !== 'string' ||
      o.bootId.length > 64 ||
      typeof o.rootId !== 'string' ||
      !/^\d{1,24}:\d{1,24}$/.test(o.rootId)
    )
      bad('origin needs { hostname, bootId, rootId: "dev:ino" }');
    out.origin = { hostname: o!.hostname as string, bootId: o!.bootId as string, rootId: o!.rootId as string };
  }
  if (e.troupe !== undefined) {
    if (typeof e.troupe !== 'string' || !isAbsolute(e.troupe) || e.troupe.length > 4096 || e.troupe.includes('\0'))
      bad('troupe must be an absolute path');
    out.troupe = e.troupe as string;
  }
  if (e.env !== undefined) {
    const vars = e.env as Record<string, unknown> | null;
    if (typeof vars !== 'object' || vars === null || Array.isArray(vars)) bad('env is not an object');
    out.env = {};
    for (const [k, v] of Object.entries(vars!)) {
      const why = envVarProblem(k, v);
      if (why) bad(why);
      out.env[k] = v as string;
    }
  }
  return out;
}

/** Variables a job's workers cannot take: troupe sets CUDA_VISIBLE_DEVICES per lease (to the GPUs granted, empty for
 * CPU work), and the others act only when a process starts, while a job's variables are set in a worker that is
 * already running (a prestarted one, before the job's code loads). */
const NOT_FOR_WORKERS = new Set([
  'CUDA_VISIBLE_DEVICES',
  'NODE_OPTIONS',
  'NODE_PATH',
  'UV_THREADPOOL_SIZE',
  'LD_PRELOAD',
  'LD_LIBRARY_PATH',
]);

/** Why a variable may not go into a job's workers, or undefined when it may. */
export function envVarProblem(name: string, value: unknown): string | undefined {
  if (!ENV_NAME.test(name)) return `'${name}' is not a valid environment variable name (letters, digits, _)`;
  if (name.toUpperCase().startsWith('TROUPE_')) return `'${name}': names starting with TROUPE_ are troupe's own`;
  if (NOT_FOR_WORKERS.has(name))
    return name === 'CUDA_VISIBLE_DEVICES'
      ? `'${name}' is set by troupe for each task and actor, to the GPUs it was given (use numGpus)`
      : `'${name}' acts only when a process starts, and workers are already running when a job's variables are ` +
          'set: set it in the environment of the node daemons (troupe start) instead';
  if (typeof value !== 'string' || value.includes('\0')) return `the value of ${name} must be a string without NUL`;
  return undefined;
}
