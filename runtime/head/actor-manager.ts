// The head's actor manager: creates actors through the head's placement queue, tracks their lifecycle
// (PENDING → ALIVE → RESTARTING → DEAD) in KV, restarts them within maxRestarts, ends them with their owner.
// An actor with a supervisor is not restarted here: the head holds it RESTARTING and its supervisor decides.
import type { Bus } from '../bus/bus.ts';
import type { Gcs } from '../state/gcs.ts';
import { subjects } from '../protocol/subjects.ts';
import { TaskError, UsageError, InfeasibleError, ProtocolError } from '../base/errors.ts';
import {
  checkDemand,
  checkStrategy,
  type Placement,
  type ResourceSet,
  type SchedulingStrategy,
} from '../scheduling/placement.ts';
import type { ActorInfo, ActorSpec, ActorStateEvent } from '../protocol/actors.ts';
import type { CheckpointStore } from '../state/checkpoints.ts';
import { nameKey } from '../state/gcs.ts';
import { isPlain } from '../protocol/objects.ts';
import type { LeaseGrant, WorkerDiedMsg } from '../protocol/leases.ts';
import type { JobRef } from '../protocol/jobs.ts';
import { checkActorId } from '../protocol/ids.ts';
import { checked } from '../protocol/check.ts';
import { checkActorIds } from '../protocol/schemas.ts';

/** What the manager needs from the head. */
export interface ActorManagerHost {
  bus: Bus;
  gcs: Gcs;
  /** The head's fencing term, which its messages to nodes carry. */
  term(): number;
  place(demand: ResourceSet, strategy: SchedulingStrategy): Placement;
  enqueue(req: {
    reqId: string;
    clientId: string;
    job: JobRef;
    demand: ResourceSet;
    strategy: SchedulingStrategy;
    actor: { spec: ActorSpec; incarnation: number };
  }): void;
  dequeue(reqId: string): void;
  /** The head's record of the job a message names (JobRegistry.recordOf); throws when it is not registered. */
  jobOf(named: unknown, what: string): JobRef;
  checkpoints(): Promise<CheckpointStore>;
}

const NAME = /^[A-Za-z0-9_-]{1,100}$/;

export class ActorManager {
  private readonly actors = new Map<string, ActorInfo>();
  /** Names of live actors, reserved synchronously: two creates racing for one name cannot both win. */
  private readonly names = new Map<string, string>();
  /** Creates whose record is being stored: a resend waits for it. */
  private readonly storing = new Map<string, Promise<void>>();
  /** Per supervisor: the actors it supervises, which end with it. */
  private readonly supervised = new Map<string, Set<string>>();

  constructor(private readonly h: ActorManagerHost) {}

  /** After a head restart: the rest are placed again; ALIVE actors are checked with their nodes once heartbeats
   * flow. */
  async load(): Promise<void> {
    const waiting: ActorInfo[] = [];
    for (const a of await this.h.gcs.actors.list()) {
      if (!a?.actorId || !a.spec) continue;
      if (a.state === 'DEAD') a.deadAt ??= new Date().toISOString(); // a record from before deadAt: kept from now
      this.add(a);
      if (a.name && a.state !== 'DEAD') this.names.set(nameKey(a.namespace, a.name), a.actorId);
      // One held for its supervisor waits for it, as before the head went.
      if (a.state === 'PENDING' || (a.state === 'RESTARTING' && !a.held)) waiting.push(a);
    }
    await this.stopUnrecorded(new Set(waiting.map((a) => a.actorId)));
    for (const a of waiting) this.schedule(a);
    setTimeout(() => void this.verifyAlive(), 1000).unref();
  }

