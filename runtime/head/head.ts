// The head: places lease requests on nodes, declares silent nodes dead, answers status.
// Stateless beyond KV: a restarted head rebuilds its node table from the nodes bucket and the next heartbeats.
import { hostname } from 'node:os';
import { LRUCache } from 'lru-cache';
import { Bus, NO_REPLY, type Handler } from '../bus/bus.ts';
import { Gcs } from '../state/gcs.ts';
import { subjects } from '../protocol/subjects.ts';
import { defaults, serverUrls } from '../base/config.ts';
import { formatBytes } from '../base/bytes.ts';
import { sleep } from '../base/processes.ts';
import {
  place,
  subtract,
  checkDemand,
  checkStrategy,
  allocateGpus,
  type ResourceSet,
  type NodeView,
} from '../scheduling/placement.ts';
import {
  InfeasibleError,
  NoRespondersError,
  PermissionDeniedError,
  WorkerDiedError,
  ProtocolError,
  StaleHeadError,
} from '../base/errors.ts';
import { Leadership } from './leadership.ts';
import { singlePointsOfFailure } from './failure-points.ts';
import { ActorManager } from './actor-manager.ts';
import type { ActorSpec } from '../protocol/actors.ts';
import { CheckpointStore } from '../state/checkpoints.ts';
import {
  checkCheckpointDelete,
  checkpointDeleteSigned,
  isJobCheckpoint,
  jobCheckpointName,
} from '../protocol/checkpoints.ts';
import {
  createSharedObjectStores,
  moveLeadersOff,
  raiseReplicas,
  sharedStoreUsage,
  untilJetStreamAnswers,
  wantedReplicas,
  SHARED_OBJECT_STORES,
  type SharedStore,
} from '../state/buckets.ts';
import { openEnvStore } from '../shipping/env-store.ts';
import { sweepEnvStore } from '../shipping/env-sweep.ts';
import type { ObjectStore } from '@nats-io/obj';
import type { TaskEvent } from '../protocol/tasks.ts';
import type { HeadStatus, NodeInfo, StoreStatus } from '../protocol/cluster.ts';
import type {
  Busy,
  HeartbeatMsg,
  LeaseGrant,
  LeaseGrantedMsg,
  LeaseRequest,
  LeaseRequestMsg,
} from '../protocol/leases.ts';
import { checkJobRegistration } from '../protocol/jobs.ts';
import { JobRegistry } from './job-registry.ts';
import { checked, event, malformedCounts, request } from '../protocol/check.ts';
import { SeenTable } from '../protocol/seen-table.ts';
import {
  checkActorCreate,
  checkActorKill,
  checkActorRestart,
  checkHeartbeat,
  checkLeaseAnswer,
  checkLeaseRequestMsg,
  checkNodeInfo,
  checkOwnerDone,
  checkTaskEvents,
  checkTasksQuery,
  checkWorkerDied,
} from '../protocol/schemas.ts';
import { describeVersions, ownVersions, sameVersions, type HelloMsg } from '../protocol/versions.ts';
import { pendingDemands } from './pending-demands.ts';

export interface HeadOptions {
  address: string;
  token: string;
  nodeTimeoutMs?: number;
  /** Silence after which a node is SUSPECT (default defaults.nodeSuspectMs, at most half the timeout). */
  nodeSuspectMs?: number;
  /** The head lease's length (default defaults.headLeaseMs): how long a standby waits for a silent leader. */
  leaseMs?: number;
  /** The other core servers of a bus troupe runs as a NATS cluster: until one of them is up, JetStream is not, and
   * the head waits for it rather than fail. */
  busPeers?: string[];
}

interface NodeState {
  info: NodeInfo;
  available: ResourceSet;
  gpuFree?: number[];
  /** Lease requests sent to it, numbered: a heartbeat whose leaseRequestsSeen reaches the last reflects every one of
   * them (one lost on the way is covered by the next). */
  sent: number;
  lastHb: number;
  alive: boolean;
  /** Silent past the suspect threshold, not yet dead: nothing new goes to it; a heartbeat clears it. */
  suspect: boolean;
  /** Messages it refused as malformed, by type, from its last heartbeat. */
  malformed?: Record<string, number>;
}

interface Pending extends LeaseRequestMsg {
  /** Set when this request starts an actor rather than leasing a worker to a client. */
  actor?: { spec: ActorSpec; incarnation: number };
  since: number;
  granting: boolean;
  /** Node a grant is in flight on. */
  node?: string;
  /** Bumped when a grant is abandoned (its node died): a late answer to an older attempt is ignored. */
  attempt: number;
  failures: number;
}

/** How soon a lease request is asked again of a node still preparing the job's code, or between connections. */
const ASK_AGAIN_MS = 500;
/** How long the head waits for one JetStream answer on a NATS cluster before it asks again (see start()). */
const CLUSTER_JS_TIMEOUT_MS = 2000;

