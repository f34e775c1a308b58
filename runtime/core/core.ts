// The runtime inside every driver and worker process: its bus, the objects it owns, its task submitter.
import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import { Bus } from '../bus/bus.ts';
import type { IssuedUser } from '../bus/credential.ts';
import { subjects } from '../protocol/subjects.ts';
import { defaults } from '../base/config.ts';
import { encode, encodeParts, byteLength } from '../base/codec.ts';
import { cloneTensor } from '../base/tensor-codec.ts';
import {
  ConnectionError,
  GetTimeoutError,
  NoRespondersError,
  ObjectStoreFullError,
  ProtocolError,
  RequestTimeoutError,
  UsageError,
} from '../base/errors.ts';
import { jobRoot } from '../base/job-root.ts';
import { formatBytes } from '../base/bytes.ts';
import { atCallSite, userCallSite } from '../base/definition-site.ts';
import { holdUntil } from '../base/keep-alive.ts';
import { TaskSubmitter } from './task-submitter.ts';
import { startDriverHeartbeat } from './heartbeat.ts';
import { ActorCaller } from './actor-caller.ts';
import { Gcs } from '../state/gcs.ts';
import type { Checkpoints } from '../state/checkpoints.ts';
import { DriverCheckpoints } from './driver-checkpoints.ts';
import type { ActorCall, ActorSpec } from '../protocol/actors.ts';
import {
  normalizeRequest,
  checkStrategy,
  type ResourceRequest,
  type ResourceSet,
  type SchedulingStrategy,
} from '../scheduling/placement.ts';
import { ObjectRef, setRefResolver, setRefCreateHook, collectRefs } from '../../object-store/object-ref.ts';
import { ObjectClient } from '../../object-store/object-client.ts';
import { NodeStore } from '../../object-store/node-store.ts';
import { holders, type ObjectLocation } from '../protocol/objects.ts';
import { checkHeadVersions } from '../protocol/versions.ts';
import { nameKey } from '../state/gcs.ts';
import type { TaskSpec } from '../protocol/tasks.ts';
import type { JobRef, JobRegistration } from '../protocol/jobs.ts';
import { event } from '../protocol/check.ts';
import { checkLogLines } from '../protocol/schemas.ts';
import { isPlain, type CallArgs, type ObjectRow } from '../protocol/objects.ts';

export interface CoreOptions {
  address: string;
  /** As Bus.connect's: a driver's credential or plain token; a worker's user, issued by its node. */
  token: string | IssuedUser;
  role: 'driver' | 'worker';
  procId?: string;
  /** The node daemon on this machine, if any: large objects go into its store. */
  localNode?: { nodeId: string; objectDir: string; objectStoreMemory?: number };
  /** Drivers print what their tasks and actors write, prefixed like "(Trainer pid=1234)". Default true. */
  logToDriver?: boolean;
  /** A driver's job (made by init()); default: one of its own, rooted at jobRoot(). A worker learns its job from its
   * node when it is first leased. */
  job?: Omit<JobRef, 'driver'>;
  /** The cluster CA (PEM); default: TROUPE_TLS_CA, else the one saved for the address (see Bus.connect). */
  tlsCa?: string;
}

export interface ActorOptions extends ResourceRequest {
  schedulingStrategy?: SchedulingStrategy;
  /** Restarts after a crash: 0 (default) none, -1 unlimited. */
  maxRestarts?: number;
  /** Re-sends of calls in flight when the actor dies: 0 (default) none, -1 unlimited. */
  maxTaskRetries?: number;
  /** Async methods running at once (default 1: one call at a time, in order). */
  maxConcurrency?: number;
  /** Registers the actor under this name, for getActor(). */
  name?: string;
  namespace?: string;
  /** 'detached' actors outlive the driver that made them; they end with kill() or troupe stop. */
  lifetime?: 'detached';
  /** 'process' (default): a worker process of its own. 'shared': many lightweight actors in one worker process. */
  isolation?: 'process' | 'shared';
  /** A method that throws also crashes the actor, which then restarts (maxRestarts, or its supervisor). Default false:
   * the error fails only that call, as in Ray. */
  crashOnError?: boolean;
  /** Saves `checkpoint()` every so many calls and/or seconds; a restarted instance gets it in `restore()`. */
  checkpointEvery?: { calls?: number; seconds?: number };
  /** Calls one caller may queue while the actor is starting or restarting (default 10,000); one more throws
   * PendingCallsLimitError at the call. -1: no limit. */
  maxPendingCalls?: number;
  /** Set by the decorator: the class name shown in logs and listings. */
  className?: string;
}

