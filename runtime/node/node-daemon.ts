// One per machine: advertises resources, leases worker processes (with their GPU ids), owns the node's object store,
// reports worker exits. The head decides where; the node daemon is the authority on what it has free.
import { spawn, type ChildProcess } from 'node:child_process';
import {
  openSync,
  closeSync,
  mkdirSync,
  renameSync,
  rmSync,
  chownSync,
  chmodSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { hostname, userInfo } from 'node:os';
import { join } from 'node:path';
import { createHash, randomBytes } from 'node:crypto';
import { Bus } from '../bus/bus.ts';
import { Gcs, Table } from '../state/gcs.ts';
import { openKv } from '../state/buckets.ts';
import { PROC_HEARTBEAT_MS, subjects } from '../protocol/subjects.ts';
import { defaults, nodeStoreName, troupeHome } from '../base/config.ts';
import type { WorkerUser } from '../base/worker-user.ts';
import {
  fits,
  subtract,
  add,
  allocateGpus,
  releaseGpus,
  checkDemand,
  type ResourceSet,
} from '../scheduling/placement.ts';
import { WorkerDiedError, ProtocolError, WorkerLimitError, StaleHeadError } from '../base/errors.ts';
import { howItExited } from '../base/processes.ts';
import { NodeStore } from '../../object-store/node-store.ts';
import { StoreManager } from '../../object-store/store-manager.ts';
import { removeLeftovers } from '../../object-store/leftovers.ts';
import { checkRange, fetchChunked, makeChunk, recordedSize } from '../../object-store/transfer.ts';
import { checkObjectMessage, parseObjectMessage } from '../protocol/objects.ts';
import { workerCommand } from '../base/launch.ts';
import { lanePath } from '../bus/lane.ts';
import { HEAD_LEASE_BUCKET, HEAD_LEASE_KEY, type HeadLease, type NodeInfo } from '../protocol/cluster.ts';
import type { Busy, HeartbeatMsg, LeaseGrant, WorkerDiedMsg } from '../protocol/leases.ts';
import {
  checkActorStarted,
  checkBlocked,
  checkFenced,
  checkHeadLease,
  checkLeaseRequest,
  checkNodeActorStop,
  checkRelease,
} from '../protocol/schemas.ts';
import { checked, event, malformedCounts, request } from '../protocol/check.ts';
import { SeenTable } from '../protocol/seen-table.ts';
import { checkJob, type JobRef } from '../protocol/jobs.ts';
import { EnvCache, StoreSource, type LocalEnv } from '../shipping/env-cache.ts';
import { checkHeadVersions, ownVersions } from '../protocol/versions.ts';
import { SubmittedJobs } from './submitted-jobs.ts';
import { JobEnvs } from './job-envs.ts';
import { isCredential, issueUser, parseCredential } from '../bus/credential.ts';
import { checkCredentials, CREDENTIALS_SUBJECT, type Credentials } from '../protocol/permissions.ts';
import { checkBusUsersAnswer, type BusUsersAnswer } from '../protocol/bus-servers.ts';
import { CheckpointStore } from '../state/checkpoints.ts';
import { serveWorkerCheckpoints } from './worker-checkpoints.ts';

export interface NodeDaemonOptions {
  /** Chosen by whoever starts the daemon, so it can wait for this node to come up. */
  nodeId: string;
  address: string;
  /** The node (join) credential. Workers and submitted drivers get theirs from the head (`credentials`). */
  token: string;
  isHead: boolean;
  /** The IP other machines reach this node at (shown in status). */
  nodeIp?: string;
  resources: ResourceSet;
  /** What CUDA calls GPU i of `resources.GPU` (default: i), for workers' CUDA_VISIBLE_DEVICES. */
  gpuDevices?: string[];
  sessionDir: string;
  /** Parent of the node's store dir (default /dev/shm). */
  objectStoreRoot: string;
  /** Bytes of shared memory for objects. */
  objectStoreMemory: number;
  /** Parent of the dir objects spill to when memory is full (default: the session dir); false: never spill. */
  spillRoot?: string | false;
  heartbeatMs?: number;
  /** Idle workers kept started ahead of the next lease (default 1). */
  prestartWorkers?: number;
  /** The user workers run as (`--worker-user`), when not the daemon's own: the daemon runs as root. */
  workerUser?: WorkerUser;
}

interface Worker {
  procId: string;
  child: ChildProcess;
  gpuKey: string;
  ready: Promise<void>;
  /** A task worker has at most one; a shared actor worker one per actor. */
  leases: Set<Lease>;
  /** Hosts many lightweight actors; never handed out for tasks. */
  shared: boolean;
  /** Hosts (or hosted) one actor in a process of its own: never reused. */
  dedicated: boolean;
  /** The job it serves for life, from its first lease on: it imports that job's modules, which a later run may have
   * changed. Unset for a spare that has loaded no job code: any job may take it. */
  job?: JobRef;
  boundAt: number;
  /** When its last lease went back (0: never leased): the least recently used idle worker is the one to let go. */
  lastUsed: number;
  /** Settles when the process exits, with how ("exited with code 3", "was killed by SIGKILL"). */
  exited: Promise<string>;
  /** Its lane (runtime/bus/lane.ts), once it said it listens there: task grants name it, so that callers on this
   * machine send it tasks on it. */
  lane?: string;
  /** Lets the runtime env cache evict the copy of the job's project it runs in, once it has exited. */
  releaseEnv?: () => void;
}

interface ActorGrant {
  incarnation: number;
  grant: Promise<LeaseGrant | Busy>;
  /** Once reserved: the lease whose end (a stop, even before the start is done) forgets this. */
  leaseId?: string;
}

interface Lease {
  leaseId: string;
  clientId: string;
  /** Set for an actor's lease: held for the actor's life, owned by the head, not by a client. */
  actorId?: string;
  demand: ResourceSet;
  /** Its task waits in get(): its CPUs are lent out. */
  blocked?: boolean;
  gpuIds: number[];
  worker: Worker;
  grantedAt: number;
}

/** An object owner silent this long is presumed dead and its objects are freed. Longer than for leases: freeing
 * cannot be undone, and a driver deep in synchronous work sends no heartbeat. Workers that exit are seen at once. */
const OWNER_TIMEOUT_MS = 120_000;
const EMPTY = new Uint8Array(0);
/** How often a node asks whether the cluster's credentials changed (for its workers' lanes). */
const LANE_KEYS_MS = 2000;

export class NodeDaemon {
  readonly nodeId: string;
  private readonly startedAt = new Date().toISOString();
  private fence!: (cause: string) => void;
  /** Resolves, with the head's cause, once this node was fenced (declared dead: its work given up on) and has
   * stopped: its workers are gone and its store emptied. Whoever runs it may start a new incarnation. */
  readonly fenced = new Promise<string>((r) => {
    this.fence = r;
  });
  private bus!: Bus;
  private gcs!: Gcs;
  /** Where this node keeps its workers' checkpoints, opened at the first ask. */
  private checkpoints: Promise<CheckpointStore> | undefined;
  /** From the head: what this node's workers use (over IPC, never the environment), and the driver credential, whose
   * identity may open lanes into them. A driver it starts for `troupe job submit` runs with its submitter's. */
  private credentials!: Credentials;
  /** Who may open lanes into our workers: the cluster's worker and driver identities, those made later with `troupe
   * token create` included (none with a plain token, whose lanes prove it by HMAC). Public keys: no secret in them. */
  private laneKeys(): string[] {
    const own = [this.credentials.worker, this.credentials.driver].filter(isCredential);
    if (!own.length) return [];
    return [...new Set([...own.map((c) => parseCredential(c).signer.publicKey), ...this.madeLaneKeys])];
  }
  /** The driver and worker identities the head's machine last named (followLaneKeys), and the digest it gave. */
  private madeLaneKeys: string[] = [];
  private usersDigest = '';
  private readonly store: NodeStore;
  private readonly objects: StoreManager;
  private available: ResourceSet;
  private gpuFree: number[];
  private readonly workers = new Set<Worker>();
  /** Every worker process not yet exited, also those already let go (workers no longer has them): stop() waits for
   * all. */
  private readonly processes = new Set<ChildProcess>();
  private readonly leases = new Map<string, Lease>();
  /** Each actor's lease being granted or held here, by incarnation (see grantOnce). */
  private readonly actorGrants = new Map<string, ActorGrant>();
  private readonly clientSeen = new SeenTable(2 * OWNER_TIMEOUT_MS);
  private timers: NodeJS.Timeout[] = [];
  private stopping = false;
  private stopped?: Promise<void>;
  /** Copies of jobs' projects shipped from other machines, prepared outside lease requests. */
  private envs!: JobEnvs;
  /** Drivers run for `troupe job submit`. */
  private submitted?: SubmittedJobs;
  /** What processes run as the worker user (workers, submitted drivers) get in place of the daemon's home. */
  private userEnv?: NodeJS.ProcessEnv;

  constructor(private readonly o: NodeDaemonOptions) {
    this.nodeId = o.nodeId;
    this.available = { ...o.resources };
    this.gpuFree = Array.from({ length: Math.floor(o.resources.GPU ?? 0) }, () => 1);
    const name = nodeStoreName(o.sessionDir, this.nodeId);
    const spillDir = o.spillRoot === false ? undefined : join(o.spillRoot ?? o.sessionDir, `spill-${name}`);
    this.store = new NodeStore(join(o.objectStoreRoot, name), spillDir);
    this.objects = new StoreManager(this.store, o.objectStoreMemory, this.nodeId);
  }

  get info(): NodeInfo {
    return {
      nodeId: this.nodeId,
      hostname: hostname(),
      address: this.o.nodeIp,
      troupeVersion: ownVersions().troupe,
      protocolVersion: ownVersions().protocol,
      pid: process.pid,
      total: this.o.resources,
      state: 'ALIVE',
      startedAt: this.startedAt,
      objectDir: this.store.dir,
      objectStoreMemory: this.objects.capacity,
      isHead: this.o.isHead,
      workersRunAs: this.o.workerUser ? { user: this.o.workerUser.name, uid: this.o.workerUser.uid } : ownUser(),
    };
  }

  async start(): Promise<void> {
    // What nodes killed on this machine left (never a live node's): shared memory is the scarcest thing they hold.
    const o = this.o;
    const spillRoot = o.spillRoot === false ? undefined : o.spillRoot;
    for (const dir of removeLeftovers({ storeRoot: o.objectStoreRoot, spillRoot, sessionDir: o.sessionDir }))
      console.log(`troupe: removed ${dir}, left by a node daemon that was killed`);
    this.store.init(o.workerUser?.gid);
    mkdirSync(join(this.o.sessionDir, 'logs'), { recursive: true });
    this.bus = await Bus.connect({
      address: this.o.address,
      token: this.o.token,
      name: `troupe-node-${this.nodeId}`,
      daemon: true,
    });
    // Before any other message: a head of another version would mis-read ours (the daemon exits non-zero).
    await checkHeadVersions((hello) => this.bus.request(subjects.headHello, hello, { timeoutMs: 2000 }), {
      self: `this node (${hostname()})`,
      role: 'node',
      address: this.o.address,
    });
    this.credentials = checkCredentials(await this.bus.request(CREDENTIALS_SUBJECT, {}, { timeoutMs: 10_000 }));
    if (o.workerUser) this.userEnv = homeOfTheirOwn(o.workerUser, this.bus.tlsCa);
    this.gcs = await Gcs.open(this.bus);
    await this.followHeadLease();
    this.envs = new JobEnvs(
      new EnvCache(new StoreSource(this.bus), { log: (line) => console.log(line), readers: o.workerUser?.gid }),
    );
    const bus = this.bus;
    bus.serve(subjects.nodeLease(this.nodeId), (req: unknown) => this.grantOnce(req));
    bus.serve(
      subjects.nodeActorStop(this.nodeId),
      request(checkNodeActorStop, (req) => {
        this.checkTerm(req.term, 'an actor stop');
        return this.stopActor(req.actorId, req.leaseId, req.graceMs ?? 0);
      }),
    );
    // After a restart the head asks which actors are really here (some may have died while it was away).
    bus.serve(subjects.nodeActors(this.nodeId), () =>
      [...this.leases.values()].flatMap((l) => (l.actorId ? [l.actorId] : [])),
    );
    bus.serve(
      subjects.nodeRelease(this.nodeId),
      request(checkRelease, (req) => {
        // A task lease goes back when its holder is done with it. An actor's lease ends only by the head's
        // nodeActorStop: actor lease ids are in cluster state every role reads, and a release would kill the actor.
        if (this.leases.get(req.leaseId)?.actorId)
          throw new ProtocolError(`lease ${req.leaseId} holds an actor: only the head ends it (nodeActorStop)`);
        this.release(req.leaseId, !!req.busy);
      }),
    );
    bus.serve(
      subjects.nodeBlocked(this.nodeId),
      request(checkBlocked, (req) => this.setBlocked(req.workerId, req.blocked)),
    );
    this.serveObjects();
    this.submitted = new SubmittedJobs({
      bus,
      gcs: this.gcs,
      nodeId: this.nodeId,
      address: this.o.address,
      runAs: this.o.workerUser && { ...this.o.workerUser, env: this.userEnv! },
      localDir: (ref, dir) => this.envs.cache.localDir(ref, dir),
      hold: (dir) => this.envs.cache.hold(dir),
    });
    await this.submitted.start();
    bus.on(
      subjects.nodeFenced(this.nodeId),
      event(checkFenced, (m) => {
        if (m.startedAt !== undefined && m.startedAt !== this.startedAt) return; // an earlier incarnation's
        if (m.term < this.headTerm) return; // a deposed head's
        const why = typeof m.cause === 'string' ? `: ${m.cause.slice(0, 500)}` : '';
        console.error(`troupe: node ${this.nodeId} was declared dead by the head${why}; stopping its workers`);
        void this.stop('fenced by the head').then(() => this.fence(why));
      }),
    );
    bus.on(subjects.hbProcAll, (_b, subject) =>
      this.clientSeen.set(subject.slice(subjects.hbProc('').length), Date.now()),
    );
    await this.gcs.nodes.put(this.nodeId, this.info);
    const hb = this.o.heartbeatMs ?? defaults.heartbeatMs;
    this.heartbeat();
    this.timers.push(setInterval(() => this.heartbeat(), hb));
    this.timers.push(setInterval(() => this.reclaimOrphanLeases(), 1000));
    // Beats for each live worker: one busy computing for a long time keeps the leases it holds for nested tasks.
    this.timers.push(
      setInterval(() => {
        for (const w of this.workers) this.bus.publish(subjects.hbProc(w.procId), {});
      }, PROC_HEARTBEAT_MS),
    );
    this.timers.push(setInterval(() => void this.followLaneKeys(), LANE_KEYS_MS));
    this.keepSpares();
    console.log(
      `troupe: node ${this.nodeId} up with ${JSON.stringify(this.o.resources)}; object store ${this.store.dir}`,
    );
  }

  /** Asks the head's machine for the cluster's users (answered only when they changed) and tells our workers who may
   * open lanes into them now: a driver credential made with `troupe token create` may, and the lanes of a revoked one
   * close. Without an answer (the head's machine away, or a cluster on a nats-server of the user's, with no
   * identities) the last list stays. */
  private async followLaneKeys(): Promise<void> {
    if (!this.laneKeys().length) return;
    let a: BusUsersAnswer;
    try {
      a = checkBusUsersAnswer(
        await this.bus.request(subjects.headBusUsers, { have: this.usersDigest }, { timeoutMs: LANE_KEYS_MS }),
      );
    } catch {
      return; // asked again next time
    }
    if (!a.users) return;
    this.usersDigest = a.digest;
    this.madeLaneKeys = a.users.filter((u) => u.role === 'driver' || u.role === 'worker').map((u) => u.publicKey);
    const keys = this.laneKeys();
    for (const child of this.processes) if (child.connected) child.send({ type: 'lane-keys', keys }, () => undefined);
  }

  private serveObjects(): void {
    const { bus, objects } = this;
    const node = this.nodeId;
    bus.serve(subjects.nodeObjects(node), () => ({ stats: objects.stats(), objects: objects.list() }));
    // Every message is checked (runtime/protocol/objects.ts) before it touches the store.
    bus.serve(subjects.obj.nodeSeal(node), (body: unknown) => {
      const req = checkObjectMessage('seal', body);
      if (!this.clientSeen.has(req.owner)) this.clientSeen.set(req.owner, Date.now());
      return objects.seal(req.id, req.size, req.owner);
    });
    bus.serve(subjects.obj.nodeRestore(node), (body: unknown) => objects.restore(checkObjectMessage('one', body).id));
    bus.serve(subjects.obj.nodeFetch(node), async (body: unknown) => {
      const req = checkObjectMessage('fetch', body);
      const sources = req.from.filter((n) => n !== node).map((n) => subjects.obj.nodeRead(n));
      // The size is the holders' record (ours, if a copy is here already), never the one the asker names: a wrong
      // one is refused before any byte moves.
      const size = objects.holds(req.id) ? objects.recordedSize(req.id) : await recordedSize(bus, sources, req.id);
      if (size !== req.size)
        throw new ProtocolError(`object ${req.id} is ${size} bytes where it is held, not the ${req.size} asked for`);
      return objects.fetchCopy(req.id, size, req.owner, (write) => fetchChunked(bus, sources, req.id, size, write));
    });
    bus.serve(subjects.obj.nodeRead(node), async (body: unknown) => {
      const req = checkRange(body, (id) => objects.recordedSize(id));
      return makeChunk(req.length ? await this.store.readRange(req.id, req.offset, req.length) : EMPTY, req.size);
    });
    bus.on(subjects.obj.nodeTouch(node), (body: unknown) => {
      const req = parseObjectMessage('one', body);
      if (req) objects.touch(req.id);
    });
    bus.serve(subjects.obj.nodeFree(node), async (body: unknown) => {
      for (const id of checkObjectMessage('free', body).ids) await objects.free(id);
    });
  }

  private heartbeatTimer: NodeJS.Timeout | undefined;
  /** The highest number of the head's lease requests seen: a heartbeat that reaches the last it sent reflects all. */
  private leaseRequestsSeen = 0;
  /** The term of the head lease in KV: a head message of an older term is a deposed head's, and refused. Learnt from
   * KV alone, never from a message, so that no message can raise it and shut the real leader out. */
  private headTerm = 0;
  private stopLeaseWatch?: () => void;

  /** Follows the head lease (every takeover raises its term), until this daemon stops. */
  private async followHeadLease(): Promise<void> {
    const leases = new Table<HeadLease>(await openKv(this.bus, HEAD_LEASE_BUCKET, { history: 1 }));
    this.stopLeaseWatch = await leases.watch((key, value) => {
      if (key !== HEAD_LEASE_KEY || value === undefined) return;
      let lease: HeadLease;
      try {
        lease = checked(checkHeadLease, value);
      } catch {
        return; // counted and logged by checked()
      }
      if (lease.term <= this.headTerm) return;
      this.headTerm = lease.term;
      this.leaseRequestsSeen = 0; // the new head numbers its requests from 1
    });
  }

  private checkTerm(term: number, what: string): void {
    if (term < this.headTerm)
      throw new StaleHeadError(`${what} from a head of term ${term}: the head leading now has term ${this.headTerm}`);
  }

  /** A heartbeat soon: what changed reaches the head quickly, but a burst of grants sends one, not thousands. */
  private heartbeatSoon(): void {
    this.heartbeatTimer ??= setTimeout(() => {
      this.heartbeatTimer = undefined;
      this.heartbeat();
    }, 20);
  }

  private heartbeat(): void {
    if (this.stopping || this.bus.isClosed) return;
    const msg: HeartbeatMsg = {
      nodeId: this.nodeId,
      available: this.available,
      gpuFree: this.gpuFree,
      leaseRequestsSeen: this.leaseRequestsSeen,
      workers: this.workers.size,
      leases: this.leases.size,
      startedAt: this.startedAt,
    };
    const malformed = malformedCounts();
    if (Object.keys(malformed).length) msg.malformed = malformed;
    this.bus.publish(subjects.hbNode(this.nodeId), msg);
  }

  /** Worker processes this node may run at once. */
  private get maxWorkers(): number {
    return defaults.maxWorkersPerNode || Math.max(32, 4 * Math.ceil(this.o.resources.CPU ?? 1));
  }

  /** An actor's lease asked for again (by a head that heard no answer: the request or the answer may be lost) joins
   * the first: one instance per incarnation. Joined until its lease ends, even by a stop while it starts (a new head
   * stops what it has no record of, then asks again under the same incarnation); a busy or failed one is forgotten,
   * since it reserved nothing. */
  private grantOnce(body: unknown): Promise<LeaseGrant | Busy> {
    // The whole request, its actor's spec included, is checked before anything is reserved for it.
    const req = checked(checkLeaseRequest, body);
    this.checkTerm(req.term, 'a lease request');
    this.leaseRequestsSeen = Math.max(this.leaseRequestsSeen, req.seq ?? 0);
    const actorId = req.actor?.spec.actorId;
    if (!actorId) return this.grant(req);
    const first = this.actorGrants.get(actorId);
    if (first?.incarnation === req.actor!.incarnation) return first.grant;
    const entry = { incarnation: req.actor!.incarnation } as ActorGrant;
    const grant = (entry.grant = this.grant(req, (leaseId) => (entry.leaseId = leaseId)));
    this.actorGrants.set(actorId, entry);
    grant.then(
      (g) => {
        if ('busy' in g) this.forgetGrant(actorId, entry);
      },
      () => this.forgetGrant(actorId, entry),
    );
    return grant;
  }

  private forgetGrant(actorId: string, entry: ActorGrant): void {
    if (this.actorGrants.get(actorId) === entry) this.actorGrants.delete(actorId);
  }

  private async grant(
    req: ReturnType<typeof checkLeaseRequest>,
    reserved?: (leaseId: string) => void,
  ): Promise<LeaseGrant | Busy> {
    const job = checkJob(req.job);
    const demand = checkDemand(req.demand);
    const within = Number(req.replyWithinMs);
    // Answered a little before the asker gives up, so that no grant is made for an asker that left.
    const deadline = Number.isFinite(within) && within > 0 ? Date.now() + Math.max(within - 5000, within / 2) : 0;
    // Outside the lease: the first lease of a job from another machine may fetch its project for minutes; meanwhile
    // the head is told to ask again. A package this node cannot provide fails the lease, with an error naming it.
    const local = await this.envs.ready(job);
    if (!local) return { busy: true, preparing: true, available: this.available, gpuFree: this.gpuFree };
    const actor = req.actor;
    let gpus: NonNullable<ReturnType<typeof allocateGpus>>;
    let shared: boolean;
    let worker: Worker | undefined;
    // At most two passes: the second after an idle worker made room for a new one (by exiting).
    for (let pass = 0; ; pass++) {
      const busy: Busy = { busy: true, available: this.available, gpuFree: this.gpuFree };
      if (!fits(this.available, demand)) return busy;
      const got = allocateGpus(this.gpuFree, demand.GPU ?? 0);
      if (!got) return busy;
      gpus = got;
      shared = !!actor && actor.spec.isolation === 'shared' && gpus.ids.length === 0;
      worker = shared
        ? [...this.workers].find((w) => w.shared && w.job?.id === job.id)
        : this.idleWorkerFor(job, gpus.ids.join(','));
      if (worker) break;
      if (gpus.ids.length) this.retireIdleOn(gpus.ids, job);
      if (this.processes.size < this.maxWorkers) break;
      if (pass > 0 || !(await this.retireLeastRecentlyUsed()))
        throw new WorkerLimitError(
          `node ${this.nodeId} runs ${this.processes.size} worker processes, none idle, and may run no more ` +
            '(TROUPE_MAX_WORKERS_PER_NODE): the lease is refused',
        );
    }
    this.available = subtract(this.available, demand);
    this.gpuFree = gpus.free;
    try {
      worker ??= this.spawnWorker(gpus.ids, shared);
      if (!worker.job) this.bind(worker, job, local, demand.CPU ?? 0);
    } catch (e) {
      this.available = add(this.available, demand);
      this.gpuFree = releaseGpus(this.gpuFree, gpus.ids, demand.GPU ?? 0);
      throw new WorkerDiedError(`could not start a worker: ${(e as Error).message}`, { cause: e });
    }
    if (actor && !shared) worker.dedicated = true;
    this.keepSpares();
    const lease: Lease = {
      leaseId: randomBytes(8).toString('hex'),
      clientId: req.clientId,
      actorId: actor?.spec.actorId,
      demand,
      gpuIds: gpus.ids,
      worker,
      grantedAt: Date.now(),
    };
    worker.leases.add(lease); // reserve before awaiting, so no second lease takes it
    this.leases.set(lease.leaseId, lease);
    reserved?.(lease.leaseId);
    try {
      await untilDeadline(worker.ready, deadline);
    } catch (e) {
      this.release(lease.leaseId);
      throw new WorkerDiedError(`worker for the lease failed to start: ${(e as Error).message}`, { cause: e });
    }
    let backend: string | undefined;
    let direct: string | undefined;
    if (actor) {
      try {
        // Constructors may load models for minutes: no timeout, but the worker dying (exit, OOM, kill -9) ends the
        // wait.
        ({ backend, direct } = await Promise.race([
          this.bus
            .requestUntilAnswered(subjects.procActorStart(worker.procId), actor, {
              wanted: () => this.leases.has(lease.leaseId),
            })
            .then((r) => checked(checkActorStarted, r)),
          worker.exited.then((how): never => {
            throw new WorkerDiedError(`its worker process ${how} while the constructor ran`);
          }),
        ]));
      } catch (e) {
        this.release(lease.leaseId, !shared);
        throw e; // the constructor threw (TaskError) or the worker died: the head decides
      }
    }
    if (deadline && Date.now() > deadline) {
      this.release(lease.leaseId); // its asker has given up: nobody would ever release it
      throw new WorkerDiedError('the lease was not ready before its asker gave up');
    }
    this.heartbeatSoon();
    return {
      leaseId: lease.leaseId,
      nodeId: this.nodeId,
      workerId: worker.procId,
      pid: worker.child.pid!,
      gpuIds: gpus.ids,
      backend,
      direct: actor ? direct : worker.lane,
    };
  }

  /** An idle task worker with these GPUs: one of the job's own (its modules are loaded), else a spare. */
  private idleWorkerFor(job: JobRef, gpuKey: string): Worker | undefined {
    let spare: Worker | undefined;
    for (const w of this.workers) {
      if (w.leases.size > 0 || w.shared || w.dedicated || w.gpuKey !== gpuKey) continue;
      if (w.job?.id === job.id) return w;
      if (!w.job) spare ??= w;
    }
    return spare;
  }

  /** At the cap (TROUPE_MAX_WORKERS_PER_NODE): the least recently used idle worker goes, and this resolves once it
   * has exited (false: none is idle). */
  private async retireLeastRecentlyUsed(): Promise<boolean> {
    let lru: Worker | undefined;
    for (const w of this.workers) if (w.leases.size === 0 && !w.shared && (!lru || w.lastUsed < lru.lastUsed)) lru = w;
    if (!lru) return false;
    this.workers.delete(lru); // leaving: never granted again, even before it has exited
    lru.child.kill('SIGTERM');
    const timer = setTimeout(() => lru.child.kill('SIGKILL'), 5000);
    await lru.exited;
    clearTimeout(timer);
    return true;
  }

  /** Idle workers of other jobs on these GPUs go: they can never serve this job, and each holds a CUDA context and
   * device memory that the worker about to start on the same GPUs needs. */
  private retireIdleOn(gpuIds: number[], job: JobRef): void {
    for (const w of this.workers) {
      if (w.leases.size > 0 || w.shared || w.dedicated || !w.job || w.job.id === job.id) continue;
      if (!w.gpuKey.split(',').some((id) => gpuIds.includes(Number(id)))) continue;
      this.workers.delete(w); // leaving: never granted again, even before it has exited
      w.child.kill('SIGTERM');
    }
  }

  /** Binds a worker to a job for life. Its ready promise then also covers the worker knowing its job (over IPC), so
   * that no task or actor reaches it before. `cpus`, its first lease's, sizes its compute threads. */
  private bind(worker: Worker, job: JobRef, local: LocalEnv, cpus: number): void {
    worker.job = job;
    worker.boundAt = Date.now();
    worker.releaseEnv = this.envs.cache.hold(local.root);
    const { child } = worker;
    worker.ready = worker.ready.then(() => {
      let onMessage: ((m: { type?: string; jobId?: string }) => void) | undefined;
      const told = new Promise<void>((resolve, reject) => {
        onMessage = (m) => {
          if (m?.type !== 'bound') return;
          if (m.jobId === job.id) resolve();
          else reject(new Error(`it serves job ${m.jobId} already, not ${job.id}`));
        };
        child.on('message', onMessage);
        child.send({ type: 'job', job, local, cpus }, (e) => e && reject(e));
      });
      const exited = worker.exited.then((how): never => {
        throw new Error(`${how} before it took its job`);
      });
      let timer: NodeJS.Timeout | undefined;
      const late = new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error('it did not take its job within 30 s')), 30_000);
      });
      return Promise.race([told, exited, late])
        .catch((e: Error) => {
          // Not serving this job: never handed out again.
          this.workers.delete(worker);
          child.kill('SIGKILL');
          throw e;
        })
        .finally(() => {
          clearTimeout(timer);
          child.off('message', onMessage!);
        });
    });
    worker.ready.catch(() => undefined);
  }

  /** Stops one actor: a process of its own is killed; in a shared worker only the actor goes. Either way it first gets
   * graceMs for its onStop(), if it has one. With a leaseId, only that lease (one incarnation): a newer instance of
   * the same actor is left alone. */
  private async stopActor(actorId: string, leaseId?: string, graceMs = 0): Promise<void> {
    const lease = leaseId ? this.leases.get(leaseId) : [...this.leases.values()].find((l) => l.actorId === actorId);
    if (!lease || lease.actorId !== actorId) return;
    const grace = Number.isFinite(graceMs) && graceMs > 0 ? Math.min(graceMs, 600_000) : 0;
    if (lease.worker.shared || grace > 0) {
      await this.bus
        .request(subjects.procActorStop(lease.worker.procId), { actorId, graceMs: grace }, { timeoutMs: grace + 5000 })
        .catch(() => undefined);
    }
    this.release(lease.leaseId, !lease.worker.shared);
  }

  /** busy: the worker may still be running tasks of this lease; it cannot serve anyone else, so it goes. */
  private release(leaseId: string, busy = false): void {
    const lease = this.leases.get(leaseId);
    if (!lease) return;
    this.leases.delete(leaseId);
    if (lease.actorId && this.actorGrants.get(lease.actorId)?.leaseId === leaseId)
      this.actorGrants.delete(lease.actorId);
    this.available = add(this.available, lease.blocked ? withoutCpu(lease.demand) : lease.demand);
    this.gpuFree = releaseGpus(this.gpuFree, lease.gpuIds, lease.demand.GPU ?? 0);
    lease.worker.leases.delete(lease);
    lease.worker.lastUsed = Date.now();
    if (busy || lease.worker.dedicated) {
      this.workers.delete(lease.worker);
      lease.worker.child.kill('SIGKILL');
    }
    // Keep a few idle workers for the next lease; more would only hold memory. The one to go is the least recently
    // used of those bound to a job (an ended job's before the current one's), and a spare only when all are spares.
    const idle = [...this.workers].filter((w) => w.leases.size === 0 && !w.shared);
    if (idle.length > Math.max(2, this.o.resources.CPU ?? 1)) {
      const bound = idle.filter((w) => w.job);
      const victim = (bound.length ? bound : idle).reduce((a, b) => (b.lastUsed < a.lastUsed ? b : a));
      this.workers.delete(victim); // leaving: never granted again, even before it has exited
      victim.child.kill('SIGTERM');
    }
    this.heartbeatSoon();
  }

  private reclaimOrphanLeases(): void {
    const now = Date.now();
    this.clientSeen.forget(now);
    for (const owner of this.objects.owners()) {
      if (now - (this.clientSeen.get(owner) ?? now) > OWNER_TIMEOUT_MS) void this.freeObjectsOf(owner, 'went silent');
    }
    for (const lease of this.leases.values()) {
      if (lease.actorId) continue; // actors belong to the head, which decides when they end
      const seen = this.clientSeen.get(lease.clientId) ?? lease.grantedAt;
      if (now - seen > defaults.clientTimeoutMs) {
        // Its worker may still run the dead client's task (maybe blocked for ever on a lost object): it goes too.
        console.error(`troupe: client ${lease.clientId} went silent; taking back lease ${lease.leaseId}`);
        this.release(lease.leaseId, true);
      }
    }
    this.reclaimWorkersOfEndedJobs(now);
  }

  /** An idle worker of a job whose driver went silent (it shut down, exited or died) holds that job's modules for
   * nobody: it goes, about clientTimeoutMs after the job ended and it was last used (the job's detached actors may
   * still run tasks on it). Detached actors keep their own (never idle) workers. */
  private reclaimWorkersOfEndedJobs(now: number): void {
    for (const w of this.workers) {
      if (!w.job || w.leases.size > 0) continue;
      const active = Math.max(this.clientSeen.get(w.job.driver) ?? 0, w.boundAt, w.lastUsed);
      if (now - active <= defaults.clientTimeoutMs) continue;
      this.workers.delete(w); // leaving: never granted again, even before it has exited
      w.child.kill('SIGTERM');
    }
  }

  /** A task blocked in get() lends its CPUs back (as Ray does), so the tasks it waits for can run. */
  private setBlocked(workerId: string, blocked: boolean): void {
    const lease = [...this.leases.values()].find((l) => l.worker.procId === workerId);
    if (!lease || !!lease.blocked === blocked) return;
    lease.blocked = blocked;
    const cpu = { CPU: lease.demand.CPU ?? 0 };
    // Taking the CPU back may overcommit the node for a moment; the alternative is a deadlock.
    this.available = blocked ? add(this.available, cpu) : subtract(this.available, cpu);
    this.heartbeatSoon();
  }

  /** Keeps prestartWorkers idle CPU workers ready: an actor restarting after a crash (or a new one) takes one at once
   * instead of waiting for a process to start. */
  private keepSpares(): void {
    if (this.stopping) return;
    const idle = [...this.workers].filter(
      (w) => w.leases.size === 0 && !w.shared && !w.dedicated && !w.job && w.gpuKey === '',
    ).length;
    const room = this.maxWorkers - this.processes.size;
    for (let i = idle; i < Math.min(this.o.prestartWorkers ?? 1, idle + room); i++) this.spawnWorker([]);
  }

  private spawnWorker(gpuIds: number[], shared = false): Worker {
    // stop() waits only for the processes it saw: one started after it would outlive this daemon.
    if (this.stopping) throw new Error('the node is stopping');
    const procId = randomBytes(8).toString('hex');
    const logPath = join(this.o.sessionDir, 'logs', `worker-${procId}.log`);
    const log = openSync(logPath, 'a');
    const [cmd, args] = workerCommand();
    const { TROUPE_TOKEN: _, ...env } = process.env;
    const user = this.o.workerUser;
    const child = spawn(cmd, args, {
      stdio: ['ignore', log, log, 'ipc'],
      serialization: 'advanced', // checkpoints cross it as bytes
      ...(user && { uid: user.uid, gid: user.gid }),
      env: {
        ...env,
        ...this.userEnv,
        TROUPE_ADDRESS: this.o.address,
        TROUPE_NODE_ID: this.nodeId,
        TROUPE_OBJECT_DIR: this.store.dir,
        TROUPE_OBJECT_STORE_MEMORY: String(this.objects.capacity),
        TROUPE_WORKER_ID: procId,
        // Empty for CPU workers, so a task without GPUs cannot grab one.
        CUDA_VISIBLE_DEVICES: gpuIds.map((i) => this.o.gpuDevices?.[i] ?? String(i)).join(','),
      },
    });
    closeSync(log);
    // The worker connects as a user we sign for it with the worker credential, tagged with its process and node: the
    // worker role's permissions name only its own subjects through these tags, and user code, which holds no signing
    // key, cannot make itself another. It goes over the IPC channel: the environment stays readable in
    // /proc/<pid>/environ. With a plain token (a user's own nats-server) there are no users: the token goes.
    const credential = this.credentials.worker;
    const connectAs = isCredential(credential)
      ? issueUser(parseCredential(credential), `troupe-worker-${procId}`, { proc: procId, node: this.nodeId })
      : credential;
    child.send({ type: 'credential', token: connectAs, laneKeys: this.laneKeys() }, () => undefined);
    this.processes.add(child);
    child.once('exit', () => this.processes.delete(child));
    const worker: Worker = {
      procId,
      child,
      gpuKey: gpuIds.join(','),
      ready: Promise.resolve(),
      leases: new Set(),
      shared,
      dedicated: false,
      boundAt: 0,
      lastUsed: 0,
      exited: new Promise((r) => child.once('exit', (code, signal) => r(howItExited(code, signal)))),
    };
    worker.ready = new Promise<void>((resolve, reject) => {
      const t = setTimeout(() => {
        // A worker that never came up must not be handed out again.
        this.workers.delete(worker);
        child.kill('SIGKILL');
        reject(new Error(`no ready signal in 30 s (log: ${logPath})`));
      }, 30_000);
      child.once('error', (e) => {
        clearTimeout(t);
        this.workers.delete(worker);
        reject(e);
      });
      child.on('message', (m: { type?: string; lane?: unknown }) => {
        if (m?.type === 'ready') {
          clearTimeout(t);
          // Only the socket of that process in this node's store: a worker names no other process's lane.
          if (m.lane === lanePath(this.store.dir, child.pid!)) worker.lane = m.lane;
          // Who may open lanes now: the list it started with may have changed while it was starting.
          if (this.madeLaneKeys.length) child.send({ type: 'lane-keys', keys: this.laneKeys() }, () => undefined);
          resolve();
        }
      });
      child.once('exit', (code, signal) => {
        clearTimeout(t);
        reject(new Error(`${howItExited(code, signal)} before it was ready (log: ${logPath})`));
      });
    });
    worker.ready.catch(() => undefined);
    child.once('exit', (code, signal) => this.onWorkerExit(worker, code, signal));
    serveWorkerCheckpoints(
      child,
      { hosts: (actorId) => [...worker.leases].some((l) => l.actorId === actorId), jobId: () => worker.job?.id },
      () => this.checkpointStore(),
    );
    this.workers.add(worker);
    return worker;
  }

  private checkpointStore(): Promise<CheckpointStore> {
    return (this.checkpoints ??= CheckpointStore.open(this.bus).catch((e: unknown) => {
      this.checkpoints = undefined; // asked again at the next save
      throw e;
    }));
  }

  private async freeObjectsOf(owner: string, why: string): Promise<void> {
    const n = await this.objects.freeOwnedBy(owner);
    this.clientSeen.delete(owner);
    if (n) console.error(`troupe: freed ${n} object(s) owned by ${owner}, which ${why}`);
  }

  private onWorkerExit(worker: Worker, code: number | null, signal: NodeJS.Signals | null): void {
    this.workers.delete(worker);
    worker.releaseEnv?.();
    rmSync(lanePath(this.store.dir, worker.child.pid!), { force: true }); // its socket, if it died without removing it
    if (!this.stopping) {
      this.bus.publish(subjects.evtProcExited, { procId: worker.procId, nodeId: this.nodeId });
      void this.freeObjectsOf(worker.procId, 'exited');
    }
    const leases = [...worker.leases];
    if (leases.length === 0 || this.stopping) return;
    const cause = `its worker process (pid ${worker.child.pid}) ${howItExited(code, signal)}`;
    const msg: WorkerDiedMsg = {
      workerId: worker.procId,
      nodeId: this.nodeId,
      pid: worker.child.pid!,
      cause,
      leaseIds: leases.map((l) => l.leaseId),
      actorIds: leases.flatMap((l) => (l.actorId ? [l.actorId] : [])),
    };
    this.bus.publish(subjects.evtWorkerDied, msg);
    for (const l of leases) this.release(l.leaseId);
  }

  /** Idempotent: a second call (the head fencing a node that stops slowly) waits for the first to finish. */
  stop(cause = 'stopped'): Promise<void> {
    this.stopped ??= this.stopOnce(cause);
    return this.stopped;
  }

  private async stopOnce(cause: string): Promise<void> {
    this.stopping = true;
    for (const t of this.timers) clearInterval(t);
    this.stopLeaseWatch?.();
    await this.submitted?.close().catch(() => undefined); // drivers first: their workers go next
    const exits = [...this.processes].map(
      (child) =>
        new Promise<void>((r) => {
          if (child.exitCode !== null || child.signalCode !== null) return r();
          child.once('exit', () => r());
          child.kill('SIGTERM');
          setTimeout(() => child.kill('SIGKILL'), 3000).unref();
        }),
    );
    await Promise.all(exits);
    // Local cleanup first: the goodbye over the bus can hang when the whole cluster is going down with us.
    this.store.destroy();
    try {
      await this.gcs?.nodes.put(this.nodeId, { ...this.info, state: 'DEAD', deadAt: new Date().toISOString(), cause });
    } catch {
      /* the bus may be gone already */
    }
    await this.bus?.close();
  }
}