  /** An instance the last head started but had not recorded as ALIVE (it was killed between the two) still runs on
   * its node: stopped before the actor is placed again, so that it never runs twice. A node that does not answer is
   * the failure detector's (its actors are placed elsewhere only once it is declared dead). */
  private async stopUnrecorded(ids: Set<string>): Promise<void> {
    if (ids.size === 0) return;
    const nodes = (await this.h.gcs.nodes.list()).filter((n) => n?.state !== 'DEAD' && typeof n?.nodeId === 'string');
    await Promise.all(
      nodes.map(async ({ nodeId }) => {
        let held: string[];
        try {
          held = checked(checkActorIds, await this.h.bus.request(subjects.nodeActors(nodeId), {}, { timeoutMs: 3000 }));
        } catch {
          return;
        }
        for (const actorId of held.filter((id) => ids.has(id)))
          await this.h.bus
            .request(subjects.nodeActorStop(nodeId), { actorId, term: this.h.term() })
            .catch(() => undefined);
      }),
    );
  }

  /** Actors whose worker died while no head was listening: their node no longer holds them. */
  private async verifyAlive(): Promise<void> {
    const byNode = new Map<string, ActorInfo[]>();
    for (const a of this.actors.values())
      if (a.state === 'ALIVE' && a.nodeId) byNode.set(a.nodeId, [...(byNode.get(a.nodeId) ?? []), a]);
    for (const [nodeId, list] of byNode) {
      let held: string[];
      try {
        held = checked(checkActorIds, await this.h.bus.request(subjects.nodeActors(nodeId), {}, { timeoutMs: 3000 }));
      } catch {
        continue;
      } // a silent node is the failure detector's
      for (const a of list)
        if (a.state === 'ALIVE' && !held.includes(a.actorId))
          this.died(a, `its worker on node ${nodeId} died while the head was down`);
    }
  }

  async create(spec: ActorSpec): Promise<{ actorId: string }> {
    checkActorId(spec?.actorId, 'an actor spec');
    if (this.actors.has(spec.actorId)) {
      // A resend (its driver did not hear the answer): answered once the first is stored, as the first is.
      await this.storing.get(spec.actorId);
      return { actorId: spec.actorId };
    }
    checkSpec(spec);
    // Its worker loads code from the root its driver registered, not from one this message names.
    spec.job = this.h.jobOf(spec.job, 'an actor spec');
    spec.demand = checkDemand(spec.demand);
    spec.strategy = checkStrategy(spec.strategy);
    if (spec.name !== undefined && !NAME.test(spec.name))
      throw new UsageError(`actor name ${JSON.stringify(spec.name)}: use 1-100 letters, digits, '_' or '-'`);
    if (!NAME.test(spec.namespace))
      throw new UsageError(`namespace ${JSON.stringify(spec.namespace)}: use 1-100 letters, digits, '_' or '-'`);
    const placement = this.h.place(spec.demand, spec.strategy);
    if (placement.kind === 'infeasible')
      throw new InfeasibleError(`cannot create actor ${spec.className}: ${placement.message}`);
    if (spec.name) {
      const key = nameKey(spec.namespace, spec.name);
      const holderId = this.names.get(key);
      const holder = holderId ? this.actors.get(holderId) : undefined;
      // A reserved name whose actor is still being created counts as taken too.
      if (holderId && holder?.state !== 'DEAD')
        throw new UsageError(
          `an actor named '${spec.name}' already exists in namespace '${spec.namespace}' ` +
            `(${holder?.className ?? 'being created'} ${holderId})`,
        );
      this.names.set(key, spec.actorId); // before any await
      await this.h.gcs.names.put(key, { actorId: spec.actorId });
    }
    const info: ActorInfo = {
      actorId: spec.actorId,
      className: spec.className,
      name: spec.name,
      namespace: spec.namespace,
      state: 'PENDING',
      restarts: 0,
      incarnation: 0,
      lifetime: spec.lifetime,
      isolation: spec.isolation,
      owner: spec.owner,
      createdAt: new Date().toISOString(),
      spec,
    };
    this.add(info);
    // Stored before the answer (and before it is placed): a head killed after answering would leave the driver with
    // an actor no later head knows of. A driver that hears no answer asks again, and a later head knows the id.
    const stored = this.h.gcs.actors.put(info.actorId, info);
    this.storing.set(info.actorId, stored);
    try {
      await stored;
    } catch (e) {
      this.drop(info);
      if (spec.name) this.names.delete(nameKey(spec.namespace, spec.name));
      throw new Error(`could not store actor ${spec.actorId}: ${(e as Error).message}`, { cause: e });
    } finally {
      this.storing.delete(info.actorId);
    }
    this.announce(info);
    if (info.state === 'PENDING') this.schedule(info); // not if it was killed (or its owner ended) meanwhile
    return { actorId: spec.actorId };
  }