export interface TaskOptions extends ResourceRequest {
  schedulingStrategy?: SchedulingStrategy;
  /** Shown in `troupe list tasks` and errors; defaults to the function's name. */
  name?: string;
  /** Runs again when its worker or node dies under it: 3 (default, as in Ray), 0 none, -1 no limit. A task may thus
   * run more than once: keep side effects idempotent. */
  maxRetries?: number;
  /** Also retry when the task throws (within maxRetries): true for any error, or the error class names to retry. */
  retryExceptions?: boolean | string[];
}

export interface WaitOptions {
  /** How many refs must be ready (default 1). */
  numReturns?: number;
  /** Return what is ready after this long (default: wait for numReturns). */
  timeoutMs?: number;
}

/** How a worker finds a remote function: module URL and export name. */
export interface FunctionRef {
  url: string;
  exportName: string;
  /** Shown in errors and listings. */
  name: string;
}

// Ids are this process's random prefix and a counter: unique across the cluster, and cheaper than 12 random bytes
// for every call.
const idPrefix = randomBytes(8).toString('hex');
let idCounter = 0;
/** Shared by every call whose arguments hold no refs: never written to. */
const NO_REFS: ObjectRef[] = Object.freeze([]) as unknown as ObjectRef[];

export function newId(): string {
  return idPrefix + (idCounter++).toString(16);
}

/** Options are fixed when a remote function is defined: each is checked and normalized once, not per call (and the
 * same objects let the submitter find the task's queue without re-keying it). */
/** Where a remote function's tasks go, per options object; and where the user first called it with those options,
 * which InfeasibleError and the head's other refusals show as their stack. */
interface Placement {
  demand: ResourceSet;
  strategy: SchedulingStrategy;
  site: string;
}
const placements = new WeakMap<TaskOptions, Placement>();
function placementOf(opts: TaskOptions): Placement {
  let p = placements.get(opts);
  if (!p) {
    p = {
      demand: normalizeRequest(
        { numCpus: opts.numCpus, numGpus: opts.numGpus, memory: opts.memory, resources: opts.resources },
        1,
      ),
      strategy: checkStrategy(opts.schedulingStrategy),
      site: userCallSite(),
    };
    placements.set(opts, p);
  }
  return p;
}

let current: Core | undefined;

/** The runtime of this process; throws a clear error before init(). */
export function currentCore(): Core {
  if (!current) throw new UsageError('troupe is not initialized: call `await init()` first');
  return current;
}

export function hasCore(): boolean {
  return current !== undefined;
}

export class Core {
  readonly procId: string;
  readonly objects: ObjectClient;
  readonly tasks: TaskSubmitter;
  readonly actors: ActorCaller;
  /** The job work submitted from here belongs to: a driver's own; a worker's is set when its node binds it to one. */
  job: JobRef | undefined;
  /** The working directory work submitted from here names: the driver's own, also from a worker that runs in a copy
   * of the job's project (the worker maps its copy back; each node maps it to wherever the job is there). */
  workingDir: () => string = () => process.cwd();
  /** The module URL work submitted from here names: as the driver's machine has it (see workingDir). */
  shareUrl: (url: string) => string = (url) => url;
  /** Imports a module of the job: in a worker, only inside the job's root (or its copy), set by the worker. */
  importModule: (url: string) => Promise<Record<string, unknown>> = (url) => import(url);
  private stopHeartbeat = (): void => undefined;

  private constructor(
    readonly bus: Bus,
    readonly o: CoreOptions,
  ) {
    this.procId = o.procId ?? newId();
    if (o.role === 'driver') {
      const j = o.job ?? { id: this.procId, root: jobRoot() };
      this.job = { id: j.id, driver: this.procId, root: j.root, ...(j.env ? { env: j.env } : {}) };
    }
    const store = o.localNode ? new NodeStore(o.localNode.objectDir) : undefined;
    this.objects = new ObjectClient({
      bus,
      procId: this.procId,
      nodeId: o.localNode?.nodeId,
      store,
      inlineThreshold: defaults.inlineThreshold,
    });
    this.tasks = new TaskSubmitter(
      bus,
      this.procId,
      this.objects.owned,
      (taskId, inputs, deps) => {
        const refs = inputs.map((i) => new ObjectRef(i.id, i.owner));
        const o = this.objects.owned.get(taskId);
        if (o) o.holds = refs; // alive until the task is done, as on its first run
        return this.locateDeps(refs, deps);
      },
      () => this.boundJob(),
    );
    this.actors = new ActorCaller(bus, () => this.gcs(), this.objects.owned);
  }