export class Head {
  private bus!: Bus;
  /** Heartbeats on a connection of their own: under a flood of requests they must not queue behind it,
   * or a busy head would declare healthy nodes dead. */
  private hbBus!: Bus;
  private gcs!: Gcs;
  private leadership!: Leadership;
  /** Copies of the cluster state (its KV buckets' replicas), read once this head leads. */
  private stateReplicas = 1;
  private checkpointStore: Promise<CheckpointStore> | undefined;
  /** It waited for another head's lease before it led (a standby), rather than leading from its start. */
  stoodBy = false;
  private readonly nodes = new Map<string, NodeState>();
  /** Every request not yet granted; `waiting` is the subset with no grant in flight, which is all pump() looks at. */
  private readonly queue = new Map<string, Pending>();
  private readonly waiting = new Map<string, Pending>();
  private readonly infeasible: HeadStatus['infeasible'] = [];
  private readonly tasks = new LRUCache<string, TaskEvent>({ max: 10_000 });
  private readonly clientSeen = new SeenTable(10 * defaults.clientTimeoutMs);
  private spreadCursor = 0;
  private timers: NodeJS.Timeout[] = [];
  private stopWatch: (() => void) | undefined;
  private stopping = false;
  private pumping = false;
  private pumpAgain = false;
  private actors!: ActorManager;
  private jobs!: JobRegistry;

  constructor(private readonly o: HeadOptions) {}

  private get timeoutMs(): number {
    return this.o.nodeTimeoutMs ?? defaults.nodeTimeoutMs;
  }

  private get suspectMs(): number {
    return Math.min(this.o.nodeSuspectMs ?? defaults.nodeSuspectMs, this.timeoutMs / 2);
  }

