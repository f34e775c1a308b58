// Hosts actor instances inside a worker process: construct, restore the last checkpoint, dispatch method calls in
// arrival order (up to maxConcurrency at once), save checkpoints, stop. Policy (restart or not) is the head's business
// and supervisors', not ours: a crash is reported, never acted on here.
import { subjects } from '../protocol/subjects.ts';
import { TaskError, UsageError } from '../base/errors.ts';
import type { Core } from '../core/core.ts';
import type { Asker, Subscription } from '../bus/bus.ts';
import type { CallFrom } from '../../object-store/object-client.ts';
import type { ActorCall, ActorSpec, CallReply } from '../protocol/actors.ts';
import { LIFECYCLE, REMOTE_CLASS, constructActor, setCheckpointSaver } from '../core/actor-instance.ts';
import { currentBackend, describeBackend } from '../tensor/backend.ts';
import type { ObjectLocation } from '../protocol/objects.ts';
import { request } from '../protocol/check.ts';
import { checkActorCall } from '../protocol/schemas.ts';

const methodCache = new WeakMap<object, Set<string>>();

/** What `await` would wait for: a promise, or any object with a then() (an ObjectRef). */
function isThenable(v: unknown): v is PromiseLike<unknown> {
  return (
    v !== null &&
    (typeof v === 'object' || typeof v === 'function') &&
    typeof (v as { then?: unknown }).then === 'function'
  );
}

/** Methods a caller may name: ones the class defines (its prototypes up to Object.prototype), not getters, fields,
 * '_private' ones, lifecycle hooks or Object's. */
function methodsOf(instance: object): Set<string> {
  const proto = Object.getPrototypeOf(instance) as object;
  let names = methodCache.get(proto);
  if (names) return names;
  names = new Set();
  for (let p: object | null = proto; p && p !== Object.prototype; p = Object.getPrototypeOf(p)) {
    for (const [k, d] of Object.entries(Object.getOwnPropertyDescriptors(p))) {
      if (
        k !== 'constructor' &&
        !k.startsWith('_') &&
        !(LIFECYCLE as readonly string[]).includes(k) &&
        typeof d.value === 'function'
      )
        names.add(k);
    }
  }
  methodCache.set(proto, names);
  return names;
}

export interface HostedContext {
  /** Where its output goes (the actor's owner). */
  owner: string;
  /** e.g. "(Trainer pid=1234)". */
  prefix: string;
}

type Loader = (ref: { url: string; exportName: string }) => Promise<unknown>;
/** Whose output the actor's code writes, and how it is prefixed. */
export function contextOf(spec: ActorSpec): HostedContext {
  return { owner: spec.owner, prefix: `(${spec.className} pid=${process.pid})` };
}

type InContext = <T>(ctx: HostedContext, fn: () => Promise<T>) => Promise<T>;

interface Hosted {
  spec: ActorSpec;
  instance: Record<string, unknown>;
  sub: Subscription;
  /** With the way back to each call's sender (see ObjectClient.announceBorrow). */
  queue: Array<{ call: ActorCall; reply: (v: CallReply) => void; asker: Asker }>;
  running: number;
  ctx: HostedContext;
  stopped: boolean;
  /** Calls finished since the last checkpoint. */
  callsSinceCheckpoint: number;
  saving: Promise<void>;
  timer?: NodeJS.Timeout;
  /** Per caller: the highest `seq` of its calls that arrived here (see `received`). As Ray's per-caller sequence. */
  arrived: Map<string, number>;
}

type Instance = Record<string, unknown>;
type Started = { actorId: string; backend?: string };
const hook = (instance: Instance, name: (typeof LIFECYCLE)[number]) =>
  typeof instance[name] === 'function' ? (instance[name] as (...a: unknown[]) => unknown).bind(instance) : undefined;

export class ActorHost {
  private readonly actors = new Map<string, Hosted>();
  /** Calls taken and not yet answered (queued or running), of every actor here: what a caller's probe asks about. */
  private readonly held = new Set<string>();
  /** The start of each actor's current incarnation, while it is here: what a repeated start joins. */
  private readonly starts = new Map<string, { incarnation: number; started: Promise<Started> }>();

  constructor(
    private readonly client: Core,
    private readonly load: Loader,
    private readonly inContext: InContext,
  ) {}

  get size(): number {
    return this.actors.size;
  }

  /** Whether a call taken here is still unanswered (see `held`). */
  holds(callId: string): boolean {
    return this.held.has(callId);
  }

