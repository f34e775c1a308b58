// Supervisor trees with Erlang/OTP semantics. A supervisor is itself an actor: it starts its children, and when one
// dies the head holds it RESTARTING (same id, same name, calls queued) until the supervisor restarts it by its
// strategy, restart type, intensity and backoff. Its children and restart history live in its checkpoint, so a
// supervisor restarted elsewhere (the root by the head, the others by their parents) takes its running children back.
import { Actor, classRef, remoteClassInfo, type ActorClass, type RemoteClassInfo } from '../actor.ts';
import { makeHandle, HandleData, type ActorHandle } from '../handle.ts';
import { checkActorOptions } from '../options.ts';
import {
  subjects,
  UsageError,
  bus,
  event,
  checkActorState,
  createActor,
  libraryActor,
  libraryActorRef,
  killActor,
  restartActor,
  actorInfo,
  checkpoints,
  type ActorOptions,
  type FunctionRef,
  type ActorInfo,
  type ActorStateEvent,
  type RemoteArgs,
  type Subscription,
} from '../library/runtime.ts';

/** one_for_one: only the failed child restarts. one_for_all: all of them. rest_for_one: it and those started after
 * it. */
export type Strategy = 'one_for_one' | 'one_for_all' | 'rest_for_one';
/** permanent: always restarted. transient: restarted after a crash, not after a normal stop. temporary: never. */
export type RestartType = 'permanent' | 'transient' | 'temporary';

/** Delay before each restart of a child: minMs, doubling with each restart of it within the period, up to maxMs;
 * jitter (0..1) adds up to that fraction at random (Akka's restartWithBackoff). */
export interface Backoff {
  minMs: number;
  maxMs: number;
  jitter?: number;
}

/** A worker child: an actor class and how to start it. */
export interface ChildSpec<C extends ActorClass = ActorClass> {
  id: string;
  actor: C;
  args?: RemoteArgs<ConstructorParameters<C>>;
  /** Actor options (resources, name, maxTaskRetries, checkpointEvery, …); restarts are the supervisor's, so no
   * maxRestarts. */
  options?: ActorOptions;
  restart?: RestartType;
  /** How long its onStop() may take when it is stopped (default 5000). */
  shutdownMs?: number;
  /** A method that throws crashes the child (default false: it fails only that call). */
  crashOnError?: boolean;
}

/** A supervisor child: a subtree. */
export interface SupervisorChildSpec {
  id: string;
  supervisor: SupervisorSpec;
  restart?: RestartType;
  shutdownMs?: number;
}

export interface SupervisorSpec {
  strategy?: Strategy;
  /** More than `intensity` restarts within `periodMs` (default 3 in 5000 ms) stop every child, in reverse start
   * order, then the supervisor, which counts as its own failure to its parent. */
  intensity?: number;
  periodMs?: number;
  backoff?: Backoff;
  /** Started in this order. */
  children?: Array<ChildSpec | SupervisorChildSpec>;
}

export interface SupervisorOptions {
  name?: string;
  namespace?: string;
  /** 'detached': the tree outlives the driver that started it. */
  lifetime?: 'detached';
}

/** A child as whichChildren() reports it. actorId is undefined while it is not running (terminated). */
export interface ChildInfo {
  id: string;
  actorId?: string;
  className: string;
  type: 'worker' | 'supervisor';
  restart: RestartType;
  state?: ActorInfo['state'];
  /** Restarts by this supervisor. */
  restarts: number;
}

// --- what travels to the supervisor actor: plain data ---------------------------------------------------------

interface PlainChild {
  id: string;
  cls: FunctionRef;
  args: unknown[];
  options: ActorOptions;
  restart: RestartType;
  shutdownMs: number;
  type: 'worker' | 'supervisor';
}

interface PlainSpec {
  strategy: Strategy;
  intensity: number;
  periodMs: number;
  backoff?: Backoff;
  children: PlainChild[];
  lifetime: 'owned' | 'detached';
  /** Started by a parent supervisor: exceeding intensity is reported to it instead of ending the tree. */
  nested: boolean;
}

interface ChildState {
  spec: PlainChild;
  actorId?: string;
  restarts: number;
  /** Restart times within the backoff window, for the doubling. */
  recent: number[];
}

/** What the supervisor checkpoints. */
interface SupervisorState {
  children: ChildState[];
  restarts: number[];
  /** Per child actor: the last held incarnation acted on. */
  handled: Record<string, number>;
}

