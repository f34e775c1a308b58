// The head's actor manager: creates actors through the head's placement queue, tracks their lifecycle
// (PENDING → ALIVE → RESTARTING → DEAD) in KV, restarts them within maxRestarts, ends them with their owner.
import type { Bus } from './transport.ts';
import type { Gcs } from './gcs.ts';
import { subjects } from './subjects.ts';
import { TaskError, UsageError, InfeasibleError } from './errors.ts';
import { checkDemand, type Placement, type ResourceSet, type SchedulingStrategy } from './scheduler.ts';
import type { ActorInfo, ActorSpec, ActorStateEvent } from './actor-types.ts';
import type { LeaseGrant, WorkerDiedMsg } from './node-daemon.ts';

/** What the manager needs from the head. */
export interface ActorManagerHost {
  bus: Bus;
  gcs: Gcs;
  place(demand: ResourceSet, strategy: SchedulingStrategy): Placement;
  enqueue(req: { reqId: string; clientId: string; demand: ResourceSet; strategy: SchedulingStrategy; actor: { spec: ActorSpec; incarnation: number } }): void;
  dequeue(reqId: string): void;
}

const NAME = /^[A-Za-z0-9_-]{1,100}$/;

export class ActorManager {
  private readonly actors = new Map<string, ActorInfo>();

  constructor(private readonly h: ActorManagerHost) {}

  /** After a head restart: ALIVE actors stay as they are; the rest are placed again. */
  async load(): Promise<void> {
    for (const a of await this.h.gcs.actors.list()) {
      if (!a?.actorId || !a.spec) continue;
      this.actors.set(a.actorId, a);
      if (a.state === 'PENDING' || a.state === 'RESTARTING') this.schedule(a);
    }
  }

  async create(spec: ActorSpec): Promise<{ actorId: string }> {
    if (typeof spec?.actorId !== 'string' || !/^[0-9a-f]{8,64}$/.test(spec.actorId)) throw new TypeError('actor spec needs a hex actorId');
    if (this.actors.has(spec.actorId)) return { actorId: spec.actorId }; // a resend
    spec.demand = checkDemand(spec.demand);
    if (spec.name !== undefined && !NAME.test(spec.name)) throw new UsageError(`actor name ${JSON.stringify(spec.name)}: use 1-100 letters, digits, '_' or '-'`);
    if (!NAME.test(spec.namespace)) throw new UsageError(`namespace ${JSON.stringify(spec.namespace)}: use 1-100 letters, digits, '_' or '-'`);
    const placement = this.h.place(spec.demand, spec.strategy);
    if (placement.kind === 'infeasible') throw new InfeasibleError(`cannot create actor ${spec.className}: ${placement.message}`);
    if (spec.name) {
      const key = nameKey(spec.namespace, spec.name);
      const holder = await this.h.gcs.names.get(key);
      const alive = holder && this.actors.get(holder.actorId);
      if (alive && alive.state !== 'DEAD') throw new UsageError(`an actor named '${spec.name}' already exists in namespace '${spec.namespace}' (${alive.className} ${alive.actorId})`);
      await this.h.gcs.names.put(key, { actorId: spec.actorId });
    }
    const info: ActorInfo = {
      actorId: spec.actorId, className: spec.className, name: spec.name, namespace: spec.namespace, state: 'PENDING',
      restarts: 0, incarnation: 0, lifetime: spec.lifetime, isolation: spec.isolation, owner: spec.owner,
      createdAt: new Date().toISOString(), spec,
    };
    this.actors.set(spec.actorId, info);
    // Persisted in the background: the head schedules from memory, and callers learn states from events.
    void this.save(info);
    this.schedule(info);
    return { actorId: spec.actorId };
  }

  private schedule(a: ActorInfo): void {
    this.h.enqueue({ reqId: reqIdOf(a), clientId: a.owner, demand: a.spec.demand, strategy: a.spec.strategy, actor: { spec: a.spec, incarnation: a.incarnation } });
  }

  /** The node started it. */
  onStarted(actorId: string, incarnation: number, grant: LeaseGrant): void {
    const a = this.actors.get(actorId);
    if (!a || a.incarnation !== incarnation) return;
    if (a.state === 'DEAD') { // killed while it was starting
      void this.h.bus.request(subjects.nodeActorStop(grant.nodeId), { actorId }).catch(() => undefined);
      return;
    }
    // A restarted actor keeps the cause of its last death: `troupe list actors` shows why it restarted.
    Object.assign(a, { state: 'ALIVE', nodeId: grant.nodeId, workerId: grant.workerId, pid: grant.pid, cause: a.restarts ? a.cause : undefined });
    void this.save(a);
  }