  async start(): Promise<void> {
    this.bus = await Bus.connect({ address: this.o.address, token: this.o.token, name: 'troupe-head', daemon: true });
    this.hbBus = await Bus.connect({
      address: this.o.address,
      token: this.o.token,
      name: 'troupe-head-heartbeats',
      daemon: true,
    });
    void this.watchConnection();
    if (this.o.busPeers?.length)
      await untilJetStreamAnswers(this.bus, (ms) =>
        console.error(
          `troupe: waiting ${Math.round(ms / 1000)} s for JetStream: the bus's NATS cluster needs a second of its ` +
            `servers up (${this.o.busPeers!.join(', ')}): start the joining line there`,
        ),
      );
    // Before anyone joins: the stores every job shares are the head's to create (see buckets.ts), bounded.
    const asked = { checkpoints: defaults.checkpointStoreBytes, runtimeEnvs: defaults.runtimeEnvStoreBytes };
    const bounds = await createSharedObjectStores(this.bus, asked);
    for (const store of Object.keys(asked) as SharedStore[])
      if (asked[store] > 0 && bounds[store] < asked[store])
        console.error(
          `troupe: JetStream could not reserve ${formatBytes(asked[store])} for ${SHARED_OBJECT_STORES[store]}: ` +
            `it holds at most ${formatBytes(bounds[store])} (free disk space where nats-server keeps its data)`,
        );
    // Bound before standing by: a standby that takes over needs no stream made or looked up. A NATS cluster that just
    // lost its JetStream leader with the old head's machine leaves those requests unanswered until it elects another
    // (4.4-7.5 s in our runs of nats-server 2.9.10); what the new head must still ask (watches) is sent again every 2 s
    // meanwhile.
    const jsTimeoutMs = serverUrls(this.o.address).length > 1 ? CLUSTER_JS_TIMEOUT_MS : undefined;
    this.gcs = await Gcs.open(this.bus, jsTimeoutMs);
    this.jobs = await JobRegistry.open(this.bus, this.gcs.jobs, jsTimeoutMs);
    // A standby waits here, serving nothing, until the leader stops renewing its lease.
    const leaseMs = this.o.leaseMs ?? defaults.headLeaseMs;
    this.leadership = await Leadership.open(this.hbBus, leaseMs);
    const leads = await this.leadership.acquire((l) => {
      this.stoodBy = true;
      console.log(
        `troupe: standby head: head ${l.headId} on ${l.hostname} (pid ${l.pid}) leads with term ${l.term}; ` +
          `taking over once it leaves its lease unrenewed for ${leaseMs} ms`,
      );
    });
    if (!leads) return; // stopped while it stood by
    // First, before anything else is served: every joiner checks its versions against ours.
    this.serve(subjects.headHello, (hello: HelloMsg | undefined) => {
      if (!sameVersions(hello, ownVersions()))
        console.error(
          `troupe: refusing a ${typeof hello?.role === 'string' ? hello.role.slice(0, 20) : 'joiner'} that runs ` +
            `${describeVersions(hello)}; this head runs ${describeVersions(ownVersions())}`,
        );
      return { ...ownVersions() };
    });
    const bus = this.bus;
    // The node table: what the bucket holds, then each change after it. The watch is made in the background: it needs
    // JetStream's meta leader, which may be going through an election while the head takes over.
    const onNode = (key: string, info: NodeInfo | undefined) =>
      this.whileLeading(() => {
        if (info === undefined) return this.onNodeRecord(key, undefined);
        try {
          this.onNodeRecord(key, checked(checkNodeInfo, info) as NodeInfo);
        } catch {
          // counted and logged by checked(); a record we cannot read places nothing
        }
      });
    const nodes = await this.gcs.nodes.read();
    for (const [key, info] of nodes.entries) onNode(key, info);
    void this.watchNodes(onNode, nodes.revision);
    this.stateReplicas = (await this.gcs.actors.kv.status().catch(() => undefined))?.replicas ?? 1;
    await this.jobs.load();
    this.serve(subjects.headJobRegister, (req: unknown) => {
      const { job, key } = checkJobRegistration(req);
      this.clientSeen.set(job.driver, Date.now()); // its driver speaks: alive, before its first heartbeat is heard
      return this.jobs.register(job, key);
    });
    this.actors = new ActorManager({
      bus,
      gcs: this.gcs,
      term: () => this.term,
      jobOf: (named, what) => this.jobs.recordOf(named, what),
      place: (demand, strategy) => place(this.views(), demand, strategy),
      enqueue: (req) => {
        this.addRequest({ ...req, since: Date.now(), granting: false, failures: 0, attempt: 0 });
        this.pump();
      },
      dequeue: (reqId) => {
        if (!this.queue.get(reqId)?.granting) this.removeRequest(reqId);
      },
      checkpoints: () => this.checkpoints(),
    });
    await this.actors.load();
    this.serve(
      subjects.headCheckpointDelete,
      request(checkCheckpointDelete, async (req) => {
        const job = this.jobs.recordOf(req.job, 'a checkpoint delete request');
        if (!this.jobs.signedByDriver(job.id, checkpointDeleteSigned(job.id, req.name), req.proof))
          throw new PermissionDeniedError(
            `only the driver that registered job ${job.id} may have its checkpoints removed (the request was not ` +
              "signed by that driver's user)",
          );
        if (!isJobCheckpoint(job.id, req.name))
          throw new PermissionDeniedError(
            `a driver may remove only its job's checkpoints (${jobCheckpointName(job.id, '…')}), ` +
              `not '${req.name.slice(0, 100)}'`,
          );
        await (await this.checkpoints()).delete(req.name);
        return 'ok';
      }),
    );
    this.serve(
      subjects.headActorCreate,
      request(checkActorCreate, (req) => this.actors.create(req.spec as ActorSpec)),
    );
    this.serve(
      subjects.headActorKill,
      request(checkActorKill, (req) => this.actors.kill(req.actorId, req.noRestart !== false, req.cause, req.by)),
    );
    this.serve(
      subjects.headActorRestart,
      request(checkActorRestart, (req) => this.actors.restartHeld(req.actorId, req.supervisor)),
    );
    this.serve(
      subjects.headActorsOfOwner,
      request(checkOwnerDone, (req) => this.actors.ownerGone(req.owner, 'its owner shut down')),
    );
    this.on(
      bus,
      subjects.evtWorkerDied,
      event(checkWorkerDied, (m) => this.actors.onWorkerDied(m)),
    );
    this.on(
      this.hbBus,
      subjects.hbNodeAll,
      event(checkHeartbeat, (hb) => this.onHeartbeat(hb)),
    );
    this.on(this.hbBus, subjects.hbProcAll, (_b, subject) =>
      this.clientSeen.set(subject.slice(subjects.hbProc('').length), Date.now()),
    );
    this.on(
      bus,
      subjects.evtTasks,
      event(checkTaskEvents, (events) => {
        for (const e of events) this.tasks.set(e.taskId, e as TaskEvent);
      }),
    );
    this.serve(
      subjects.headLease,
      request(checkLeaseRequestMsg, (req) => this.onLeaseRequest(req as LeaseRequestMsg | { cancel: string })),
    );
    this.serve(subjects.headStatus, async () => ({ ...this.status(), stores: await this.storeUsage() }));
    this.serve(
      subjects.headTasks,
      request(checkTasksQuery, (req) => [...this.tasks.values()].slice(0, req?.limit ?? 1000)),
    );
    // A head whose lease lapsed skips them (whileLeading): after a pause, detectFailures() then finds itself late and
    // gives every node a full timeout, as after any stall.
    const sweep = Math.max(50, Math.min(250, this.timeoutMs / 4));
    this.timers.push(setInterval(() => this.whileLeading(() => this.detectFailures()), sweep));
    this.timers.push(setInterval(() => this.whileLeading(() => this.dropSilentClients()), 2000));
    this.timers.push(setInterval(() => this.whileLeading(() => void this.sweepEnvStore()), defaults.envSweepMs));
    this.timers.push(setInterval(() => this.whileLeading(() => void this.tendStreams()), 10_000));
    void this.tendStreams();
    console.log(
      `troupe: head ${this.leadership.headId} up and leading with term ${this.term}, ` +
        `${describeVersions(ownVersions())} (node suspect after ${this.suspectMs} ms, dead after ${this.timeoutMs} ms)`,
    );
  }