  static async connect(o: CoreOptions): Promise<Core> {
    if (current) throw new UsageError('troupe is already initialized in this process: call shutdown() first');
    // A driver's heartbeat thread signs a user of its own: it needs the credential, not one user.
    if (o.role === 'driver' && typeof o.token !== 'string') throw new UsageError('a driver connects with a credential');
    const procId = o.procId ?? newId();
    const bus = await Bus.connect({
      address: o.address,
      token: o.token,
      name: `troupe-${o.role}-${process.pid}`,
      daemon: o.role === 'worker',
      procId,
      holdsProcess: o.role !== 'driver', // a driver ends with its script (api/session.ts)
      tlsCa: o.tlsCa,
    });
    // A driver checks its versions before anything else (workers run their node's install, which checked already).
    if (o.role === 'driver') {
      try {
        await checkHeadVersions((hello) => bus.request(subjects.headHello, hello, { timeoutMs: 2000 }), {
          self: `this driver (${hostname()})`,
          role: 'driver',
          address: o.address,
        });
      } catch (e) {
        await bus.close();
        throw e;
      }
    }
    const c = new Core(bus, { ...o, procId });
    if (c.job) {
      // The head's record of the job decides where its workers load code from: registered before any work is sent.
      try {
        const registration: JobRegistration = { job: c.job, ...(bus.user ? { key: bus.user.user.publicKey } : {}) };
        await bus.request(subjects.headJobRegister, registration, { timeoutMs: defaults.requestTimeoutMs });
      } catch (e) {
        await bus.close();
        throw e;
      }
    }
    c.objects.serve();
    c.tasks.start();
    c.actors.start();
    if (o.role === 'driver' && o.logToDriver !== false)
      bus.on(subjects.log(c.procId), event(checkLogLines, printWorkerOutput), { fromLanes: true });
    bus.serve(subjects.allObjects, () => c.ownedObjects());
    if (o.role === 'driver' && typeof o.token === 'string')
      c.stopHeartbeat = startDriverHeartbeat(bus, { procId: c.procId, address: o.address, token: o.token });
    await bus.flush(); // nobody may learn our id before our subscriptions are live
    current = c;
    setRefResolver((ref) => c.get(ref));
    setRefCreateHook((ref) => c.objects.track(ref));
    return c;
  }

  /** Submits a task; argument problems (bad options, unserializable values) throw here, at the call site.
   * `fn` may still be on its way (a remote function whose module is finishing its load). */
  submitTask<R>(fn: FunctionRef | Promise<FunctionRef>, args: unknown[], opts: TaskOptions): ObjectRef<R> {
    const { demand, strategy, site } = placementOf(opts);
    const retry = { left: opts.maxRetries ?? 3, exceptions: opts.retryExceptions ?? false };
    const taskId = newId();
    let name = opts.name ?? (fn instanceof Promise ? 'task' : fn.name);
    const prepared = this.prepareArgs(args, `task ${name}`);
    const spec: TaskSpec = {
      taskId,
      name,
      fn: { url: '', exportName: '' },
      args: prepared.encoded,
      workingDir: this.workingDir(),
      owner: this.owner(),
      caller: this.procId,
    };
    this.objects.owned.create(taskId, `task ${name}`, prepared.held);
    const waitFor: Promise<unknown>[] = [];
    if (fn instanceof Promise) {
      waitFor.push(
        fn.then((f) => {
          spec.fn = { url: this.shareUrl(f.url), exportName: f.exportName };
          spec.name = name = opts.name ?? f.name;
        }),
      );
    } else {
      spec.fn = { url: this.shareUrl(fn.url), exportName: fn.exportName };
    }
    if (prepared.refs.length) waitFor.push(this.locateDeps(prepared.refs, (spec.deps = {})));
    const inputs = prepared.refs.map((r) => ({ id: r.id, owner: r.owner }));
    if (waitFor.length === 0) {
      this.tasks.submit(spec, demand, strategy, retry, inputs, site);
    } else {
      Promise.all(waitFor).then(
        () => this.tasks.submit(spec, demand, strategy, retry, inputs, site),
        (e: Error) => this.objects.owned.seal(taskId, { error: e }),
      );
    }
    return this.ownedRef<R>(taskId);
  }

