// Submitted jobs (`troupe job submit`): a driver command a node daemon runs for whoever holds the cluster token. The
// request comes from the bus, so the node checks every field before it starts anything.
import { checkRuntimeEnv, type RuntimeEnvRef } from './jobs.ts';
import { isAbsolute } from 'node:path';
import { ProtocolError } from '../base/errors.ts';

/** Where the driver's code comes from: made by `uploadRuntimeEnv()` on the CLI side (everything in the object store
 * before the CLI asks) and turned into a local directory by the node's EnvCache. */
export type { RuntimeEnvRef };

/** What `troupe job submit` asks a node to run. */
export interface SubmitRequest {
  /** The driver's argv: run as it is, no shell. */
  entrypoint: string[];
  /** Absolute directory the driver runs in, on the node's machine (used in place until code shipping). */
  workingDir: string;
  /** Added to the driver's environment; no TROUPE_* name (troupe sets those). */
  env: Record<string, string>;
  /** Shipped code; when set it decides the working directory instead of workingDir. */
  runtimeEnv?: RuntimeEnvRef;
  /** The submitter's own credential (or a user's nats-server's token), which the driver runs with: it may do what its
   * submitter may, and revoking that credential closes its connections too. Kept in the node's memory while the
   * driver runs, in no record or log. */
  credential: string;
}

export type SubmissionState = 'PENDING' | 'RUNNING' | 'SUCCEEDED' | 'FAILED' | 'STOPPED';

/** A submitted job as kept in the `troupe-submissions` bucket (key: submissionId). */
export interface SubmissionInfo {
  submissionId: string;
  state: SubmissionState;
  entrypoint: string[];
  workingDir: string;
  /** The node daemon that runs the driver (and answers `stop`). */
  nodeId: string;
  hostname: string;
  pid?: number;
  exitCode?: number;
  signal?: string;
  /** Why it FAILED or was STOPPED, in words. */
  cause?: string;
  submittedAt: string;
  startedAt?: string;
  endedAt?: string;
}

/** A stop request: SIGTERM, then SIGKILL after graceMs. */
export interface StopRequest {
  submissionId: string;
  graceMs?: number;
}

export const TERMINAL_STATES: ReadonlySet<SubmissionState> = new Set(['SUCCEEDED', 'FAILED', 'STOPPED']);

/** Submission ids: `job-` and 16 hex digits, made by the node. */
export const SUBMISSION_ID = /^job-[0-9a-f]{16}$/;
/** A POSIX environment name. */
const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;
/** Bounds on a request: far above any real command line, far below what could hurt a daemon. */
const MAX_ARGS = 1000;
const MAX_ENV = 1000;
const MAX_BYTES = 256 * 1024;

/** A submission id from the bus or the command line, checked. */
export function checkSubmissionId(id: unknown): string {
  if (typeof id !== 'string' || !SUBMISSION_ID.test(id))
    throw new ProtocolError(`a submission id is 'job-' and 16 hex digits, got ${JSON.stringify(id)?.slice(0, 80)}`);
  return id;
}

/** The name is one a user may set for a submitted driver: not empty, POSIX, not troupe's own. */
export function checkEnvName(name: string): string | undefined {
  if (!ENV_NAME.test(name)) return `environment name ${JSON.stringify(name)} is not a valid name`;
  if (name.toUpperCase().startsWith('TROUPE_')) return `environment name ${name}: TROUPE_* names are set by troupe`;
  return undefined;
}

/** A submit request from the bus, checked field by field. */
export function checkSubmitRequest(req: unknown): SubmitRequest {
  const r = req as Partial<SubmitRequest> | undefined;
  if (typeof r !== 'object' || r === null) throw new ProtocolError('a submit request must be an object');
  const argv = r.entrypoint;
  if (!Array.isArray(argv) || argv.length === 0 || argv.length > MAX_ARGS)
    throw new ProtocolError(`entrypoint must be a command as an array of 1 to ${MAX_ARGS} strings`);
  let bytes = 0;
  for (const a of argv) {
    if (typeof a !== 'string' || a.includes('\0'))
      throw new ProtocolError('entrypoint items must be strings without NUL');
    bytes += a.length;
  }
  if (argv[0] === '') throw new ProtocolError('entrypoint: the command is empty');
  if (typeof r.workingDir !== 'string' || !isAbsolute(r.workingDir) || r.workingDir.includes('\0'))
    throw new ProtocolError('workingDir must be an absolute path');
  const env = r.env ?? {};
  if (typeof env !== 'object' || env === null || Array.isArray(env))
    throw new ProtocolError('env must be an object of names to strings');
  const entries = Object.entries(env);
  if (entries.length > MAX_ENV) throw new ProtocolError(`env: at most ${MAX_ENV} variables`);
  for (const [k, v] of entries) {
    const bad = checkEnvName(k);
    if (bad) throw new ProtocolError(bad);
    if (typeof v !== 'string' || v.includes('\0')) throw new ProtocolError(`env ${k}: the value must be a string`);
    bytes += k.length + v.length;
  }
  if (bytes > MAX_BYTES) throw new ProtocolError(`the command and env exceed ${MAX_BYTES} bytes`);
  const runtimeEnv = r.runtimeEnv === undefined ? undefined : checkRuntimeEnv(r.runtimeEnv, 'a submit request');
  const credential = r.credential;
  if (typeof credential !== 'string' || !credential || credential.length > 4096 || /[\0\r\n]/.test(credential))
    throw new ProtocolError("credential must be the submitter's credential (a string of one line)");
  return { entrypoint: [...argv], workingDir: r.workingDir, env: { ...env }, runtimeEnv, credential };
}

/** Bounded stop grace: 0 to 10 minutes (default 5 s). */
export function checkGraceMs(v: unknown): number {
  if (v === undefined) return 5000;
  if (typeof v !== 'number' || !Number.isFinite(v) || v < 0) throw new ProtocolError('graceMs must be a number >= 0');
  return Math.min(v, 600_000);
}

/** One record of a driver's output in the log stream; the last one of a job is `{ end }`. */
export type LogRecord = { out: Uint8Array } | { err: Uint8Array } | { end: SubmissionInfo };