  /** Serves a head subject as the leader only: a request that comes while the lease is unconfirmed (this head was
   * paused, or the bus away) waits for a renewal; a deposed head leaves it to the leader to answer. */
  private serve(subject: string, handler: Handler): void {
    this.bus.serve(subject, (body, msg) =>
      this.leadership.valid
        ? handler(body, msg)
        : this.leadership.confirm().then((leads) => (leads ? handler(body, msg) : NO_REPLY)),
    );
  }

  /** Listens as the leader only, as serve() does. */
  private on(bus: Bus, subject: string, handler: (body: any, subject: string) => void): void {
    bus.on(subject, (body, at) => this.whileLeading(() => handler(body, at)));
  }

  /** Runs fn now if this head leads, after a renewal if its lease is unconfirmed, and never once it is deposed. */
  private whileLeading(fn: () => void): void {
    if (this.leadership.valid) fn();
    else
      void this.leadership.confirm().then((leads) => {
        if (leads) fn();
      });
  }

  /** The fencing term of every message this head sends to nodes. */
  private get term(): number {
    return this.leadership.term;
  }

  /** Resolves, with why, once another head has taken over the lease: this one must stop (daemon.ts starts a new
   * one, as a standby). */
  get deposed(): Promise<string> {
    return this.leadership.lost;
  }

  /** Follows the node table's changes after `revision`, making the watch again until JetStream answers. */
  private async watchNodes(cb: (key: string, info: NodeInfo | undefined) => void, revision: number): Promise<void> {
    for (let told = false; !this.stopping; await sleep(1000))
      try {
        const stop = await this.gcs.nodes.watch(cb, revision);
        if (this.stopping) stop();
        else this.stopWatch = stop;
        return;
      } catch (e) {
        if (!told && !this.stopping) console.error(`troupe: cannot watch the node table yet, trying again: ${e}`);
        told = true;
      }
  }

  async stop(): Promise<void> {
    this.stopping = true;
    for (const t of this.timers) clearInterval(t);
    this.stopWatch?.();
    await this.leadership?.stop();
    await Promise.all([this.bus?.close(), this.hbBus?.close()]);
  }

  private onNodeRecord(nodeId: string, info: NodeInfo | undefined): void {
    const known = this.nodes.get(nodeId);
    if (!info) {
      this.nodes.delete(nodeId);
      return;
    }
    if (info.state === 'DEAD') {
      if (known?.alive) {
        known.info = info; // when it died, for forgetDeadNodes()
        this.declareDead(nodeId, info.cause ?? 'stopped', false);
      } else this.nodes.set(nodeId, { info, available: {}, lastHb: 0, alive: false, sent: 0, suspect: false });
      return;
    }
    // A node of another version (one that skipped the hello) would mis-read our messages: it is refused and fenced.
    const versions = { troupe: info.troupeVersion, protocol: info.protocolVersion };
    if (!sameVersions(versions, ownVersions())) {
      if (known && !known.alive) return;
      const cause =
        `it runs ${describeVersions(versions)}; the head runs ${describeVersions(ownVersions())}: ` +
        'install the same troupe on every machine';
      console.error(`troupe: refusing node ${nodeId}: ${cause}`);
      this.nodes.set(nodeId, { info, available: {}, lastHb: 0, alive: false, sent: 0, suspect: false });
      this.bus.publish(subjects.nodeFenced(nodeId), { cause, startedAt: info.startedAt, term: this.term });
      void this.gcs.nodes
        .put(nodeId, { ...info, state: 'DEAD', deadAt: new Date().toISOString(), cause })
        .catch(() => undefined);
      return;
    }
    // A node (re)registering, or one we learn of after a restart: it gets one full timeout to heartbeat.
    if (!known?.alive || known.info.startedAt !== info.startedAt) {
      this.nodes.set(nodeId, {
        info,
        available: known?.alive ? known.available : { ...info.total },
        lastHb: Date.now(),
        alive: true,
        suspect: false,
        sent: known?.sent ?? 0,
      });
      this.pump();
    }
  }