const ID = /^[A-Za-z0-9_.-]{1,100}$/;
const STRATEGIES: Strategy[] = ['one_for_one', 'one_for_all', 'rest_for_one'];
const RESTARTS: RestartType[] = ['permanent', 'transient', 'temporary'];
const SETTLE_MS = 60_000;

const ofType = <T>(v: T | undefined, fallback: T) => (v === undefined ? fallback : v);

function checkSpec(spec: SupervisorSpec): void {
  if (typeof spec !== 'object' || spec === null) throw new UsageError('a supervisor spec must be an object');
  for (const k of Object.keys(spec))
    if (!['strategy', 'intensity', 'periodMs', 'backoff', 'children'].includes(k))
      throw new UsageError(`unknown supervisor option '${k}'`);
  if (spec.strategy !== undefined && !STRATEGIES.includes(spec.strategy))
    throw new UsageError(`strategy must be one of ${STRATEGIES.join(', ')}, got ${JSON.stringify(spec.strategy)}`);
  if (spec.intensity !== undefined && (!Number.isInteger(spec.intensity) || spec.intensity < 0))
    throw new UsageError(`intensity must be a whole number >= 0, got ${spec.intensity}`);
  if (spec.periodMs !== undefined && !(Number.isFinite(spec.periodMs) && spec.periodMs > 0))
    throw new UsageError(`periodMs must be > 0, got ${spec.periodMs}`);
  const b = spec.backoff;
  if (b !== undefined) {
    const ok =
      typeof b === 'object' &&
      b !== null &&
      Number.isFinite(b.minMs) &&
      b.minMs >= 0 &&
      Number.isFinite(b.maxMs) &&
      b.maxMs >= b.minMs &&
      (b.jitter === undefined || (typeof b.jitter === 'number' && b.jitter >= 0 && b.jitter <= 1));
    if (!ok)
      throw new UsageError(`backoff must be { minMs >= 0, maxMs >= minMs, jitter?: 0..1 }, got ${JSON.stringify(b)}`);
  }
  if (spec.children !== undefined && !Array.isArray(spec.children))
    throw new UsageError('children must be an array of child specs');
}

/** Turns a child spec (with its class) into plain data a supervisor can keep and restart from. */
async function plainChild(c: ChildSpec | SupervisorChildSpec, lifetime: PlainSpec['lifetime']): Promise<PlainChild> {
  if (typeof c !== 'object' || c === null) throw new UsageError('a child spec must be an object');
  if (typeof c.id !== 'string' || !ID.test(c.id))
    throw new UsageError(`child id must be 1-100 letters, digits, '_', '.' or '-', got ${JSON.stringify(c.id)}`);
  const restart = ofType(c.restart, 'permanent');
  if (!RESTARTS.includes(restart))
    throw new UsageError(
      `child '${c.id}': restart must be one of ${RESTARTS.join(', ')}, got ${JSON.stringify(restart)}`,
    );
  const shutdownMs = ofType(c.shutdownMs, 5000);
  if (!Number.isInteger(shutdownMs) || shutdownMs < 0)
    throw new UsageError(`child '${c.id}': shutdownMs must be a whole number >= 0, got ${shutdownMs}`);
  if ('supervisor' in c) {
    const spec = await plainSpec(c.supervisor, lifetime, true);
    return {
      id: c.id,
      cls: libraryActorRef('Supervisor'),
      args: [spec],
      options: { maxConcurrency: 16 },
      restart,
      shutdownMs,
      type: 'supervisor',
    };
  }
  let info: RemoteClassInfo;
  try {
    info = remoteClassInfo(c.actor);
  } catch (e) {
    throw new UsageError(`child '${c.id}': ${(e as Error).message}`);
  }
  const options: ActorOptions = { ...info.options, ...c.options };
  delete options.maxRestarts; // the decorator's; a supervised child is restarted by its supervisor
  if (c.options && 'maxRestarts' in c.options)
    throw new UsageError(
      `child '${c.id}': maxRestarts does not apply to a supervised child; its supervisor's intensity and restart ` +
        `type decide`,
    );
  if (options.lifetime)
    throw new UsageError(`child '${c.id}': lifetime is the supervisor's (SupervisorOptions.lifetime)`);
  if (c.crashOnError !== undefined) options.crashOnError = c.crashOnError;
  checkActorOptions(options);
  if (c.args !== undefined && !Array.isArray(c.args)) throw new UsageError(`child '${c.id}': args must be an array`);
  return { id: c.id, cls: await classRef(c.actor), args: c.args ?? [], options, restart, shutdownMs, type: 'worker' };
}