  /** Forgets the actors DEAD for longer than `retentionMs`: their records go from memory and KV. Their supervisors'
   * lists drop them; a DEAD supervisor's own list goes with it. */
  forgetDead(now: number, retentionMs: number): void {
    for (const a of this.actors.values()) {
      if (a.state !== 'DEAD' || !a.deadAt || now - Date.parse(a.deadAt) < retentionMs) continue;
      this.drop(a);
      void this.h.gcs.actors.delete(a.actorId).catch(() => undefined); // still there: the next head's sweep
    }
  }

  /** add() undone. */
  private drop(a: ActorInfo): void {
    this.actors.delete(a.actorId);
    this.supervised.delete(a.actorId);
    if (a.spec.supervisor !== undefined) this.supervised.get(a.spec.supervisor)?.delete(a.actorId);
  }

  private add(a: ActorInfo): void {
    this.actors.set(a.actorId, a);
    const sup = a.spec.supervisor;
    if (sup !== undefined) this.supervised.set(sup, (this.supervised.get(sup) ?? new Set()).add(a.actorId));
  }

  private schedule(a: ActorInfo): void {
    this.h.enqueue({
      reqId: reqIdOf(a),
      clientId: a.owner,
      // A spec stored before jobs bound workers: its owner stands for its job.
      job: a.spec.job ?? { id: a.owner, driver: a.owner, root: a.spec.workingDir },
      demand: a.spec.demand,
      strategy: a.spec.strategy,
      actor: { spec: a.spec, incarnation: a.incarnation },
    });
  }