  /** The highest `seq` of the caller's calls to this instance of the actor that arrived, if any did. */
  received(actorId: string, caller: string): number | undefined {
    return this.actors.get(actorId)?.arrived.get(caller);
  }

  /** Constructs the actor, restores its last checkpoint, runs onStart(), then takes calls; says which tensor backend
   * its process computes on, when it uses tfjs. Throws TaskError when any of those throws. The head starts an actor
   * again only as a new incarnation: an older instance still here goes first. The same incarnation again is its node
   * asking again (a start or its answer may be lost): it joins the first start, or gets its answer again. A failed
   * start is forgotten, so asking again runs the constructor again. */
  start(spec: ActorSpec, incarnation: number): Promise<Started> {
    const first = this.starts.get(spec.actorId);
    if (first?.incarnation === incarnation) return first.started;
    const started = this.construct(spec, incarnation);
    const entry = { incarnation, started };
    this.starts.set(spec.actorId, entry);
    started.catch(() => {
      if (this.starts.get(spec.actorId) === entry) this.starts.delete(spec.actorId);
    });
    return started;
  }

  private async construct(spec: ActorSpec, incarnation: number): Promise<Started> {
    await this.stopInstance(spec.actorId);
    const ctx = contextOf(spec);
    const h = await this.inContext(ctx, async (): Promise<Hosted> => {
      let step = 'constructor';
      try {
        const Cls = await this.load(spec.cls);
        if (typeof Cls !== 'function' || !(REMOTE_CLASS in Cls))
          throw new UsageError(`${spec.cls.url} exports '${spec.cls.exportName}', which is not a @remote actor class`);
        const from: CallFrom = {};
        const args = await this.client.objects.resolveArgs(spec.args, spec.deps, from);
        const made = constructActor(
          spec.actorId,
          () => new (Cls as unknown as new (...a: unknown[]) => Instance)(...args),
        );
        const hosted: Hosted = {
          spec,
          instance: made,
          queue: [],
          running: 0,
          ctx,
          stopped: false,
          callsSinceCheckpoint: 0,
          saving: Promise.resolve(),
          arrived: new Map(),
          sub: undefined as unknown as Subscription,
        };
        setCheckpointSaver(made, () => this.saveCheckpoint(hosted));
        const restore = hook(made, 'restore');
        if (restore) {
          step = 'restore';
          const last = await (await this.client.checkpoints()).load(spec.actorId);
          if (last) await restore(last.state);
        }
        step = 'onStart';
        await hook(made, 'onStart')?.();
        await from.confirmed; // refs among the arguments: before the creator lets go of them
        return hosted;
      } catch (e) {
        throw TaskError.from(e, `${spec.className} ${step}`);
      }
    });
    h.sub = this.client.bus.serveBatched(
      subjects.actorCall(this.client.procId, spec.actorId, incarnation),
      request(
        checkActorCall,
        (call: ActorCall, asker: Asker) =>
          new Promise<CallReply>((reply) => {
            if (h.stopped) {
              reply({ notRun: true });
              return;
            } // crashed, waiting to be stopped
            this.held.add(call.callId);
            if (call.seq !== undefined && !((h.arrived.get(call.caller) ?? -1) >= call.seq))
              h.arrived.set(call.caller, call.seq);
            h.queue.push({ call, reply, asker });
            this.drain(h);
          }),
      ),
      { keepAnswers: true }, // for a caller that lost them (its probe asks)
    );

    await this.client.bus.flush(); // calls may come the moment the head says ALIVE
    this.actors.set(spec.actorId, h);
    const seconds = spec.checkpointEvery?.seconds;
    if (seconds && hook(h.instance, 'checkpoint')) {
      h.timer = setInterval(() => {
        if (h.callsSinceCheckpoint > 0) void this.saveCheckpoint(h).catch((e) => this.checkpointFailed(h, e));
      }, seconds * 1000);
      h.timer.unref();
    }
    const backend = currentBackend();
    return { actorId: spec.actorId, backend: backend && describeBackend(await backend) };
  }

  /** Stops taking calls; calls still queued are answered "not run" (their callers send them to the next instance, or
   * learn it is dead). Then onStop() gets up to graceMs to finish. */
  stop(actorId: string, graceMs = 0): Promise<void> {
    this.starts.delete(actorId);
    return this.stopInstance(actorId, graceMs);
  }

