// Hosts actor instances inside a worker process: construct, dispatch method calls in arrival order
// (up to maxConcurrency at once), stop. Policy (restart or not) is the head's business, not ours.
import { decode } from './codec.ts';
import { subjects } from './subjects.ts';
import { TaskError, UsageError } from './errors.ts';
import type { Client } from './client.ts';
import type { Subscription } from './transport.ts';
import type { ActorCall, ActorSpec } from './actor-types.ts';
import type { ObjectLocation } from '../object-store/location.ts';
import { ObjectRef } from '../object-store/object-ref.ts';

/** Marks a class made remote by the actors layer (a well-known symbol: this layer cannot import that one). */
export const REMOTE_CLASS = Symbol.for('troupe.remoteClass');

export interface HostedContext {
  /** Where its output goes (the actor's owner). */
  owner: string;
  /** e.g. "(Trainer pid=1234)". */
  prefix: string;
}

type Loader = (ref: { url: string; exportName: string }, workingDir: string) => Promise<unknown>;
type InContext = <T>(ctx: HostedContext, fn: () => Promise<T>) => Promise<T>;

interface Hosted {
  spec: ActorSpec;
  instance: Record<string, unknown>;
  sub: Subscription;
  queue: Array<{ call: ActorCall; reply: (v: { result: ObjectLocation }) => void }>;
  running: number;
  ctx: HostedContext;
}

export class ActorHost {
  private readonly actors = new Map<string, Hosted>();

  constructor(private readonly client: Client, private readonly load: Loader, private readonly inContext: InContext) {}

  get size(): number {
    return this.actors.size;
  }

  /** Constructs the actor and starts taking calls. Throws TaskError when the constructor throws. */
  async start(spec: ActorSpec): Promise<{ actorId: string }> {
    if (this.actors.has(spec.actorId)) return { actorId: spec.actorId };
    const ctx: HostedContext = { owner: spec.owner, prefix: `(${spec.className} pid=${process.pid})` };
    const instance = await this.inContext(ctx, async () => {
      let Cls: unknown;
      try {
        Cls = await this.load(spec.cls, spec.workingDir);
        if (typeof Cls !== 'function' || !(REMOTE_CLASS in Cls)) throw new UsageError(`${spec.cls.url} exports '${spec.cls.exportName}', which is not a @remote actor class`);
        const args = await this.resolveArgs(spec.args, spec.deps);
        return new (Cls as unknown as new (...a: unknown[]) => Record<string, unknown>)(...args);
      } catch (e) {
        throw TaskError.from(e, `${spec.className} constructor`);
      }
    });
    const hosted: Hosted = { spec, instance, queue: [], running: 0, ctx, sub: undefined as unknown as Subscription };
    hosted.sub = this.client.bus.serve(subjects.actor(spec.actorId), (call: ActorCall) =>
      new Promise((reply) => { hosted.queue.push({ call, reply }); this.drain(hosted); }));
    await this.client.bus.flush(); // calls may come the moment the head says ALIVE
    this.actors.set(spec.actorId, hosted);
    return { actorId: spec.actorId };
  }

  stop(actorId: string): void {
    const h = this.actors.get(actorId);
    if (!h) return;
    h.sub.unsubscribe();
    this.actors.delete(actorId);
  }

  /** Runs queued calls in arrival order, at most maxConcurrency at a time. */
  private drain(h: Hosted): void {
    while (h.running < Math.max(1, h.spec.maxConcurrency) && h.queue.length) {
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
      const method = typeof call?.method === 'string' && !call.method.startsWith('_') && call.method !== 'constructor' ? h.instance[call.method] : undefined;
      if (typeof method !== 'function') throw new UsageError(`${h.spec.className} has no method '${String(call?.method)}'`);
      const args = await this.resolveArgs(call.args, call.deps ?? {});
      const value = await (method as (...a: unknown[]) => unknown).apply(h.instance, args);
      return { result: await this.client.objects.store(call.callId, value) };
    } catch (e) {
      return { result: { error: TaskError.from(e, where) } };
    }
  }

  /** Decodes arguments, replacing top-level refs by their values (locations known in deps, or asked for). */
  private async resolveArgs(bytes: Uint8Array, deps: Record<string, ObjectLocation>): Promise<unknown[]> {
    const args = decode<unknown[]>(bytes);
    if (!Array.isArray(args)) throw new TypeError('arguments must be an array');
    for (let i = 0; i < args.length; i++) {
      const a = args[i];
      if (a instanceof ObjectRef) args[i] = deps[a.id] ? await this.client.objects.load(a.id, deps[a.id]) : await this.client.get(a);
    }
    return args;
  }
}