  private onHeartbeat(hb: HeartbeatMsg): void {
    const n = this.nodes.get(hb.nodeId);
    if (!n) return; // its KV record arrives through the watch
    if (!n.alive) {
      // A new incarnation of it (fenced, it stopped and joined again): its record comes through the KV watch.
      if (hb.startedAt !== undefined && hb.startedAt !== n.info.startedAt) return;
      // Declared dead, yet talking: its work was given up on already, so it must not serve.
      this.bus.publish(subjects.nodeFenced(hb.nodeId), { startedAt: n.info.startedAt, term: this.term });
      return;
    }
    n.lastHb = Date.now();
    const back = n.suspect;
    if (back) {
      n.suspect = false;
      console.error(`troupe: node ${hb.nodeId} is heard again: ALIVE`);
    }
    const grew = back || Object.keys(hb.available).some((k) => (hb.available[k] ?? 0) > (n.available[k] ?? 0));
    // Until the node has seen every lease request we sent, our view is ahead of its heartbeat: keep the smaller
    // numbers.
    const current = typeof hb.leaseRequestsSeen === 'number' && hb.leaseRequestsSeen >= n.sent;
    n.available = current ? hb.available : minOf(n.available, hb.available);
    if (current && hb.gpuFree.every((f) => f <= 1)) n.gpuFree = hb.gpuFree;
    n.malformed = hb.malformed;
    if (grew) this.pump();
  }

  private lastSweep = Date.now();
  /** While our own connection is down we hear nobody: silence then says nothing about the nodes. */
  private deaf = false;

  private async watchConnection(): Promise<void> {
    for await (const s of this.hbBus.nc.status()) {
      if (s.type === 'disconnect') this.deaf = true;
      if (s.type === 'reconnect') {
        this.deaf = false;
        const now = Date.now();
        for (const n of this.nodes.values()) if (n.alive) n.lastHb = now; // a full timeout to be heard again
      }
    }
  }

  private detectFailures(): void {
    const now = Date.now();
    if (this.deaf) {
      this.lastSweep = now;
      return;
    }
    const late = now - this.lastSweep > this.timeoutMs / 2;
    this.lastSweep = now;
    if (late) {
      // We were stalled (GC pause, SIGSTOP, overload): the heartbeats queued meanwhile are unread, so silence proves
      // nothing.
      for (const n of this.nodes.values()) if (n.alive) n.lastHb = now;
      return;
    }
    for (const [nodeId, n] of this.nodes) {
      if (!n.alive) continue;
      const silent = now - n.lastHb;
      if (silent > this.timeoutMs)
        this.declareDead(nodeId, `no heartbeat for ${silent} ms (timeout ${this.timeoutMs} ms)`, true);
      else if (silent > this.suspectMs && !n.suspect) {
        // Maybe a hiccup: stop placing on it, but give up on nothing until the timeout.
        n.suspect = true;
        console.error(`troupe: node ${nodeId} is SUSPECT: no heartbeat for ${silent} ms`);
      }
    }
  }

  private declareDead(nodeId: string, cause: string, writeKv: boolean): void {
    const n = this.nodes.get(nodeId);
    if (!n) return;
    n.alive = false;
    n.suspect = false;
    n.available = {};
    console.error(`troupe: node ${nodeId} is dead: ${cause}`);
    this.bus.publish(subjects.evtNodeDied, { nodeId, cause });
    // Grants in flight on it will never be answered: abandon them (actors count it as a failed start, tasks wait
    // again).
    for (const p of [...this.queue.values()]) {
      if (!p.granting || p.node !== nodeId) continue;
      p.attempt++;
      p.granting = false;
      if (p.actor) {
        this.removeRequest(p.reqId);
        this.actors.onStartFailed(
          p.actor.spec.actorId,
          p.actor.incarnation,
          new WorkerDiedError(`its node ${nodeId} died while it was starting (${cause})`),
        );
      } else {
        this.waiting.set(p.reqId, p);
      }
    }
    this.actors.onNodeDied(nodeId, cause);
    if (writeKv) {
      this.bus.publish(subjects.nodeFenced(nodeId), { cause, startedAt: n.info.startedAt, term: this.term });
      n.info = { ...n.info, state: 'DEAD', deadAt: new Date().toISOString(), cause };
      void this.gcs.nodes.put(nodeId, n.info).catch(() => undefined);
    }
    // Requests that can now never be met fail instead of waiting for ever.
    this.pump();
  }

  private readonly startedAt = Date.now();

  private stores: { usage?: StoreStatus[]; reading?: Promise<void> } = {};

  /** Opened once; a failed open (JetStream recovering) is tried again at the next use. */
  private checkpoints(): Promise<CheckpointStore> {
    return (this.checkpointStore ??= CheckpointStore.open(this.bus).catch((e: unknown) => {
      this.checkpointStore = undefined;
      throw e;
    }));
  }

