// Hosts actor instances inside a worker process: construct, dispatch method calls in arrival order
// (up to maxConcurrency at once), stop. Policy (restart or not) is the head's business, not ours.
import { subjects } from './subjects.ts';
import { TaskError, UsageError, ActorDiedError } from './errors.ts';
import type { Client } from './client.ts';
import type { Subscription } from './transport.ts';
import type { ActorCall, ActorSpec } from './actor-types.ts';
import type { ObjectLocation } from '../object-store/location.ts';

const methodCache = new WeakMap<object, Set<string>>();

/** Methods a caller may name: ones the class defines (its prototypes up to Object.prototype), not getters, fields, '_private' ones or Object's. */
function methodsOf(instance: object): Set<string> {
  const proto = Object.getPrototypeOf(instance) as object;
  let names = methodCache.get(proto);
  if (names) return names;
  names = new Set();
  for (let p: object | null = proto; p && p !== Object.prototype; p = Object.getPrototypeOf(p)) {
    for (const [k, d] of Object.entries(Object.getOwnPropertyDescriptors(p))) {
      if (k !== 'constructor' && !k.startsWith('_') && typeof d.value === 'function') names.add(k);
    }
  }
  methodCache.set(proto, names);
  return names;
}

/** Marks a class made remote by the actors layer (a well-known symbol: this layer cannot import that one). */
export const REMOTE_CLASS = Symbol.for('troupe.remoteClass');

export interface HostedContext {
  /** Where its output goes (the actor's owner). */
  owner: string;
  /** e.g. "(Trainer pid=1234)". */
  prefix: string;
}

type Loader = (ref: { url: string; exportName: string }, workingDir: string) => Promise<unknown>;
/** Whose output the actor's code writes, and how it is prefixed. */
export function contextOf(spec: ActorSpec): HostedContext {
  return { owner: spec.owner, prefix: `(${spec.className} pid=${process.pid})` };
}

type InContext = <T>(ctx: HostedContext, fn: () => Promise<T>) => Promise<T>;

interface Hosted {
  spec: ActorSpec;
  instance: Record<string, unknown>;
  sub: Subscription;
  queue: Array<{ call: ActorCall; reply: (v: { result: ObjectLocation }) => void }>;
  running: number;
  ctx: HostedContext;
  stopped: boolean;
}

export class ActorHost {
  private readonly actors = new Map<string, Hosted>();

  constructor(private readonly client: Client, private readonly load: Loader, private readonly inContext: InContext) {}

  get size(): number {
    return this.actors.size;
  }

  /** Constructs the actor and starts taking calls. Throws TaskError when the constructor throws.
   * The head starts an actor again only as a new incarnation: an older instance still here goes first. */
  async start(spec: ActorSpec): Promise<{ actorId: string }> {
    this.stop(spec.actorId);
    const ctx = contextOf(spec);
    const instance = await this.inContext(ctx, async () => {
      let Cls: unknown;
      try {
        Cls = await this.load(spec.cls, spec.workingDir);
        if (typeof Cls !== 'function' || !(REMOTE_CLASS in Cls)) throw new UsageError(`${spec.cls.url} exports '${spec.cls.exportName}', which is not a @remote actor class`);
        const args = await this.client.objects.resolveArgs(spec.args, spec.deps);
        return new (Cls as unknown as new (...a: unknown[]) => Record<string, unknown>)(...args);
      } catch (e) {
        throw TaskError.from(e, `${spec.className} constructor`);
      }
    });
    const hosted: Hosted = { spec, instance, queue: [], running: 0, ctx, stopped: false, sub: undefined as unknown as Subscription };
    hosted.sub = this.client.bus.serveBatched(subjects.actor(spec.actorId), (call: ActorCall) =>
      new Promise((reply) => { hosted.queue.push({ call, reply }); this.drain(hosted); }));
    await this.client.bus.flush(); // calls may come the moment the head says ALIVE
    this.actors.set(spec.actorId, hosted);
    return { actorId: spec.actorId };
  }

  /** Stops taking calls; calls still queued fail (their callers are told the actor is gone). */
  stop(actorId: string): void {
    const h = this.actors.get(actorId);
    if (!h) return;
    h.stopped = true;
    h.sub.unsubscribe();
    this.actors.delete(actorId);
    const error = new ActorDiedError(`actor ${actorId} (${h.spec.className}) was stopped before this call ran`, { actorId });
    for (const { reply } of h.queue.splice(0)) reply({ result: { error } });
  }

  /** Runs queued calls in arrival order, at most maxConcurrency at a time. */
  private drain(h: Hosted): void {
    while (!h.stopped && h.running < h.spec.maxConcurrency && h.queue.length) {
      const { call, reply } = h.queue.shift()!;
      h.running++;
      this.inContext(h.ctx, () => this.run(h, call)).then(reply).finally(() => {
        h.running--;
        this.drain(h);
      });
    }
  }

  private async run(h: Hosted, call: ActorCall): Promise<{ result: ObjectLocation }> {
    const where = `${h.spec.className}.${String(call?.method)}`;
    try {
      const method = typeof call?.method === 'string' && methodsOf(h.instance).has(call.method) ? h.instance[call.method] : undefined;
      if (typeof method !== 'function') throw new UsageError(`${h.spec.className} has no method '${String(call?.method)}'`);
      const args = await this.client.objects.resolveArgs(call.args, call.deps ?? {});
      const value = await (method as (...a: unknown[]) => unknown).apply(h.instance, args);
      return { result: await this.client.objects.store(call.callId, value, call.caller) };
    } catch (e) {
      return { result: { error: TaskError.from(e, where) } };
    }
  }
}
