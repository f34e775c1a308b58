// Typed errors. Every class here survives a trip over the bus: the codec writes
// { name, message, stack, cause, fields } and rebuilds the same class on the other side.

export class TroupeError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
  }
}

/** A user function or method threw. Keeps the original error's name, message and remote stack. */
export class TaskError extends TroupeError {
  /** `name` of the error thrown remotely, e.g. 'RangeError'. */
  readonly remoteName: string;
  /** Stack of the error where it was thrown (worker process). */
  readonly remoteStack: string;
  /** What ran: 'task f', 'Trainer.step'. */
  readonly where: string;
  constructor(message: string, info: { remoteName: string; remoteStack: string; where: string; cause?: unknown }) {
    super(message, { cause: info.cause });
    this.remoteName = info.remoteName;
    this.remoteStack = info.remoteStack;
    this.where = info.where;
    this.stack = `TaskError: ${info.remoteName} in ${info.where}: ${message}\n${indentStack(info.remoteStack)}`;
  }
  static from(err: unknown, where: string): TaskError {
    if (err instanceof TaskError) return err; // already wrapped (a failed dependency): keep the first cause
    const e = err instanceof Error ? err : new Error(`non-Error value thrown: ${safeString(err)}`);
    return new TaskError(e.message, { remoteName: e.name, remoteStack: e.stack ?? String(e), where, cause: e });
  }
}

/** A demand that no alive node could ever satisfy (Ray would hang here; we fail at once). */
export class InfeasibleError extends TroupeError {}
/** A value that cannot cross process boundaries (a function, a socket, a promise). */
export class SerializationError extends TroupeError {}
/** `get` or `wait` ran past its timeoutMs. */
export class GetTimeoutError extends TroupeError {}
/** The worker process running a task exited before it replied. */
export class WorkerDiedError extends TroupeError {}
/** The actor a call went to is dead (or died while the call ran). `cause` says why: exit code or signal, node died,
 * killed, constructor threw, out of restarts. */
export class ActorDiedError extends TroupeError {
  constructor(message: string, options?: { cause?: unknown; actorId?: string }) {
    super(message, options);
    this.actorId = options?.actorId ?? '';
  }
  readonly actorId: string;
}
/** Too many calls queued for an actor that is starting or restarting (its maxPendingCalls): thrown at the call. */
export class PendingCallsLimitError extends TroupeError {}
/** The object cannot be had any more: its owner or every node holding it died. */
export class ObjectLostError extends TroupeError {}
/** A node's object store cannot take the object: it is larger than the store, or everything held is in use and cannot
 * spill. */
export class ObjectStoreFullError extends TroupeError {}
/** One of the stores the whole cluster shares in JetStream (checkpoints, shipped code) is at its bound: what was to be
 * saved was not, and nothing saved before was dropped. */
export class ClusterStoreFullError extends TroupeError {}
/** No troupe cluster at the address, or it refused us. */
export class ConnectionError extends TroupeError {}
/** The cluster refused the token (missing or wrong). */
export class AuthenticationError extends ConnectionError {}
/** The cluster's TLS certificate is not one this machine trusts (no CA for the address, a wrong --ca-sha256, another
 * server at the address), or TLS is expected and the server does not use it. The message says what to pass. */
export class TlsTrustError extends ConnectionError {}
/** The cluster's bus answered but no head did, for as long as the joiner waited (`TROUPE_HEAD_WAIT_MS`): none runs
 * there, or the cluster is between heads (a standby taking over, JetStream electing its leaders) for longer. */
export class HeadUnavailableError extends ConnectionError {}
/** A daemon or worker had no subscriber for a request (it is gone, or not started yet). */
export class NoRespondersError extends TroupeError {}
/** A task or call whose request or answer was lost on the way (a direct lane that closed, or a message the bus
 * dropped, found by asking its worker): it may have run. */
export class CallLostError extends TroupeError {}

/** The cluster refused a publish or subscription: this process's credential (its role) does not allow it. */
export class PermissionDeniedError extends TroupeError {}
/** A request to a daemon timed out. */
export class RequestTimeoutError extends TroupeError {}
/** API misuse: bad options, init() twice, calls before init(). The message names the option or argument. */
export class UsageError extends TroupeError {}
/** A worker refused to load a module its work names: not a file: URL, or outside the job's root (symlinks resolved)
 * and not one of troupe's library actors. Nothing of the module ran. */
export class ModuleRefusedError extends UsageError {}
/** A message on the bus failed its check (a malformed or oversized message): it is refused, never acted on. */
export class ProtocolError extends TroupeError {}
/** A head that lost its lease (protocol/cluster.ts HeadLease) sent this: another head leads with a newer term. */
export class StaleHeadError extends TroupeError {}
/** A node has as many worker processes as it may run (TROUPE_MAX_WORKERS_PER_NODE): the lease that needed one more
 * is refused, never given a process past the cap. */
export class WorkerLimitError extends TroupeError {}
/** The job's runtime env (its shipped code, dependencies and variables) cannot be made: too large to ship, or a
 * package with native parts that the node has in another version (or not at all). */