  private async stopInstance(actorId: string, graceMs = 0): Promise<void> {
    const h = this.actors.get(actorId);
    if (!h) return;
    h.stopped = true;
    clearInterval(h.timer);
    // Drained, not dropped: calls already on their way are answered "not run", so their callers send them on.
    h.sub.drain().catch(() => h.sub.unsubscribe());
    this.actors.delete(actorId);
    for (const { call, reply } of h.queue.splice(0)) this.answer(call, reply, { notRun: true });
    const onStop = hook(h.instance, 'onStop');
    if (!onStop) return;
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<void>((r) => {
      timer = setTimeout(r, graceMs);
    });
    await Promise.race([
      this.inContext(h.ctx, async () => {
        await onStop();
      }).catch((e) => console.error(`troupe: ${h.spec.className}.onStop() threw:`, e)),
      late,
    ]);
    clearTimeout(timer);
  }

  /** Answers a call taken here: it is no longer held. */
  private answer(call: ActorCall, reply: (v: CallReply) => void, r: CallReply): void {
    this.held.delete(call.callId);
    reply(r);
  }

  /** Runs queued calls in arrival order, at most maxConcurrency at a time. */
  private drain(h: Hosted): void {
    while (!h.stopped && h.running < h.spec.maxConcurrency && h.queue.length) {
      const { call, reply, asker } = h.queue.shift()!;
      h.running++;
      this.inContext(h.ctx, () => this.run(h, call, asker))
        .then((r) => {
          this.answer(call, reply, r);
          h.callsSinceCheckpoint++;
          const every = h.spec.checkpointEvery?.calls;
          // Saved before the next call starts: the checkpoint is the state after exactly these calls.
          if (every && h.callsSinceCheckpoint >= every && !h.stopped)
            return this.saveCheckpoint(h).catch((e) => this.checkpointFailed(h, e));
        })
        .finally(() => {
          h.running--;
          this.drain(h);
        });
    }
  }

  private async run(h: Hosted, call: ActorCall, asker: Asker): Promise<{ result: ObjectLocation }> {
    const where = `${h.spec.className}.${String(call?.method)}`;
    try {
      const method =
        typeof call?.method === 'string' && methodsOf(h.instance).has(call.method)
          ? h.instance[call.method]
          : undefined;
      if (typeof method !== 'function')
        throw new UsageError(`${h.spec.className} has no method '${String(call?.method)}'`);
      // A method taking and returning plain values runs without a promise of ours in between (see plainArgs).
      const objects = this.client.objects;
      let from: CallFrom | undefined;
      const args =
        objects.plainArgs(call.args) ??
        (await objects.resolveArgs(call.args, call.deps, (from = { caller: call.caller, asker })));
      let value = (method as (...a: unknown[]) => unknown).apply(h.instance, args);
      if (isThenable(value)) value = await value;
      const result = objects.plainStored(value) ?? (await objects.store(call.callId, value, call.caller));
      if (from?.confirmed) await from.confirmed; // before the caller lets go of the refs it sent
      return { result };
    } catch (e) {
      const error = TaskError.from(e, where);
      if (h.spec.crashOnError && !(e instanceof UsageError) && !h.stopped)
        this.crash(h, `${where}() threw ${error.remoteName}: ${error.message} (crashOnError)`);
      return { result: { error } };
    }
  }

  /** The actor counts as crashed: the head restarts it, or holds it for its supervisor. Its callers see `cause`. */
  private crash(h: Hosted, cause: string): void {
    h.stopped = true; // no further calls run on this instance: they go to the next one
    for (const { call, reply } of h.queue.splice(0)) this.answer(call, reply, { notRun: true });
    void this.client
      .killActor(h.spec.actorId, false, cause)
      .catch((e) => console.error(`troupe: could not report the crash of ${h.spec.className} ${h.spec.actorId}:`, e));
  }

  /** One save at a time, in order; the state is read when the save starts. */
  private saveCheckpoint(h: Hosted): Promise<void> {
    const save = async () => {
      const checkpoint = hook(h.instance, 'checkpoint');
      if (!checkpoint) throw new UsageError(`${h.spec.className} has no checkpoint() method to save`);
      h.callsSinceCheckpoint = 0;
      const state = await checkpoint();
      await (await this.client.checkpoints()).save(h.spec.actorId, state);
    };
    const next = h.saving.then(save, save);
    h.saving = next.catch(() => undefined);
    return next;
  }

  private checkpointFailed(h: Hosted, e: unknown): void {
    console.error(`troupe: checkpoint of ${h.spec.className} ${h.spec.actorId} failed:`, e);
  }
}