async function plainSpec(spec: SupervisorSpec, lifetime: PlainSpec['lifetime'], nested: boolean): Promise<PlainSpec> {
  checkSpec(spec);
  const children = await Promise.all((spec.children ?? []).map((c) => plainChild(c, lifetime)));
  const ids = new Set<string>();
  for (const c of children) {
    if (ids.has(c.id)) throw new UsageError(`two children with id '${c.id}'`);
    ids.add(c.id);
  }
  return {
    strategy: ofType(spec.strategy, 'one_for_one'),
    intensity: ofType(spec.intensity, 3),
    periodMs: ofType(spec.periodMs, 5000),
    backoff: spec.backoff,
    children,
    lifetime,
    nested,
  };
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** The supervisor actor. Start one with startSupervisor(); its handle's methods are wrapped by SupervisorHandle. */
export class Supervisor extends Actor {
  private state: SupervisorState = { children: [], restarts: [], handled: {} };
  private ready: Promise<void> = Promise.resolve();
  private chain: Promise<unknown> = Promise.resolve();
  private sub?: Subscription;
  private reconcileTimer?: NodeJS.Timeout;
  /** Per child actor: called with each state event, while we wait for a (re)start to settle. */
  private readonly watchers = new Map<string, (e: ActorStateEvent) => void>();
  private stopping = false;

  constructor(private readonly spec: PlainSpec) {
    super();
  }

  // --- lifecycle (called by the runtime) ---

  checkpoint(): SupervisorState {
    return this.state;
  }

  restore(state: SupervisorState): void {
    this.state = state;
  }

  onStart(): void {
    this.sub = bus().on(
      subjects.evtActorState,
      event(checkActorState, (e: ActorStateEvent) => {
        if (e.supervisor !== this.actorId) return;
        this.watchers.get(e.actorId)?.(e);
        if (e.state === 'RESTARTING' && e.held)
          void this.serial(() => this.onHeld(e.actorId, e.incarnation, e.cause ?? 'unknown cause', !!e.normal));
        else if (e.state === 'DEAD') void this.serial(async () => this.onDead(e.actorId));
      }),
    );
    const restored = this.state.children.length > 0;
    // A restarted supervisor takes its children back and catches up on deaths it missed; a new one starts them.
    this.ready = this.serial(() => (restored ? this.reconcile() : this.startAll()));
    this.reconcileTimer = setInterval(() => {
      if (!this.stopping) void this.serial(() => this.reconcile());
    }, 2000);
    this.reconcileTimer.unref();
  }

  onStop(): void {
    this.stopping = true;
    clearInterval(this.reconcileTimer);
    this.sub?.unsubscribe();
  }

  // --- the API (through SupervisorHandle) ---

  async whichChildren(): Promise<ChildInfo[]> {
    await this.ready;
    return Promise.all(
      this.state.children.map(async (c) => ({
        id: c.spec.id,
        actorId: c.actorId,
        className: c.spec.cls.name,
        type: c.spec.type,
        restart: c.spec.restart,
        restarts: c.restarts,
        state: c.actorId ? (await actorInfo(c.actorId))?.state : undefined,
      })),
    );
  }

  startChild(child: PlainChild): Promise<ChildInfo> {
    return this.act(async () => {
      if (this.find(child.id)) throw new UsageError(`this supervisor already has a child '${child.id}'`);
      const c: ChildState = { spec: child, restarts: 0, recent: [] };
      this.state.children.push(c);
      await this.startOne(c);
      await this.saveCheckpoint();
      return this.info(c);
    });
  }

  /** Stops a running child (DEAD, its onStop() given shutdownMs); its spec stays, for restartChild(). */
  terminateChild(id: string): Promise<void> {
    return this.act(async () => {
      const c = this.child(id);
      await this.terminate(c, 'its supervisor terminated it (terminateChild)');
      if (c.spec.restart === 'temporary') this.state.children.splice(this.state.children.indexOf(c), 1);
      await this.saveCheckpoint();
    });
  }

  /** Starts a terminated child again (a new actor id). */
  restartChild(id: string): Promise<ChildInfo> {
    return this.act(async () => {
      const c = this.stoppedChild(id);
      await this.startOne(c);
      await this.saveCheckpoint();
      return this.info(c);
    });
  }

  /** Forgets a terminated child. */
  deleteChild(id: string): Promise<void> {
    return this.act(async () => {
      const c = this.stoppedChild(id);
      this.state.children.splice(this.state.children.indexOf(c), 1);
      await this.saveCheckpoint();
    });
  }

  async countChildren(): Promise<{ specs: number; active: number; supervisors: number; workers: number }> {
    await this.ready;
    const cs = this.state.children;
    return {
      specs: cs.length,
      active: cs.filter((c) => c.actorId).length,
      supervisors: cs.filter((c) => c.spec.type === 'supervisor').length,
      workers: cs.filter((c) => c.spec.type === 'worker').length,
    };
  }

  /** Stops every child in reverse start order, then the supervisor itself, for good. */
  async shutdown(): Promise<void> {
    await this.ready.catch(() => undefined);
    await this.serial(async () => {
      await this.terminateAll('its supervisor shut down');
      this.stopping = true;
      void killActor(this.actorId, true, 'it was shut down');
    });
  }

  // --- policy ---

  /** A child died, or was stopped by someone else (normal), and the head holds it for us. */
  private async onHeld(actorId: string, incarnation: number, cause: string, normal: boolean): Promise<void> {
    if (this.stopping) return;
    const c = this.state.children.find((x) => x.actorId === actorId);
    if (!c || (this.state.handled[actorId] ?? -1) >= incarnation) return;
    this.state.handled[actorId] = incarnation;
    // OTP: a temporary child is never restarted, a transient one only after a crash, a permanent one always.
    if (c.spec.restart === 'temporary' || (normal && c.spec.restart === 'transient')) {
      await this.terminate(
        c,
        `${cause}; a ${c.spec.restart} child is not restarted${normal ? ' after a normal stop' : ''}`,
      );
      if (c.spec.restart === 'temporary') this.state.children.splice(this.state.children.indexOf(c), 1);
      await this.saveCheckpoint();
      return;
    }
    const now = Date.now();
    this.state.restarts = [...this.state.restarts.filter((t) => now - t < this.spec.periodMs), now];
    if (this.state.restarts.length > this.spec.intensity) {
      await this.escalate(
        `child '${c.spec.id}' failed (${cause}) and the supervisor reached its restart intensity (more than ` +
          `${this.spec.intensity} restarts in ${this.spec.periodMs} ms)`,
      );
      return;
    }
    const order = this.state.children;
    const at = order.indexOf(c);
    const group =
      this.spec.strategy === 'one_for_one'
        ? [c]
        : this.spec.strategy === 'one_for_all'
          ? order.filter((x) => x.actorId)
          : order.slice(at).filter((x) => x.actorId);
    // The others go first, newest first, held for restart like the one that died.
    for (const x of [...group].reverse()) {
      if (x === c) continue;
      await this.stopForRestart(
        x,
        `its supervisor restarts it because its sibling '${c.spec.id}' failed (${this.spec.strategy})`,
      );
    }
    await this.saveCheckpoint();
    try {
      for (const x of group) {
        const failed = await this.restartOne(x);
        if (failed) return; // its failure is its own event, handled next
      }
    } catch (e) {
      // The head did not take a restart (it was restarting itself, say): this failure is not handled yet, so the next
      // reconcile (every 2 s) tries again. Marked handled, the child would stay held for ever.
      delete this.state.handled[actorId];
      this.state.restarts = this.state.restarts.filter((t) => t !== now);
      await this.saveCheckpoint();
      throw e;
    }
    await this.saveCheckpoint();
  }

  /** A child ended for good without us (kill() from outside, or its node could host nothing): it is no longer
   * running. */
  private onDead(actorId: string): void {
    const c = this.state.children.find((x) => x.actorId === actorId);
    if (!c || this.stopping) return;
    c.actorId = undefined;
    if (c.spec.restart === 'temporary') this.state.children.splice(this.state.children.indexOf(c), 1);
    void this.saveCheckpoint();
  }

  /** Restarts a held child after its backoff; resolves once it is ALIVE. Returns the failure, if it failed again. */
  private async restartOne(c: ChildState): Promise<string | undefined> {
    const id = c.actorId;
    if (!id) return undefined;
    const b = this.spec.backoff;
    const now = Date.now();
    c.recent = c.recent.filter((t) => now - t < Math.max(this.spec.periodMs, b?.maxMs ?? 0) * 2);
    if (b) {
      const base = Math.min(b.maxMs, b.minMs * 2 ** c.recent.length);
      await sleep(base * (1 + (b.jitter ?? 0) * Math.random()));
    }
    c.recent.push(Date.now());
    c.restarts++;
    await this.saveCheckpoint(); // a supervisor restarted from here on knows of this restart
    const settled = this.settle(id);
    try {
      await restartActor(id, this.actorId);
    } catch (e) {
      c.restarts--; // not restarted after all: onHeld's next try counts it
      c.recent.pop();
      throw e;
    }
    return settled;
  }

  /** Waits for a child's next start to settle: undefined once ALIVE, else why it did not come up. */
  private settle(actorId: string): Promise<string | undefined> {
    return new Promise((resolve) => {
      const done = (why: string | undefined) => {
        this.watchers.delete(actorId);
        clearTimeout(timer);
        resolve(why);
      };
      const timer = setTimeout(() => done(undefined), SETTLE_MS); // still placing: reconcile takes it from here
      this.watchers.set(actorId, (e) => {
        if (e.state === 'ALIVE') done(undefined);
        else if (e.state === 'DEAD' || (e.state === 'RESTARTING' && e.held)) done(e.cause ?? 'it failed to start');
      });
    });
  }

  private async startAll(): Promise<void> {
    if (this.state.children.length === 0)
      this.state.children = this.spec.children.map((spec) => ({ spec, restarts: 0, recent: [] }));
    const started: ChildState[] = [];
    for (const c of this.state.children) {
      try {
        await this.startOne(c);
      } catch (e) {
        // As in OTP: a child that cannot start fails the supervisor's start; the ones already started go.
        for (const s of started.reverse()) await this.terminate(s, 'its supervisor failed to start');
        this.stopping = true;
        const why = `child '${c.spec.id}' failed to start: ${(e as Error).message}`;
        void killActor(this.actorId, true, why);
        throw new UsageError(why);
      }
      started.push(c);
    }
    await this.saveCheckpoint();
  }

  /** Creates the child's actor and waits for it to be ALIVE; throws why it did not come up. */
  private async startOne(c: ChildState): Promise<void> {
    const actorId = createActor(
      c.spec.cls,
      c.spec.args,
      { ...c.spec.options, className: c.spec.cls.name },
      { supervisor: this.actorId, shutdownMs: c.spec.shutdownMs, lifetime: this.spec.lifetime },
    );
    c.actorId = actorId;
    const failed = await this.settle(actorId);
    if (failed) {
      await this.terminate(c, `it failed to start: ${failed}`);
      throw new UsageError(failed);
    }
  }

  private async stopForRestart(c: ChildState, cause: string): Promise<void> {
    if (!c.actorId) return;
    await killActor(c.actorId, false, cause, this.actorId);
    // Held now; mark that incarnation as ours, so its event is not taken for a failure.
    const info = await actorInfo(c.actorId);
    if (info) this.state.handled[c.actorId] = info.incarnation;
  }

  private async terminate(c: ChildState, cause: string): Promise<void> {
    const id = c.actorId;
    if (!id) return;
    c.actorId = undefined;
    delete this.state.handled[id];
    await killActor(id, true, cause, this.actorId).catch(() => undefined);
  }

  private async terminateAll(cause: string): Promise<void> {
    for (const c of [...this.state.children].reverse()) await this.terminate(c, cause);
  }

  /** Restart intensity exceeded: every child stops, newest first, then this supervisor fails to its parent (nested)
   * or ends (the root). A parent restarts it from its spec, afresh. */
  private async escalate(why: string): Promise<void> {
    this.stopping = true;
    await this.terminateAll(`its supervisor gave up: ${why}`);
    await (await checkpoints()).delete(this.actorId);
    await killActor(this.actorId, !this.spec.nested, why);
  }

  /** Brings the record up to date from KV: deaths we missed while down or disconnected. */
  private async reconcile(): Promise<void> {
    for (const c of [...this.state.children]) {
      if (!c.actorId || this.stopping) continue;
      const info = await actorInfo(c.actorId);
      if (!info || info.state === 'DEAD') this.onDead(c.actorId);
      else if (info.state === 'RESTARTING' && info.held)
        await this.onHeld(info.actorId, info.incarnation, info.cause ?? 'unknown cause', !!info.normal);
    }
  }

  /** An API call: once the children are started, one change at a time. */
  private async act<T>(fn: () => Promise<T>): Promise<T> {
    await this.ready;
    return this.serial(fn);
  }

  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const next = this.chain.then(fn, fn);
    this.chain = next.catch(() => undefined);
    return next;
  }

  private find(id: string): ChildState | undefined {
    return this.state.children.find((c) => c.spec.id === id);
  }

  private child(id: string): ChildState {
    const c = this.find(id);
    if (!c) throw new UsageError(`this supervisor has no child '${id}'`);
    return c;
  }

  private stoppedChild(id: string): ChildState {
    const c = this.child(id);
    if (c.actorId) throw new UsageError(`child '${id}' is running; terminateChild() it first`);
    return c;
  }

  private info(c: ChildState): ChildInfo {
    return {
      id: c.spec.id,
      actorId: c.actorId,
      className: c.spec.cls.name,
      type: c.spec.type,
      restart: c.spec.restart,
      restarts: c.restarts,
      state: c.actorId ? 'ALIVE' : undefined,
    };
  }
}