  /** Encodes arguments; big ones go into the object store and travel as refs, as if the caller had put() them.
   * Plain ones (see isPlain) stay as they are: they go inside the message that carries the call.
   * `held`: every ref sent (nested ones too), kept alive until the call is done. */
  private prepareArgs(args: unknown[], what: string): { encoded: CallArgs; refs: ObjectRef[]; held: ObjectRef[] } {
    if (isPlain(args)) return { encoded: args, refs: NO_REFS, held: NO_REFS };
    let [encoded, held] = collectRefs(() => encode(args));
    if (encoded.length > defaults.inlineThreshold) {
      args = args.map((a) => {
        if (a instanceof ObjectRef) return a;
        const parts = encodeParts(a);
        return byteLength(parts) > defaults.inlineThreshold / 4 ? this.putParts(parts, `argument of ${what}`) : a;
      });
      [encoded, held] = collectRefs(() => encode(args));
    }
    return { encoded, refs: args.filter((a): a is ObjectRef => a instanceof ObjectRef), held };
  }

  /** Waits until every top-level ref argument exists and fills in where it is: the value then goes from its holder
   * to the executing worker, not through us. A failed input fails the call with the same error. */
  private async locateDeps(refs: ObjectRef[], deps: Record<string, ObjectLocation>): Promise<void> {
    await Promise.all(
      refs.map(async (r) => {
        const loc = await this.objects.locate(r);
        if ('error' in loc) throw loc.error;
        deps[r.id] = loc;
      }),
    );
  }

  // --- actors ----------------------------------------------------------------------------------

  /** Creates an actor (asynchronously, like Ray); returns its id at once. Bad options and arguments throw here. */
  /** supervised: set by supervisors: the supervising actor and how long its child may take to stop. */
  createActor(
    cls: FunctionRef | Promise<FunctionRef>,
    args: unknown[],
    opts: ActorOptions,
    supervised?: { supervisor: string; shutdownMs: number; lifetime: 'owned' | 'detached' },
  ): string {
    const actorId = newId();
    const gpus = opts.numGpus ?? 0;
    // Like Ray, an actor needs no CPU unless asked: thousands of idle actors must fit on one node.
    const demand = normalizeRequest(
      { numCpus: opts.numCpus ?? 0, numGpus: gpus, memory: opts.memory, resources: opts.resources },
      0,
    );
    const className = opts.className ?? (cls instanceof Promise ? 'Actor' : cls.name);
    const prepared = this.prepareArgs(args, `${className} constructor`);
    const spec: ActorSpec = {
      actorId,
      className,
      cls: { url: '', exportName: '' },
      args: prepared.encoded,
      deps: {},
      demand,
      strategy: checkStrategy(opts.schedulingStrategy),
      maxRestarts: opts.maxRestarts ?? 0,
      maxTaskRetries: opts.maxTaskRetries ?? 0,
      maxConcurrency: opts.maxConcurrency ?? 1,
      name: opts.name,
      namespace: opts.namespace ?? 'default',
      lifetime: opts.lifetime === 'detached' ? 'detached' : 'owned',
      // A GPU actor always gets a process of its own: CUDA_VISIBLE_DEVICES is per process.
      isolation: gpus > 0 ? 'process' : (opts.isolation ?? 'process'),
      owner: this.owner(),
      workingDir: this.workingDir(),
      job: this.boundJob(),
      crashOnError: opts.crashOnError || undefined,
      checkpointEvery: opts.checkpointEvery,
      maxPendingCalls: opts.maxPendingCalls,
    };
    if (supervised) Object.assign(spec, supervised);
    const ready = Promise.all([
      Promise.resolve(cls).then((c) => {
        spec.cls = { url: this.shareUrl(c.url), exportName: c.exportName };
        spec.className = opts.className ?? c.name;
      }),
      this.locateDeps(prepared.refs, spec.deps),
    ]).then(() => spec);
    const site = userCallSite(); // once per actor: creation is rare next to calls
    const creation = ready
      // The head answers once it has stored the actor, not once it runs. Asked again while no head answers (one
      // killed before it answered, and the next starting): the head knows an actor id it has stored.
      .then((s) => this.askHeadAgain(subjects.headActorCreate, { spec: s }, 6 * defaults.requestTimeoutMs))
      .then(
        () => undefined,
        (e: Error) => {
          throw atCallSite(e, site);
        },
      );
    this.actors.track(actorId, creation, prepared.held);
    // getActor(name) right after creating it, in this process, finds it (as in Ray).
    if (opts.name)
      this.namesInCreation.set(
        nameKey(spec.namespace, opts.name),
        creation.catch(() => undefined),
      );
    return actorId;
  }