export class RuntimeEnvError extends TroupeError {}
/** Which part of `troupe setup tensorflow` could not be done. */
export type SetupStep = 'python' | 'pip' | 'compiler' | 'registry' | 'wheel' | 'npm' | 'build' | 'load';
/** `troupe setup tensorflow` could not build the native backend; `step` says where. troupe goes on with wasm. */
export class TensorflowSetupError extends TroupeError {
  constructor(message: string, options?: { cause?: unknown; step?: SetupStep }) {
    super(message, options);
    this.step = options?.step;
  }
  readonly step?: SetupStep;
}
/** A daemon troupe started (nats-server, head, node daemon) exited, or did not come up, during start: `init()` and
 * `troupe start` fail with it at once. The message ends with the last lines of the daemon's log. */
export class DaemonStartError extends TroupeError {
  constructor(message: string, options?: { cause?: unknown; daemon?: string; logPath?: string }) {
    super(message, options);
    this.daemon = options?.daemon ?? '';
    this.logPath = options?.logPath ?? '';
  }
  /** 'nats-server', 'head' or 'node'. */
  readonly daemon: string;
  /** The daemon's whole log. */
  readonly logPath: string;
}

/** This process and the head run different troupe or wire-protocol versions: refused at join, before any other
 * message is exchanged. The message names both versions and both sides. */
export class VersionMismatchError extends TroupeError {
  constructor(
    message: string,
    options?: {
      cause?: unknown;
      self?: { troupe: string; protocol: number };
      head?: { troupe: string; protocol: number };
    },
  ) {
    super(message, options);
    this.self = options?.self;
    this.head = options?.head;
  }
  /** This side's versions. */
  readonly self?: { troupe: string; protocol: number };
  /** The head's, when it answered. */
  readonly head?: { troupe: string; protocol: number };
}

const classes = new Map<string, new (message: string, ...rest: any[]) => Error>();
for (const c of [
  TroupeError,
  TaskError,
  ActorDiedError,
  InfeasibleError,
  SerializationError,
  GetTimeoutError,
  WorkerDiedError,
  ObjectLostError,
  ObjectStoreFullError,
  ClusterStoreFullError,
  ConnectionError,
  TlsTrustError,
  HeadUnavailableError,
  AuthenticationError,
  NoRespondersError,
  CallLostError,
  PermissionDeniedError,
  RequestTimeoutError,
  UsageError,
  ModuleRefusedError,
  ProtocolError,
  StaleHeadError,
  WorkerLimitError,
  PendingCallsLimitError,
  DaemonStartError,
  RuntimeEnvError,
  VersionMismatchError,
  TensorflowSetupError,
  Error,
  TypeError,
  RangeError,
  SyntaxError,
  ReferenceError,
  EvalError,
  URIError,
  AggregateError,
])
  classes.set(c.name, c);

/** Lets the libraries in actors/ (through actors/library/runtime.ts) make their own error classes survive the bus. */
export function registerErrorClass(c: new (message: string, ...rest: any[]) => Error): void {
  classes.set(c.name, c);
}

/** The plain shape an error takes on the wire. */
export interface WireError {
  name: string;
  message: string;
  stack?: string;
  cause?: unknown;
  /** Own enumerable fields (code, errno, remoteName, …). */
  fields?: Record<string, unknown>;
}

export function toWireError(e: Error): WireError {
  const fields: Record<string, unknown> = {};
  for (const k of Object.keys(e)) {
    if (k === 'cause') continue;
    const v = (e as unknown as Record<string, unknown>)[k];
    if (typeof v !== 'function') fields[k] = v;
  }
  if (e instanceof AggregateError) fields.errors = e.errors; // own but not enumerable
  return { name: e.name, message: e.message, stack: e.stack, cause: e.cause, fields };
}

export function fromWireError(w: WireError): Error {
  const C = classes.get(w.name);
  let e: Error;
  if (C === TaskError) {
    const f = (w.fields ?? {}) as { remoteName?: string; remoteStack?: string; where?: string };
    e = new TaskError(w.message, {
      remoteName: f.remoteName ?? 'Error',
      remoteStack: f.remoteStack ?? '',
      where: f.where ?? '?',
      cause: w.cause,
    });
  } else if (C === AggregateError) {
    e = new AggregateError(Array.isArray(w.fields?.errors) ? w.fields.errors : [], w.message);
  } else {
    e = C ? new C(w.message) : new Error(w.message);
    if (!C) e.name = w.name; // a user-defined class we cannot rebuild: keep its name
    if (w.cause !== undefined) (e as { cause?: unknown }).cause = w.cause;
  }
  if (w.stack !== undefined && !(e instanceof TaskError)) e.stack = w.stack;
  for (const [k, v] of Object.entries(w.fields ?? {})) {
    if (!(k in e) || Object.getOwnPropertyDescriptor(e, k)?.writable) (e as unknown as Record<string, unknown>)[k] = v;
  }
  return e;
}

/** Whatever was thrown or rejected, as an Error. */
export function asError(e: unknown): Error {
  return e instanceof Error ? e : new Error(String(e));
}

function indentStack(stack: string): string {
  return stack
    .split('\n')
    .map((l) => (l.startsWith('    ') ? l : `    ${l}`))
    .join('\n');
}

function safeString(v: unknown): string {
  try {
    return typeof v === 'string' ? JSON.stringify(v) : String(v);
  } catch {
    return Object.prototype.toString.call(v);
  }
}