libraryActor(Supervisor, import.meta.url);

/** A running supervisor, from the driver's side. */
export class SupervisorHandle {
  constructor(
    readonly actor: ActorHandle<Supervisor>,
    private readonly lifetime: PlainSpec['lifetime'],
  ) {}

  get actorId(): string {
    return this.actor.actorId;
  }

  async whichChildren(): Promise<ChildInfo[]> {
    return await this.actor.whichChildren();
  }

  async countChildren(): Promise<{ specs: number; active: number; supervisors: number; workers: number }> {
    return await this.actor.countChildren();
  }

  /** Adds and starts a child (dynamic children); resolves once it is ALIVE. */
  async startChild(spec: ChildSpec | SupervisorChildSpec): Promise<ChildInfo> {
    return this.actor.startChild(await plainChild(spec, this.lifetime));
  }

  async terminateChild(id: string): Promise<void> {
    await this.actor.terminateChild(id);
  }

  async restartChild(id: string): Promise<ChildInfo> {
    return await this.actor.restartChild(id);
  }

  async deleteChild(id: string): Promise<void> {
    await this.actor.deleteChild(id);
  }

  /** A handle to a running worker child; it keeps working across the child's restarts. */
  async child<T = Record<string, (...args: any[]) => any>>(id: string): Promise<ActorHandle<T>> {
    const c = await this.running(id, 'worker');
    const spec = (await actorInfo(c.actorId!))?.spec;
    return makeHandle<T>(new HandleData(c.actorId!, c.className, spec?.maxTaskRetries ?? 0, spec?.maxPendingCalls));
  }