  /** Calls a method; the result comes back as an ObjectRef. Arguments are checked here. */
  callActor<R>(
    actorId: string,
    method: string,
    args: unknown[],
    maxTaskRetries: number,
    maxPendingCalls = defaults.maxPendingCalls,
  ): ObjectRef<R> {
    this.actors.checkPending(actorId, method, maxPendingCalls);
    const callId = newId();
    const prepared = this.prepareArgs(args, `call ${method}`);
    const call: ActorCall = { callId, method, args: prepared.encoded, caller: this.procId };
    this.objects.owned.create(callId, `actor call ${method}`, prepared.held);
    this.actors.call(
      actorId,
      call,
      prepared.refs.length ? this.locateDeps(prepared.refs, (call.deps = {})) : undefined,
      maxTaskRetries,
    );
    return this.ownedRef<R>(callId);
  }

  /** A request the head may get twice (it keeps what it did by an id in the body), asked again while no head answers
   * it: none listening, or one gone quiet (killed mid-request; a restarted head answers), until `totalMs`. */
  private async askHeadAgain<T>(subject: string, body: unknown, totalMs: number): Promise<T> {
    const until = Date.now() + totalMs;
    for (;;) {
      const left = until - Date.now();
      try {
        return await this.bus.request<T>(subject, body, { timeoutMs: Math.min(2 * defaults.requestTimeoutMs, left) });
      } catch (e) {
        const unanswered = e instanceof NoRespondersError || e instanceof RequestTimeoutError;
        if (!unanswered || Date.now() >= until - 250) throw e;
        if (e instanceof NoRespondersError) await new Promise((r) => setTimeout(r, 250));
      }
    }
  }

  /** cause: why, for the actor's record and its callers' errors (default: killed by kill()). by: the supervisor
   * stopping its own child (anyone else's stop is a normal exit its supervisor judges). */
  async killActor(actorId: string, noRestart: boolean, cause?: string, by?: string): Promise<void> {
    await this.bus.request(subjects.headActorKill, { actorId, noRestart, cause, by });
  }

  /** A supervisor restarts its child, which the head held for it. */
  async restartActor(actorId: string, supervisor: string): Promise<void> {
    await this.bus.request(subjects.headActorRestart, { actorId, supervisor });
  }

  /** The id of a named, live actor. */
  async lookupActor(
    name: string,
    namespace = 'default',
  ): Promise<{ actorId: string; className: string; maxTaskRetries: number; maxPendingCalls?: number }> {
    await this.namesInCreation.get(nameKey(namespace, name));
    const gcs = await this.gcs();
    const holder = await gcs.names.get(nameKey(namespace, name));
    const info = holder && (await gcs.actors.get(holder.actorId));
    if (!info || info.state === 'DEAD')
      throw new UsageError(`no live actor named '${name}' in namespace '${namespace}'`);
    return {
      actorId: info.actorId,
      className: info.className,
      maxTaskRetries: info.spec.maxTaskRetries,
      maxPendingCalls: info.spec.maxPendingCalls,
    };
  }

  private readonly namesInCreation = new Map<string, Promise<void>>();
  private gcsOpen: Promise<Gcs> | undefined;
  gcs(): Promise<Gcs> {
    return (this.gcsOpen ??= Gcs.open(this.bus));
  }

  private checkpointsOpen: Promise<Checkpoints> | undefined;
  /** A driver's (it may only remove its job's: core/driver-checkpoints.ts), or what useCheckpoints() set. */
  checkpoints(): Promise<Checkpoints> {
    return (this.checkpointsOpen ??= Promise.resolve(new DriverCheckpoints(this.bus, this.boundJob())));
  }