  /** How full the shared stores are: read again for each status, but a status waits for that at most 250 ms (in a
   * NATS cluster that lost a server, a JetStream request can take seconds) and else says what was read last. */
  private storeUsage(): Promise<StoreStatus[] | undefined> {
    this.stores.reading ??= sharedStoreUsage(this.bus)
      .then(
        (usage) => {
          this.stores.usage = usage;
        },
        () => undefined,
      )
      .finally(() => {
        this.stores.reading = undefined;
      });
    return Promise.race([this.stores.reading, sleep(250)]).then(() => this.stores.usage);
  }

  private envSweeping = false;
  private tending = false;
  /** What JetStream last said to raiseReplicas(), once said. */
  private raiseRefused = '';
  private readonly manifests = new Map<string, string[]>();

  /** On a NATS cluster: streams made while fewer than three JetStream servers were up get their copies once there are
   * three, and their leaders are kept off the server this head talks through (moveLeadersOff()). */
  private async tendStreams(): Promise<void> {
    const server = this.hbBus.nc.info;
    if (!server?.cluster || this.tending) return; // a lone server keeps one copy, and leads every stream
    this.tending = true;
    try {
      if (this.stateReplicas < wantedReplicas(this.bus)) {
        const { fewest, refused, lowered } = await raiseReplicas(this.bus);
        if (lowered.length)
          console.error(
            `troupe: no room for more copies of some stores at their bounds: lowered ${lowered.join(', ')}`,
          );
        if (fewest > this.stateReplicas) console.error(`troupe: the cluster state is now kept in ${fewest} copies`);
        this.stateReplicas = fewest;
        // Asked again every 10 s: said once per change, so that a raise that does not come says why.
        const why = refused.join('; ');
        if (why && why !== this.raiseRefused)
          console.error(`troupe: JetStream keeps some of the cluster state in fewer copies for now: ${why}`);
        this.raiseRefused = why;
      }
      const moved = await moveLeadersOff(this.bus, server.server_name);
      if (moved) console.error(`troupe: ${moved} stream leaders moved off ${server.server_name}, this head's server`);
    } catch (e) {
      console.error(`troupe: could not tend the cluster state's streams: ${(e as Error).message}`);
    } finally {
      this.tending = false;
    }
  }

  /** Deletes the shipped code no job this head knows uses (shipping/env-sweep.ts). */
  private async sweepEnvStore(): Promise<void> {
    if (this.envSweeping) return;
    this.envSweeping = true;
    try {
      this.envStore ??= openEnvStore(this.bus);
      const swept = await sweepEnvStore(await this.envStore, () => this.jobs.envs(), {
        graceMs: defaults.envSweepGraceMs,
        manifests: this.manifests,
      });
      if (swept.deleted.length)
        console.log(
          `troupe: deleted ${swept.deleted.length} objects of shipped code no job uses ` +
            `(${formatBytes(swept.freedBytes)}) from ${SHARED_OBJECT_STORES.runtimeEnvs}`,
        );
    } catch (e) {
      this.envStore = undefined;
      console.error(`troupe: could not sweep ${SHARED_OBJECT_STORES.runtimeEnvs}: ${(e as Error).message}`);
    } finally {
      this.envSweeping = false;
    }
  }
  private envStore: Promise<ObjectStore> | undefined;

  private dropSilentClients(): void {
    const now = Date.now();
    this.clientSeen.forget(now);
    this.actors.forgetDead(now, defaults.deadActorRetentionMs);
    this.forgetDeadNodes(now);
    this.jobs.forgetEnded(
      now,
      defaults.jobRetentionMs,
      (job) => now - (this.clientSeen.get(job.driver) ?? this.startedAt) > defaults.clientTimeoutMs,
      this.actors.jobsInUse(),
    );
    for (const [id, p] of this.queue) {
      if (p.actor) continue; // the actor manager owns these
      const seen = this.clientSeen.get(p.clientId) ?? p.since;
      if (!p.granting && now - seen > defaults.clientTimeoutMs) this.removeRequest(id);
    }
    // Non-detached actors end with their owner, as in Ray.
    for (const owner of this.actors.owners()) {
      const seen = this.clientSeen.get(owner) ?? this.startedAt;
      if (now - seen > defaults.clientTimeoutMs)
        void this.actors.ownerGone(owner, `its owner ${owner} died (silent for ${now - seen} ms)`);
    }
  }

  /** Each start of a node daemon is a new node, so a long-lived cluster (a head started again on its state) would keep
   * the records of dead ones for ever: they go after TROUPE_DEAD_NODE_RETENTION_MS. */
  private forgetDeadNodes(now: number): void {
    for (const [nodeId, n] of this.nodes) {
      if (n.alive || n.info.state !== 'DEAD' || !n.info.deadAt) continue;
      if (now - Date.parse(n.info.deadAt) < defaults.deadNodeRetentionMs) continue;
      this.nodes.delete(nodeId);
      void this.gcs.nodes.delete(nodeId).catch(() => undefined);
    }
  }