  /** The handle of a running supervisor child. */
  async childSupervisor(id: string): Promise<SupervisorHandle> {
    const c = await this.running(id, 'supervisor');
    return new SupervisorHandle(makeHandle<Supervisor>(new HandleData(c.actorId!, 'Supervisor', 0)), this.lifetime);
  }

  /** Stops every child in reverse start order, then the supervisor. */
  async shutdown(): Promise<void> {
    await this.actor.shutdown();
  }

  private async running(id: string, type: ChildInfo['type']): Promise<ChildInfo> {
    const c = (await this.whichChildren()).find((x) => x.id === id);
    if (!c) throw new UsageError(`supervisor ${this.actorId} has no child '${id}'`);
    if (c.type !== type) throw new UsageError(`child '${id}' is a ${c.type}, not a ${type}`);
    if (!c.actorId) throw new UsageError(`child '${id}' is not running (terminated)`);
    return c;
  }
}

/** Starts a supervision tree and resolves once every child is ALIVE (it rejects, as OTP's start_link, when one
 * cannot start). The root supervisor is restarted by the head wherever there is room, for as long as it does not
 * give up by itself (restart intensity). */
export async function startSupervisor(
  spec: SupervisorSpec,
  options: SupervisorOptions = {},
): Promise<SupervisorHandle> {
  for (const k of Object.keys(options))
    if (!['name', 'namespace', 'lifetime'].includes(k))
      throw new UsageError(`unknown supervisor option '${k}' (known: name, namespace, lifetime)`);
  const lifetime = options.lifetime === 'detached' ? 'detached' : 'owned';
  const plain = await plainSpec(spec, lifetime, false);
  const actor = Supervisor.options({ ...options, maxRestarts: -1, maxConcurrency: 16 }).remote(
    plain as never,
  ) as ActorHandle<Supervisor>;
  const handle = new SupervisorHandle(actor, lifetime);
  await handle.whichChildren();
  return handle;
}