  /** A worker keeps its checkpoints through its node (its identity has no access to the store). */
  useCheckpoints(c: Checkpoints): void {
    this.checkpointsOpen = Promise.resolve(c);
  }

  /** Stores a value; serialization errors, and a value larger than this node's whole store, throw here.
   * Refs inside the value live as long as it does. */
  put<T>(value: T): ObjectRef<T> {
    const [parts, refs] = collectRefs(() => encodeParts(value));
    const ref = this.putParts(parts, 'put', refs) as ObjectRef<T>;
    // A tensor is immutable: gets in this process may share it (a clone shares the data) instead of reading it back.
    const shared = cloneTensor(value);
    if (shared) this.objects.remember(ref.id, shared, byteLength(parts));
    return ref;
  }

  private putParts(parts: Uint8Array[], createdBy: string, refs: ObjectRef[] = []): ObjectRef {
    const size = byteLength(parts);
    const capacity = this.o.localNode?.objectStoreMemory;
    if (capacity !== undefined && size > defaults.inlineThreshold && size > capacity) {
      throw new ObjectStoreFullError(
        `${createdBy} of ${formatBytes(size)}: the object store of node ${this.o.localNode!.nodeId} holds ` +
          `${formatBytes(capacity)} in all (--object-store-memory)`,
      );
    }
    const id = newId();
    this.objects.owned.create(id, createdBy);
    this.objects.storeParts(id, parts).then(
      (loc) => this.objects.owned.seal(id, refs.length ? { ...loc, refs } : loc),
      (e: Error) => this.objects.owned.seal(id, { error: e }),
    );
    return this.ownedRef(id);
  }

  get<T>(ref: ObjectRef<T>, timeoutMs?: number): Promise<T> {
    if (!(ref instanceof ObjectRef))
      return Promise.reject(new UsageError(`get() takes an ObjectRef or an array of them, got ${describe(ref)}`));
    if (timeoutMs !== undefined) return this.getWithin(ref, timeoutMs);
    return this.blocking(this.objects.get(ref));
  }

  private async getWithin<T>(ref: ObjectRef<T>, timeoutMs: number): Promise<T> {
    const ready = await this.blocking(this.readyWithin([ref], 1, timeoutMs));
    if (ready.size === 0) throw new GetTimeoutError(`get(${ref.id}) timed out after ${timeoutMs} ms`);
    return this.blocking(this.objects.get(ref));
  }

  async wait<T>(refs: ObjectRef<T>[], o: WaitOptions = {}): Promise<[ObjectRef<T>[], ObjectRef<T>[]]> {
    if (!Array.isArray(refs) || refs.some((r) => !(r instanceof ObjectRef)))
      throw new UsageError('wait() takes an array of ObjectRefs');
    if (new Set(refs.map((r) => r.id)).size !== refs.length)
      throw new UsageError('wait() got the same ObjectRef twice');
    const numReturns = o.numReturns ?? 1;
    if (!Number.isInteger(numReturns) || numReturns < 0 || numReturns > refs.length) {
      throw new UsageError(
        `wait(): numReturns must be an integer from 0 to ${refs.length} (the number of refs), got ${numReturns}`,
      );
    }
    const ready = await this.blocking(this.readyWithin(refs, numReturns, o.timeoutMs));
    return [refs.filter((r) => ready.has(r.id)), refs.filter((r) => !ready.has(r.id))];
  }

  /** Ids of refs whose value exists (a failed object counts), once `count` do or timeoutMs passes. Leaves no waiter
   * behind. */
  private readyWithin(refs: ObjectRef[], count: number, timeoutMs?: number): Promise<Set<string>> {
    return new Promise((resolve) => {
      const ready = new Set<string>();
      const removers: Array<() => void> = [];
      let timer: NodeJS.Timeout | undefined;
      let finished = false;
      const finish = () => {
        if (finished) return;
        finished = true;
        clearTimeout(timer);
        for (const r of removers) r();
        resolve(ready);
      };
      for (const r of refs) {
        if (finished) break;
        removers.push(
          this.objects.whenReady(r, () => {
            ready.add(r.id);
            if (ready.size >= count) finish();
          }),
        );
      }
      if (ready.size >= count) finish();
      else if (timeoutMs !== undefined) timer = setTimeout(finish, timeoutMs);
    });
  }