  private views(): NodeView[] {
    return [...this.nodes.values()].map((n) => ({
      nodeId: n.info.nodeId,
      alive: n.alive,
      total: n.info.total,
      available: n.available,
      gpuFree: n.gpuFree,
      suspect: n.suspect,
    }));
  }

  private onLeaseRequest(req: LeaseRequestMsg | { cancel: string }): { queued: boolean } {
    if (req && 'cancel' in req) {
      if (!this.queue.get(req.cancel)?.granting) this.removeRequest(req.cancel);
      return { queued: false };
    }
    if (!req || typeof req.reqId !== 'string' || typeof req.clientId !== 'string')
      throw new ProtocolError('lease request needs { reqId, clientId, job, demand }');
    const demand = checkDemand(req.demand); // input from the bus, not necessarily from runtime/core
    // The head's record of the job, not the requester's: it decides which root the worker loads modules from.
    const job = this.jobs.recordOf(req.job, 'a lease request');
    const strategy = checkStrategy(req.strategy);
    const p = place(this.views(), demand, strategy);
    if (p.kind === 'infeasible') {
      this.infeasible.unshift({ demand, message: p.message, at: new Date().toISOString() });
      this.infeasible.length = Math.min(this.infeasible.length, 20);
      throw new InfeasibleError(p.message);
    }
    this.clientSeen.set(req.clientId, Date.now());
    // Only the checked fields: an `actor` in a client's request would start an actor the actor manager never checked.
    const { reqId, clientId } = req;
    this.addRequest({
      reqId,
      clientId,
      demand,
      strategy,
      job,
      since: Date.now(),
      granting: false,
      failures: 0,
      attempt: 0,
    });
    this.pump();
    return { queued: true };
  }

  /** Tries to place every queued request. Grants run concurrently; a node's reply or heartbeat triggers the next
   * pass. */
  private pump(): void {
    if (this.pumping) {
      this.pumpAgain = true;
      return;
    }
    this.pumping = true;
    try {
      do {
        this.pumpAgain = false;
        // One placement per resource shape and pass: once a shape must wait, the rest of that shape waits too
        // (thousands of queued requests stay linear, not quadratic).
        const waiting = new Set<string>();
        for (const p of this.waiting.values()) {
          const shape = JSON.stringify([p.demand, p.strategy]);
          if (waiting.has(shape)) continue;
          const placement = place(this.views(), p.demand, p.strategy, { spreadCursor: this.spreadCursor });
          if (placement.kind === 'wait') {
            waiting.add(shape);
            continue;
          }
          if (placement.kind === 'infeasible') {
            this.removeRequest(p.reqId);
            if (p.actor) this.actors.onInfeasible(p.actor.spec.actorId, p.actor.incarnation, placement.message);
            else this.tell(p, { reqId: p.reqId, error: new InfeasibleError(placement.message) });
            continue;
          }
          this.spreadCursor++;
          this.grantOn(p, placement.nodeId);
        }
      } while (this.pumpAgain);
    } finally {
      this.pumping = false;
    }
  }

  private addRequest(p: Pending): void {
    if (this.queue.has(p.reqId)) return; // a resend
    this.queue.set(p.reqId, p);
    this.waiting.set(p.reqId, p);
  }

  private removeRequest(reqId: string): void {
    this.queue.delete(reqId);
    this.waiting.delete(reqId);
  }

  private pumpScheduled = false;

  /** One pump for a burst of grant replies. */
  private pumpSoon(): void {
    if (this.pumpScheduled) return;
    this.pumpScheduled = true;
    setImmediate(() => {
      this.pumpScheduled = false;
      this.pump();
    });
  }