/** The promise, or an error once the deadline (ms since the epoch; 0: none) has passed. */
function untilDeadline<T>(p: Promise<T>, deadline: number): Promise<T> {
  if (!deadline) return p;
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new Error('not ready before its asker gave up')),
      Math.max(0, deadline - Date.now()),
    );
  });
  return Promise.race([p, late]).finally(() => clearTimeout(timer));
}

/** "exited with code 3" or "was killed by SIGKILL": the cause callers and `troupe list actors` show. */
function withoutCpu(d: ResourceSet): ResourceSet {
  const { CPU: _cpu, ...rest } = d;
  return rest;
}

/** The home of processes that run as `user`: `worker-home-<uid>` in TROUPE_HOME, theirs alone (0700), kept across
 * nodes and restarts as a home directory is. TROUPE_HOME itself becomes passable (not readable) by the user's group,
 * so that they reach it, the runtime-env copies and the cluster's CA; everything else in it stays the daemon's alone
 * (0700 dirs, 0600 files). The CA, or the word that the bus is plain, is what they would otherwise read from the
 * daemon's `tls/`. It is not in their home: there they could swap it, or make its name a link for root to write
 * through. */
function homeOfTheirOwn(user: WorkerUser, tlsCa: string | undefined): NodeJS.ProcessEnv {
  const troupe = troupeHome();
  const st = statSync(troupe);
  chownSync(troupe, st.uid, user.gid);
  chmodSync(troupe, (st.mode & 0o7777) | 0o010);
  const home = join(troupe, `worker-home-${user.uid}`);
  mkdirSync(home, { recursive: true, mode: 0o700 });
  chownSync(home, user.uid, user.gid);
  chmodSync(home, 0o700);
  const ca = join(
    troupe,
    `worker-ca-${createHash('sha256')
      .update(tlsCa ?? '')
      .digest('hex')
      .slice(0, 16)}.pem`,
  );
  if (tlsCa) {
    const tmp = `${ca}.${process.pid}.tmp`;
    writeFileSync(tmp, tlsCa, { mode: 0o644 });
    renameSync(tmp, ca);
  }
  return {
    HOME: home,
    TMPDIR: home,
    TROUPE_HOME: join(home, 'troupe'),
    USER: user.name,
    LOGNAME: user.name,
    XDG_CACHE_HOME: undefined,
    ...(tlsCa ? { TROUPE_TLS_CA: ca } : { TROUPE_NO_TLS: '1' }),
  };
}

/** This process's user, as workers that run as it are shown (a uid with no name in the user database: its number). */
function ownUser(): { user: string; uid: number } {
  const uid = process.getuid?.() ?? -1;
  try {
    return { user: userInfo().username, uid };
  } catch {
    return { user: String(uid), uid };
  }
}