  private boundJob(): JobRef {
    if (!this.job) throw new ProtocolError('this worker was given work before its node bound it to a job');
    return this.job;
  }

  /** Set by workers: the driver that owns the task or actor running now. */
  ownerHook?: () => string | undefined;

  /** Who owns work submitted from here: a driver itself; in a worker, the driver that owns the running task or actor.
   * Nested tasks print there, and actors made here end with it, not with the long-lived worker process. */
  private owner(): string {
    return this.ownerHook?.() ?? this.procId;
  }

  /** Set by workers: told when a task starts and stops waiting, so its node can lend the task's CPU meanwhile. */
  blockHook?: (blocked: boolean) => void;
  private blockedDepth = 0;

  /** Every wait for objects (get, wait, `await ref`) goes through here: it keeps a driver running until it is over
   * (the result of a task or call may be seconds away, with nothing else in the loop). It reports a wait longer than
   * a moment to blockHook (a quick owner round trip is not worth two node messages). */
  private blocking<T>(p: Promise<T>): Promise<T> {
    holdUntil(p);
    // Not an async function: without a hook (drivers) the promise itself is returned, with no layer in between.
    return this.blockHook ? this.reportBlocked(p, this.blockHook) : p;
  }

  private async reportBlocked<T>(p: Promise<T>, hook: (blocked: boolean) => void): Promise<T> {
    let blocked = false;
    const t = setTimeout(() => {
      blocked = true;
      if (this.blockedDepth++ === 0) hook(true);
    }, 10);
    try {
      return await p;
    } finally {
      clearTimeout(t);
      if (blocked && --this.blockedDepth === 0) hook(false);
    }
  }

  /** This process's rows for `troupe list objects` and `troupe memory`. */
  private ownedObjects(): ObjectRow[] {
    const rows: ObjectRow[] = [];
    for (const o of this.objects.owned.values()) {
      const loc = o.location;
      rows.push({
        id: o.id,
        owner: this.procId,
        createdBy: o.createdBy,
        state: !loc ? 'PENDING' : 'error' in loc ? 'FAILED' : 'READY',
        size: !loc
          ? 0
          : 'inline' in loc
            ? loc.inline.length
            : 'value' in loc
              ? encode(loc.value).length
              : 'size' in loc
                ? loc.size
                : 0,
        where:
          !loc || 'error' in loc
            ? '-'
            : 'inline' in loc || 'value' in loc
              ? 'inline'
              : 'node' in loc
                ? holders(loc).join(',')
                : `memory of ${loc.proc}`,
        refs: this.objects.refs.count(o.id),
        borrowers: o.borrowers?.size ?? 0,
      });
    }
    return rows;
  }

  /** A new ref to an object this process owns. */
  private ownedRef<T>(id: string): ObjectRef<T> {
    return new ObjectRef<T>(id, this.procId);
  }

  async close(): Promise<void> {
    if (current === this) {
      current = undefined;
      setRefResolver(undefined);
      setRefCreateHook(undefined);
    }
    this.stopHeartbeat();
    // Our non-detached actors end with us; telling the head now beats its silence timeout.
    if (this.o.role === 'driver')
      await this.bus
        .request(subjects.headActorsOfOwner, { owner: this.procId }, { timeoutMs: 5000 })
        .catch(() => undefined);
    await this.tasks.close();
    // Whoever still waits hears why (and no longer keeps the process running) instead of waiting for ever.
    this.objects.owned.failPending(
      () => true,
      new ConnectionError(
        'the driver left the cluster (shutdown(), or the end of its script) before this object was ready',
      ),
    );
    await this.objects.freeAll();
    await this.bus.close();
  }
}

function printWorkerOutput(lines: Array<{ prefix: string; text: string; stderr: boolean }>): void {
  for (const l of lines) {
    const out = l.stderr ? process.stderr : process.stdout;
    for (const line of l.text.replace(/\n$/, '').split('\n')) out.write(`${l.prefix} ${line}\n`);
  }
}

function describe(v: unknown): string {
  try {
    return typeof v === 'object' ? (JSON.stringify(v) ?? String(v)) : `${typeof v} ${String(v)}`;
  } catch {
    return typeof v;
  }
}