  private grantOn(p: Pending, nodeId: string): void {
    const n = this.nodes.get(nodeId)!;
    p.granting = true;
    this.waiting.delete(p.reqId);
    p.node = nodeId;
    const attempt = p.attempt;
    n.sent++;
    n.available = subtract(n.available, p.demand);
    if (n.gpuFree && p.demand.GPU) n.gpuFree = allocateGpus(n.gpuFree, p.demand.GPU)?.free ?? n.gpuFree;
    // Actors: no deadline (a constructor may load a model for minutes); the node answers when it is up or has failed,
    // and is asked again while the answer is late (the node joins the repeat to the first start), until it answers or
    // is declared dead. A job's shipped project is fetched outside this request (the node answers `preparing`
    // meanwhile); a node past replyWithinMs takes a task's grant back rather than keep it for nobody.
    const timeoutMs = p.actor ? 0 : 40_000;
    const { clientId, job, demand, actor } = p;
    const req: LeaseRequest = { clientId, job, demand, actor, replyWithinMs: timeoutMs, seq: n.sent, term: this.term };
    const subject = subjects.nodeLease(nodeId);
    const answered = p.actor
      ? this.bus.requestUntilAnswered<LeaseGrant | Busy>(subject, req, { wanted: () => p.attempt === attempt })
      : this.bus.request<LeaseGrant | Busy>(subject, req, { timeoutMs });
    answered.then(
      (answer) => {
        // From the bus: a malformed answer fails this grant like an error would (the node may be rogue).
        const r = checked(checkLeaseAnswer, answer) as LeaseGrant | Busy;
        if (p.attempt !== attempt) {
          // abandoned (its node died); the answer came anyway
          if (!('busy' in r) && p.actor) this.actors.onStarted(p.actor.spec.actorId, -1, r);
          return;
        }
        p.granting = false;
        if ('busy' in r) {
          // Our view was stale; the node's word wins. With its own numbers (GPU ids too) we will not pick it again
          // until it frees something, so trying the other nodes now cannot turn into a busy loop.
          n.available = r.available;
          n.gpuFree = r.gpuFree;
          // The node is fetching the job's project: ask again shortly (it reserved nothing meanwhile).
          if (r.preparing) return this.askAgainSoon(p);
          this.waiting.set(p.reqId, p);
          this.pumpSoon();
          return;
        }
        this.queue.delete(p.reqId);
        if (p.actor) this.actors.onStarted(p.actor.spec.actorId, p.actor.incarnation, r);
        else this.tell(p, { reqId: p.reqId, grant: r });
        this.pumpSoon();
      },
      (e: Error) => {
        // This head was deposed: what it asked no longer counts, and it stops once its renewal fails.
        if (p.attempt !== attempt || e instanceof StaleHeadError) return;
        p.granting = false;
        // Its node is between connections (a reconnect): its heartbeats tell whether it comes back. Not a failed
        // start, which would end the actor: placed again shortly, there or elsewhere.
        if (p.actor && e instanceof NoRespondersError) return this.askAgainSoon(p);
        if (p.actor) {
          this.queue.delete(p.reqId);
          this.actors.onStartFailed(p.actor.spec.actorId, p.actor.incarnation, e);
        } else if (++p.failures >= 3) {
          this.queue.delete(p.reqId);
          this.tell(p, { reqId: p.reqId, error: e });
        } else {
          this.waiting.set(p.reqId, p);
        }
        this.pumpSoon();
      },
    );
  }

  private askAgainSoon(p: Pending): void {
    setTimeout(() => {
      if (this.queue.get(p.reqId) !== p || p.granting) return;
      this.waiting.set(p.reqId, p);
      this.pump();
    }, ASK_AGAIN_MS).unref();
  }

  private tell(p: Pending, msg: LeaseGrantedMsg): void {
    this.bus.publish(subjects.procLeaseGranted(p.clientId), msg);
  }

  status(): HeadStatus {
    const now = Date.now();
    const waiting = pendingDemands(this.queue.values(), now);
    const pending = { pending: waiting.rows, ...(waiting.left ? { pendingLeft: waiting.left } : {}) };
    const standbys = this.leadership.standbys();
    const info = this.bus.nc.info;
    const busStatus = {
      servers: Math.max(1, info?.connect_urls?.length ?? 0),
      cluster: info?.cluster,
      stateReplicas: this.stateReplicas,
    };
    return {
      head: ownVersions(),
      lease: { headId: this.leadership.headId, term: this.term, hostname: hostname(), pid: process.pid },
      standbys,
      bus: busStatus,
      warnings: singlePointsOfFailure({
        natsCluster: !!busStatus.cluster,
        stateReplicas: this.stateReplicas,
        servers: busStatus.servers,
        standbys: standbys.length,
        machines: new Set([...this.nodes.values()].filter((n) => n.alive).map((n) => n.info.hostname)).size,
      }),
      nodes: [...this.nodes.values()].map((n) => ({
        ...n.info,
        state: n.alive ? (n.suspect ? 'SUSPECT' : 'ALIVE') : 'DEAD',
        alive: n.alive,
        available: n.available,
        lastHeartbeatMsAgo: n.lastHb ? now - n.lastHb : -1,
        malformed: n.malformed,
      })),
      malformed: malformedCounts(),
      ...pending,
      infeasible: this.infeasible,
    };
  }
}

function minOf(a: ResourceSet, b: ResourceSet): ResourceSet {
  const out: ResourceSet = {};
  for (const k of new Set([...Object.keys(a), ...Object.keys(b)])) out[k] = Math.min(a[k] ?? 0, b[k] ?? 0);
  return out;
}