  /** The node started it. An instance nobody wants any more (killed, or an older incarnation) is stopped at once. */
  onStarted(actorId: string, incarnation: number, grant: LeaseGrant): void {
    const a = this.actors.get(actorId);
    if (!a || a.incarnation !== incarnation || a.state === 'DEAD') {
      void this.h.bus
        .request(subjects.nodeActorStop(grant.nodeId), { actorId, leaseId: grant.leaseId, term: this.h.term() })
        .catch(() => undefined);
      return;
    }
    // A restarted actor keeps the cause of its last death: `troupe list actors` shows why it restarted.
    Object.assign(a, {
      state: 'ALIVE',
      nodeId: grant.nodeId,
      workerId: grant.workerId,
      leaseId: grant.leaseId,
      pid: grant.pid,
      backend: grant.backend,
      direct: grant.direct,
      cause: a.restarts ? a.cause : undefined,
    });
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
    const threw =
      error instanceof TaskError ? `its constructor threw ${error.remoteName}: ${error.message}` : undefined;
    // A supervisor counts a throwing constructor against its restart intensity, as OTP does a failed start.
    if (threw && a.spec.supervisor === undefined) void this.end(a, threw);
    else void this.died(a, threw ?? `it could not be started: ${error.message}`);
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

  /** kill(handle): with noRestart it is DEAD for good; otherwise it counts as a crash (restarts if it has restarts
   * left,
   * or is held for its supervisor). Supervisors and crashing actors say why in `cause`. */
  async kill(actorId: string, noRestart: boolean, cause = 'it was killed by kill()', by?: string): Promise<void> {
    const a = this.actors.get(checkActorId(actorId, 'a kill request'));
    if (!a) throw new UsageError(`no actor ${actorId}`);
    if (typeof cause !== 'string') throw new ProtocolError('cause must be a string');
    if (a.state === 'DEAD') return;
    // Stopped for good by anyone but its supervisor: a normal exit, which its supervisor judges by its restart type.
    const normal =
      noRestart &&
      a.spec.supervisor !== undefined &&
      by !== a.spec.supervisor &&
      this.actors.get(a.spec.supervisor)?.state !== 'DEAD';
    if (noRestart && !normal) return this.end(a, cause);
    if (a.state !== 'ALIVE') return; // already (re)starting
    // Stop this instance before a new one can start, so the two never serve at once.
    await this.stopInstance(a, this.instanceOf(a)!);
    // Reply only once RESTARTING is published: a caller then hears of it before it can send to the stopped instance.
    await this.died(a, cause, normal);
  }

  /** Its supervisor restarts an actor the head held for it. */
  async restartHeld(actorId: string, supervisor: string): Promise<{ state: string }> {
    const a = this.actors.get(checkActorId(actorId, 'a restart request'));
    if (!a) throw new UsageError(`no actor ${actorId}`);
    if (a.spec.supervisor !== supervisor) throw new UsageError(`actor ${actorId} is not supervised by ${supervisor}`);
    if (a.state === 'RESTARTING' && a.held) {
      a.held = false;
      a.normal = undefined;
      const saved = this.save(a);
      this.schedule(a);
      await saved;
    }
    return { state: a.state };
  }

  private instanceOf(a: ActorInfo): { nodeId: string; leaseId?: string } | undefined {
    return a.state === 'ALIVE' ? { nodeId: a.nodeId!, leaseId: a.leaseId } : undefined;
  }

  /** graceMs: how long the instance may take in onStop() (its spec's shutdownMs). */
  private stopInstance(a: ActorInfo, at: { nodeId: string; leaseId?: string }): Promise<unknown> {
    const graceMs = a.spec.shutdownMs ?? 0;
    return this.h.bus
      .request(
        subjects.nodeActorStop(at.nodeId),
        { actorId: a.actorId, leaseId: at.leaseId, graceMs, term: this.h.term() },
        { timeoutMs: graceMs + 5000 },
      )
      .catch(() => undefined);
  }

  /** The owner of non-detached actors shut down or went silent: they go with it (as in Ray). */
  async ownerGone(owner: string, why: string): Promise<void> {
    for (const a of [...this.actors.values()]) {
      if (a.owner === owner && a.lifetime !== 'detached' && a.state !== 'DEAD') await this.end(a, why);
    }
  }

  /** The jobs of actors not DEAD: a job is not forgotten while one of its actors may still run or restart. */
  jobsInUse(): Set<string> {
    const out = new Set<string>();
    for (const a of this.actors.values()) if (a.state !== 'DEAD' && a.spec.job) out.add(a.spec.job.id);
    return out;
  }

  /** Owners of live, non-detached actors. */
  owners(): Set<string> {
    const out = new Set<string>();
    for (const a of this.actors.values()) if (a.lifetime !== 'detached' && a.state !== 'DEAD') out.add(a.owner);
    return out;
  }

  /** It died: restart it if it has restarts left, else it ends; a supervised one waits for its supervisor.
   * Resolves once the new state is saved and published. */
  private died(a: ActorInfo, cause: string, normal = false): Promise<void> {
    if (a.state === 'DEAD') return Promise.resolve();
    const supervisor = a.spec.supervisor !== undefined ? this.actors.get(a.spec.supervisor) : undefined;
    if (a.spec.supervisor !== undefined && (!supervisor || supervisor.state === 'DEAD'))
      return this.end(a, `${cause}; its supervisor is gone`);
    const max = a.spec.maxRestarts;
    if (!supervisor && max !== -1 && a.restarts >= max)
      return this.end(a, max === 0 ? cause : `${cause}; it had used all ${max} restart${max === 1 ? '' : 's'}`);
    this.h.dequeue(reqIdOf(a));
    Object.assign(a, {
      state: 'RESTARTING',
      cause,
      held: !!supervisor,
      normal: normal || undefined,
      restarts: a.restarts + 1,
      incarnation: a.incarnation + 1,
      nodeId: undefined,
      workerId: undefined,
      leaseId: undefined,
      pid: undefined,
      backend: undefined,
      direct: undefined,
    });
    const saved = this.save(a);
    if (!supervisor) this.schedule(a);
    return saved;
  }

  /** DEAD for good: its instance stops, its checkpoint goes, and so do the actors it supervised. */
  private async end(a: ActorInfo, cause: string): Promise<void> {
    this.h.dequeue(reqIdOf(a));
    const instance = this.instanceOf(a);
    Object.assign(a, { state: 'DEAD', cause, held: false, normal: undefined, deadAt: new Date().toISOString() });
    await this.save(a);
    if (instance) await this.stopInstance(a, instance);
    void this.h
      .checkpoints()
      .then((c) => c.delete(a.actorId))
      .catch(() => undefined);
    for (const id of this.supervised.get(a.actorId) ?? []) {
      const child = this.actors.get(id);
      if (child && child.state !== 'DEAD')
        await this.end(child, `its supervisor ${a.className} ${a.actorId} ended: ${cause}`);
    }
    if (a.name) {
      const key = nameKey(a.namespace, a.name);
      if (this.names.get(key) === a.actorId) {
        this.names.delete(key);
        await this.h.gcs.names.delete(key).catch(() => undefined);
      }
    }
  }

  /** KV first, then the event: a caller that reads KV after the event sees the new state. */
  private async save(a: ActorInfo): Promise<void> {
    await this.h.gcs.actors.put(a.actorId, a).catch((e) => console.error('troupe: could not save actor state:', e));
    this.announce(a);
  }

  private announce(a: ActorInfo): void {
    const ev: ActorStateEvent = {
      actorId: a.actorId,
      state: a.state,
      incarnation: a.incarnation,
      cause: a.cause,
      supervisor: a.spec.supervisor,
      held: a.held,
      normal: a.normal,
      direct: a.direct,
      workerId: a.state === 'ALIVE' ? a.workerId : undefined,
    };
    this.h.bus.publish(subjects.evtActorState, ev);
  }
}

/** A spec from the bus, not necessarily from runtime/core: every field the head and the worker rely on. */
function checkSpec(spec: ActorSpec): void {
  const int = (v: unknown, min: number) => Number.isInteger(v) && (v as number) >= min;
  if (!int(spec.maxRestarts, -1) || !int(spec.maxTaskRetries, -1))
    throw new UsageError('maxRestarts and maxTaskRetries must be whole numbers >= -1');
  if (!int(spec.maxConcurrency, 1)) throw new UsageError('maxConcurrency must be a whole number >= 1');
  if (spec.isolation !== 'process' && spec.isolation !== 'shared')
    throw new UsageError("isolation must be 'process' or 'shared'");
  if (spec.lifetime !== 'owned' && spec.lifetime !== 'detached')
    throw new UsageError("lifetime must be 'owned' or 'detached'");
  if (
    typeof spec.cls?.url !== 'string' ||
    typeof spec.cls.exportName !== 'string' ||
    !(spec.args instanceof Uint8Array || (Array.isArray(spec.args) && isPlain(spec.args)))
  ) {
    throw new UsageError(
      'actor spec needs cls { url, exportName } and args: encoded, or a short array of plain values',
    );
  }
  if (typeof spec.owner !== 'string' || typeof spec.workingDir !== 'string' || typeof spec.className !== 'string')
    throw new UsageError('actor spec needs owner, workingDir and className');
  if (spec.supervisor !== undefined) checkActorId(spec.supervisor, "an actor spec's supervisor");
  if (spec.shutdownMs !== undefined && !int(spec.shutdownMs, 0))
    throw new UsageError('shutdownMs must be a whole number >= 0');
  const every = spec.checkpointEvery;
  if (
    every !== undefined &&
    (typeof every !== 'object' ||
      every === null ||
      (every.calls !== undefined && !int(every.calls, 1)) ||
      (every.seconds !== undefined && !(typeof every.seconds === 'number' && every.seconds > 0)))
  ) {
    throw new UsageError('checkpointEvery must be { calls?: whole number >= 1, seconds?: number > 0 }');
  }
}

function reqIdOf(a: ActorInfo): string {
  return `actor-${a.actorId}-${a.incarnation}`;
}