  /** No node can ever host it (its node died and nothing else fits): it ends, whatever its restarts. */
  onInfeasible(actorId: string, incarnation: number, message: string): void {
    const a = this.actors.get(actorId);
    if (a && a.incarnation === incarnation) void this.end(a, `no node can host it: ${message}`);
  }

  /** Starting it failed: a throwing constructor ends it; anything else counts as a death. */
  onStartFailed(actorId: string, incarnation: number, error: Error): void {
    const a = this.actors.get(actorId);
    if (!a || a.incarnation !== incarnation || a.state === 'DEAD') return;
    if (error instanceof TaskError) {
      void this.end(a, `its constructor threw ${error.remoteName}: ${error.message}`);
      return;
    }
    this.died(a, `it could not be started: ${error.message}`);
  }

  onWorkerDied(msg: WorkerDiedMsg): void {
    if (!Array.isArray(msg?.actorIds)) return;
    for (const id of msg.actorIds) {
      const a = this.actors.get(id);
      if (a && a.workerId === msg.workerId) this.died(a, `${msg.cause} on node ${msg.nodeId}`);
    }
  }

  onNodeDied(nodeId: string, cause: string): void {
    for (const a of this.actors.values()) {
      if (a.nodeId === nodeId && a.state === 'ALIVE') this.died(a, `its node ${nodeId} died (${cause})`);
    }
  }

  /** kill(handle): with noRestart it is DEAD for good; otherwise it counts as a crash (restarts if it has restarts left). */
  async kill(actorId: string, noRestart: boolean): Promise<void> {
    const a = this.actors.get(actorId);
    if (!a) throw new UsageError(`no actor ${actorId}`);
    if (a.state === 'DEAD') return;
    const wasOn = a.state === 'ALIVE' ? a.nodeId : undefined;
    if (noRestart) await this.end(a, 'it was killed by kill()');
    else this.died(a, 'it was killed by kill()');
    if (wasOn) await this.h.bus.request(subjects.nodeActorStop(wasOn), { actorId }).catch(() => undefined);
  }

  /** The owner of non-detached actors shut down or went silent: they go with it (as in Ray). */
  async ownerGone(owner: string, why: string): Promise<void> {
    for (const a of [...this.actors.values()]) {
      if (a.owner === owner && a.lifetime !== 'detached' && a.state !== 'DEAD') {
        const wasOn = a.state === 'ALIVE' ? a.nodeId : undefined;
        await this.end(a, why);
        if (wasOn) await this.h.bus.request(subjects.nodeActorStop(wasOn), { actorId: a.actorId }).catch(() => undefined);
      }
    }
  }

  /** Owners of live, non-detached actors. */
  owners(): Set<string> {
    const out = new Set<string>();
    for (const a of this.actors.values()) if (a.lifetime !== 'detached' && a.state !== 'DEAD') out.add(a.owner);
    return out;
  }

  private died(a: ActorInfo, cause: string): void {
    if (a.state === 'DEAD') return;
    const max = a.spec.maxRestarts;
    if (max !== -1 && a.restarts >= max) {
      void this.end(a, max === 0 ? cause : `${cause}; it had used all ${max} restart${max === 1 ? '' : 's'}`);
      return;
    }
    this.h.dequeue(reqIdOf(a));
    Object.assign(a, { state: 'RESTARTING', cause, restarts: a.restarts + 1, incarnation: a.incarnation + 1, nodeId: undefined, workerId: undefined, pid: undefined });
    void this.save(a);
    this.schedule(a);
  }

  private async end(a: ActorInfo, cause: string): Promise<void> {
    this.h.dequeue(reqIdOf(a));
    Object.assign(a, { state: 'DEAD', cause });
    await this.save(a);
    if (a.name) {
      const key = nameKey(a.namespace, a.name);
      const holder = await this.h.gcs.names.get(key).catch(() => undefined);
      if (holder?.actorId === a.actorId) await this.h.gcs.names.delete(key).catch(() => undefined);
    }
  }

  /** KV first, then the event: a caller that reads KV after the event sees the new state. */
  private async save(a: ActorInfo): Promise<void> {
    await this.h.gcs.actors.put(a.actorId, a).catch((e) => console.error('troupe: could not save actor state:', e));
    const ev: ActorStateEvent = { actorId: a.actorId, state: a.state, incarnation: a.incarnation, cause: a.cause };
    this.h.bus.publish(subjects.evtActorState, ev);
  }
}

export function nameKey(namespace: string, name: string): string {
  return `${namespace}.${name}`;
}

function reqIdOf(a: ActorInfo): string {
  return `actor-${a.actorId}-${a.incarnation}`;
}
