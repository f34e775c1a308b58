// Sends tasks straight to leased workers. The head is asked for a lease once per resource shape and backlog,
// never per task; idle leases go back to their node after a while.
import { randomBytes } from 'node:crypto';
import { batchesOf, type Bus, type BatchedRequest } from '../bus/bus.ts';
import { subjects } from '../protocol/subjects.ts';
import { defaults } from '../base/config.ts';
import { atCallSite } from '../base/definition-site.ts';
import { CallLostError, ConnectionError, NoRespondersError, ObjectLostError, WorkerDiedError } from '../base/errors.ts';
import type { ResourceSet, SchedulingStrategy } from '../scheduling/placement.ts';
import type { ObjectLocation } from '../protocol/objects.ts';
import type { OwnerTable } from '../../object-store/owner-table.ts';
import type { TaskReply, TaskSpec } from '../protocol/tasks.ts';
import type { LeaseGrant, LeaseGrantedMsg, LeaseRequestMsg } from '../protocol/leases.ts';
import type { JobRef } from '../protocol/jobs.ts';
import { checked, event } from '../protocol/check.ts';
import {
  checkLeaseGranted,
  checkNodeDied,
  checkProbeAnswer,
  checkTaskReply,
  checkWorkerDied,
} from '../protocol/schemas.ts';

interface Lease {
  grant: LeaseGrant;
  inFlight: Map<string, SentTask>;
  /** Run time expected of the tasks in flight on it (see expectedMs). */
  queuedMs: number;
  idleTimer?: NodeJS.Timeout;
  /** When we last sent it a task or heard from its worker: silence with tasks in flight gets it probed. */
  heardAt: number;
  probing?: boolean;
  /** Since when probes find no worker (reset by any answer): unreachable for clientTimeoutMs, it counts as gone, as
   * a silent driver does (a reconnect, or a process the server cut off and that comes back, is shorter). */
  unreachableSince?: number;
}

/** A task sent to a worker: its own entry in the bus's batch, and told its answer there. */
class SentTask implements BatchedRequest<TaskReply> {
  sentOn: string | undefined = undefined;

  constructor(
    private readonly submitter: TaskSubmitter,
    readonly shape: Shape,
    readonly lease: Lease,
    readonly spec: TaskSpec,
    /** Its expected run time when sent, counted in lease.queuedMs until it leaves. */
    readonly expected: number,
    /** This send's place in our sends (TaskSpec.seq): a probe's `received` says whether it arrived. */
    readonly seq: number,
  ) {}

  /** Found lost by a probe and settled (retried or failed): an answer that still comes is not this run's to give. */
  abandoned = false;

  get body(): TaskSpec {
    return this.spec;
  }

  answered(reply: TaskReply): void {
    if (this.abandoned) return;
    let checkedReply: TaskReply;
    try {
      checkedReply = checked(checkTaskReply, reply); // from the bus: untrusted
    } catch (e) {
      this.submitter.failed(this, e as Error);
      return;
    }
    this.submitter.answered(this, checkedReply);
  }

  failed(e: Error): void {
    if (!this.abandoned) this.submitter.failed(this, e);
  }
}

/** Work queued on one worker beyond the task it runs, in expected run time. Quick tasks are pipelined this deep, as
 * the round trip is what costs them; a task not known to be quick goes only to an idle worker, so a burst of long
 * tasks spreads over all leases and none waits behind another. */
const PIPELINE_MS = 10;

interface Shape {
  key: string;
  demand: ResourceSet;
  strategy: SchedulingStrategy;
  backlog: TaskSpec[];
  leases: Lease[];
  /** Lease requests sent to the head and not yet answered. */
  requests: Set<string>;
}

/** How long an answer sent just before a probe's may take to arrive after it. */
const LATE_ANSWER_MS = 1000;

/** Outstanding lease requests per shape: enough to fill the cluster, not so many the head's queue fills with them. */
const MAX_LEASE_REQUESTS = 10;

/** How often a task may run again: `left` -1 is no limit; `exceptions` also retries errors it throws. */
export interface Retry {
  left: number;
  exceptions: boolean | string[];
}

/** A ref among a task's arguments: enough to find it again when the task runs again to rebuild its lost result. */
export interface InputRef {
  id: string;
  owner: string;
}

/** Fills in where each input is now, or throws when one is gone. */
export type LocateInputs = (taskId: string, inputs: InputRef[], deps: Record<string, ObjectLocation>) => Promise<void>;

interface Runs extends Retry {
  runs: number;
  /** Times it reached no worker. */
  undelivered: number;
  inputs: InputRef[];
  /** Set while it runs again to rebuild its lost result: why the result was lost. */
  rebuilding?: string;
}

export class TaskSubmitter {
  /** Tasks that may still run again: how often they have run, and how often they reached no worker. */
  private readonly retries = new Map<string, Runs>();
  private readonly shapes = new Map<string, Shape>();
  /** Where the user called troupe for each queued task: the stack of the head's refusals (InfeasibleError). */
  private readonly sites = new WeakMap<TaskSpec, string>();
  private readonly requestShape = new Map<string, Shape>();
  /** The shape of the last task submitted: the next is usually another call of the same function. */
  private lastShape: Shape | undefined;
  /** Run time expected of each remote function (by module URL, then export), from its last runs: up at once when it
   * runs longer, down slowly. Two levels, not one joined key: these strings are the same few each time, hashed once. */
  private readonly expectedMs = new Map<string, Map<string, number>>();
  private resendTimer: NodeJS.Timeout | undefined;
  private probeTimer: NodeJS.Timeout | undefined;
  /** Tasks sent so far (each send numbered: TaskSpec.seq). */
  private sends = 0;
  private closed = false;

  constructor(
    private readonly bus: Bus,
    private readonly procId: string,
    private readonly owned: OwnerTable,
    private readonly locateInputs: LocateInputs,
    /** The job our leases are for: workers are bound to one job. */
    private readonly job: () => JobRef,
  ) {}

  start(): void {
    this.bus.on(
      subjects.procLeaseGranted(this.procId),
      event(checkLeaseGranted, (m) => this.onLeaseAnswer(m as LeaseGrantedMsg)),
    );
    this.bus.on(
      subjects.evtWorkerDied,
      event(checkWorkerDied, (m) =>
        this.dropLeases((l) => l.grant.workerId === m.workerId, `${m.cause} on node ${m.nodeId}`),
      ),
    );
    this.bus.on(
      subjects.evtNodeDied,
      event(checkNodeDied, (m) =>
        this.dropLeases((l) => l.grant.nodeId === m.nodeId, `its node ${m.nodeId} died: ${m.cause}`),
      ),
    );
    this.probeTimer = setInterval(() => this.probe(), defaults.callProbeMs / 2);
    this.probeTimer.unref();
  }

  /** Queues a task whose dependencies are resolved. The result seals into the owner table under spec.taskId.
   * `inputs`: its top-level ref arguments, found again if it has to run again to rebuild a lost result. */
  submit(
    spec: TaskSpec,
    demand: ResourceSet,
    strategy: SchedulingStrategy,
    retry?: Retry,
    inputs: InputRef[] = [],
    site?: string,
  ): void {
    if (retry && (retry.left !== 0 || retry.exceptions))
      this.retries.set(spec.taskId, {
        left: retry.left,
        exceptions: retry.exceptions,
        runs: 1,
        undelivered: 0,
        inputs,
      });
    let shape = this.lastShape;
    if (shape?.demand !== demand || shape.strategy !== strategy) {
      const key = JSON.stringify([demand, strategy]);
      shape = this.shapes.get(key);
      if (!shape)
        this.shapes.set(key, (shape = { key, demand, strategy, backlog: [], leases: [], requests: new Set() }));
      this.lastShape = shape;
    }
    if (site) this.sites.set(spec, site);
    shape.backlog.push(spec);
    this.dispatch(shape);
  }

  private dispatch(shape: Shape): void {
    while (shape.backlog.length) {
      const { fn } = shape.backlog[0];
      const expected = this.expectedMs.get(fn.url)?.get(fn.exportName);
      let best: Lease | undefined;
      for (const l of shape.leases) {
        const room =
          l.inFlight.size === 0 ||
          (expected !== undefined &&
            l.inFlight.size < defaults.tasksInFlightPerLease &&
            l.queuedMs + expected <= PIPELINE_MS);
        if (
          room &&
          (!best ||
            l.queuedMs < best.queuedMs ||
            (l.queuedMs === best.queuedMs && l.inFlight.size < best.inFlight.size))
        )
          best = l;
      }
      if (!best) break;
      this.send(shape, best, shape.backlog.shift()!, expected ?? PIPELINE_MS);
    }
    // Ask for more leases while work waits; withdraw the requests nobody needs any more.
    const wanted = Math.min(shape.backlog.length, MAX_LEASE_REQUESTS);
    while (shape.requests.size < wanted) this.requestLease(shape);
    if (wanted === 0) for (const reqId of shape.requests) this.cancelLeaseRequest(reqId, shape);
  }

  private cancelLeaseRequest(reqId: string, shape: Shape): void {
    shape.requests.delete(reqId);
    this.requestShape.delete(reqId); // a grant that still comes is released on arrival
    this.bus.request(subjects.headLease, { cancel: reqId }).catch(() => undefined);
  }

  private send(shape: Shape, lease: Lease, spec: TaskSpec, expected: number): void {
    clearTimeout(lease.idleTimer);
    spec.seq = this.sends++;
    const sent = new SentTask(this, shape, lease, spec, expected, spec.seq);
    lease.inFlight.set(spec.taskId, sent);
    lease.queuedMs += expected;
    lease.heardAt = Date.now();
    // No timeout: a task may run for hours. Worker and node death events end a call that will never be answered, and
    // probes one whose request or answer the bus lost.
    this.bus.requestBatched(subjects.procTask(lease.grant.workerId), sent);
  }

  /** The worker's answer to a task we sent. */
  answered({ shape, lease, spec, expected }: SentTask, reply: TaskReply): void {
    lease.heardAt = Date.now();
    this.leave(lease, spec, expected); // first: a retry sent below may go to this same lease
    try {
      if (typeof reply.ms === 'number') this.learn(spec, reply.ms);
      const error = 'error' in reply.result ? reply.result.error : undefined;
      if (!(error && this.retriesOn(spec, error) && this.runAgain(shape, spec)))
        this.finish(spec.taskId, reply.result, shape, spec);
    } finally {
      this.refill(shape, lease);
    }
  }

  /** A task we sent got no answer. */
  failed(sent: SentTask, e: Error): void {
    // Its lane closed after it went: it may have run, as when its worker dies with it. It stays in flight: the news of
    // that death (the worker's, or its node's) settles it, or else a probe over NATS finds it gone.
    if (e instanceof CallLostError) return;
    const { shape, lease, spec, expected } = sent;
    this.leave(lease, spec, expected);
    try {
      this.undelivered(shape, lease, spec, e);
    } finally {
      this.refill(shape, lease);
    }
  }

  /** The task is off the lease (answered, or never delivered). */
  private leave(lease: Lease, spec: TaskSpec, expected: number): void {
    lease.inFlight.delete(spec.taskId);
    lease.queuedMs = lease.inFlight.size ? lease.queuedMs - expected : 0;
  }

  /** The lease has room again: queued tasks may go; an idle lease goes back after a while. */
  private refill(shape: Shape, lease: Lease): void {
    if (this.closed) return;
    this.dispatch(shape);
    if (lease.inFlight.size === 0 && shape.leases.includes(lease)) this.armIdle(shape, lease);
  }

  private undelivered(shape: Shape, lease: Lease, spec: TaskSpec, e: Error): void {
    if (!(e instanceof NoRespondersError)) {
      this.finish(spec.taskId, { error: e });
      return;
    }
    this.removeLease(shape, lease, false);
    // Nobody got it, so it never ran: it goes to another lease, a few times at most, without using a retry.
    let r = this.retries.get(spec.taskId);
    if (!r) this.retries.set(spec.taskId, (r = { left: 0, exceptions: false, runs: 1, undelivered: 0, inputs: [] }));
    const tries = ++r.undelivered;
    if (tries <= 3 && !this.closed) {
      shape.backlog.unshift(spec);
      return;
    }
    this.finish(spec.taskId, {
      error: new WorkerDiedError(
        `task ${spec.name} could not be delivered: ${tries} workers leased for it were gone (last ` +
          `${lease.grant.workerId})`,
        { cause: e },
      ),
    });
  }

  private learn({ fn }: TaskSpec, ms: number): void {
    let byExport = this.expectedMs.get(fn.url);
    if (!byExport) this.expectedMs.set(fn.url, (byExport = new Map()));
    const before = byExport.get(fn.exportName);
    byExport.set(fn.exportName, before === undefined || ms > before ? ms : before * 0.8 + ms * 0.2);
  }

  private armIdle(shape: Shape, lease: Lease): void {
    clearTimeout(lease.idleTimer);
    lease.idleTimer = setTimeout(() => {
      if (lease.inFlight.size === 0) this.removeLease(shape, lease, true);
    }, defaults.leaseIdleMs);
    lease.idleTimer.unref();
  }

  private requestLease(shape: Shape): void {
    const reqId = randomBytes(8).toString('hex');
    shape.requests.add(reqId);
    this.requestShape.set(reqId, shape);
    this.sendLeaseRequest(reqId, shape);
    this.armResend();
  }

  private sendLeaseRequest(reqId: string, shape: Shape): void {
    const msg: LeaseRequestMsg = {
      reqId,
      clientId: this.procId,
      job: this.job(),
      demand: shape.demand,
      strategy: shape.strategy,
    };
    this.bus.request(subjects.headLease, msg).catch((e: Error) => {
      // head away: the resend timer retries
      if (e instanceof NoRespondersError || e.name === 'RequestTimeoutError' || e instanceof ConnectionError) return;
      this.onLeaseAnswer({ reqId, error: e });
    });
  }

  /** The head dedups by reqId, so re-sending is how we survive a head restart. */
  private armResend(): void {
    if (this.resendTimer) return;
    this.resendTimer = setInterval(() => {
      if (this.requestShape.size === 0) {
        clearInterval(this.resendTimer);
        this.resendTimer = undefined;
        return;
      }
      for (const [reqId, shape] of this.requestShape) this.sendLeaseRequest(reqId, shape);
    }, 5000);
    this.resendTimer.unref();
  }

  private onLeaseAnswer(m: LeaseGrantedMsg): void {
    if (typeof m?.reqId !== 'string' || !('error' in m || typeof m.grant?.workerId === 'string')) return;
    const shape = this.requestShape.get(m.reqId);
    if (shape) {
      this.requestShape.delete(m.reqId);
      shape.requests.delete(m.reqId);
    }
    if ('error' in m) {
      if (!shape) return;
      // Infeasible (or the node could not start a worker): everything waiting for this shape fails the same way.
      // Each with the stack of its own call site (its remote function's first call with those options).
      const bySite = new Map<string | undefined, Error>();
      for (const spec of shape.backlog.splice(0)) {
        const site = this.sites.get(spec);
        let error = bySite.get(site);
        if (!error) bySite.set(site, (error = atCallSite(m.error, site)));
        this.finish(spec.taskId, { error });
      }
      return;
    }
    if (!shape || this.closed || shape.backlog.length === 0) {
      this.release(m.grant); // no longer needed (or not ours any more)
      return;
    }
    const lease: Lease = { grant: m.grant, inFlight: new Map(), queuedMs: 0, heardAt: Date.now() };
    shape.leases.push(lease);
    // A worker on this machine takes its tasks on its lane, not through nats-server (as actors' calls go).
    if (defaults.lanes && m.grant.direct) this.bus.route(subjects.procTask(m.grant.workerId), m.grant.direct);
    this.dispatch(shape);
  }

  private removeLease(shape: Shape, lease: Lease, release: boolean): void {
    clearTimeout(lease.idleTimer);
    const i = shape.leases.indexOf(lease);
    if (i >= 0) shape.leases.splice(i, 1);
    this.bus.route(subjects.procTask(lease.grant.workerId), undefined);
    if (release) this.release(lease.grant);
  }

  private release(grant: LeaseGrant): void {
    this.bus.request(subjects.nodeRelease(grant.nodeId), { leaseId: grant.leaseId }).catch(() => undefined);
  }

  private dropLeases(match: (l: Lease) => boolean, why: string): void {
    for (const shape of this.shapes.values()) {
      for (const lease of shape.leases.filter(match)) {
        this.removeLease(shape, lease, false);
        const lost = [...lease.inFlight.values()].map((s) => s.spec);
        lease.inFlight.clear();
        // A reply sent just before the death can arrive after the news of it: give it a moment to win.
        setTimeout(() => {
          for (const spec of lost) {
            if (this.owned.get(spec.taskId)?.location || this.runAgain(shape, spec)) continue;
            const runs = this.retries.get(spec.taskId)?.runs ?? 1;
            this.finish(spec.taskId, {
              error: new WorkerDiedError(
                `task ${spec.name} failed because ${why}${runs > 1 ? ` (it ran ${runs} times)` : ''}`,
              ),
            });
          }
        }, 100).unref();
      }
      if (shape.backlog.length) this.dispatch(shape);
    }
  }

  /** Asks each worker we have heard nothing from for callProbeMs, while tasks of ours are in flight there, which of
   * them it still holds. Core NATS delivers at most once (a reconnect, a slow-consumer cut drop messages): a task
   * whose request or answer was lost would otherwise wait for ever. A worker busy in synchronous code answers late or
   * not at all; only an answer, or finding no worker for clientTimeoutMs, settles anything. */
  private probe(): void {
    const now = Date.now();
    for (const shape of this.shapes.values())
      for (const lease of shape.leases) {
        if (lease.probing || lease.inFlight.size === 0 || now - lease.heardAt < defaults.callProbeMs) continue;
        lease.probing = true;
        const { workerId } = lease.grant;
        this.bus
          .request(subjects.procProbe(workerId), {
            ids: [...lease.inFlight.keys()],
            caller: this.procId,
            replies: batchesOf(lease.inFlight.values()),
          })
          .then(
            (answer) => {
              const { unknown, received } = checked(checkProbeAnswer, answer); // from the bus: untrusted
              lease.heardAt = Date.now();
              lease.unreachableSince = undefined;
              if (unknown.length) this.lostOnTheBus(shape, lease, unknown, received);
            },
            (e: Error) => {
              if (!(e instanceof NoRespondersError)) return;
              lease.unreachableSince ??= Date.now();
              if (Date.now() - lease.unreachableSince < defaults.clientTimeoutMs) return;
              this.dropLeases((l) => l === lease, `its worker ${workerId} is gone (unreachable for a while)`);
            },
          )
          .finally(() => {
            lease.probing = false;
          });
      }
  }

  /** Tasks the lease's worker does not hold: their answer, if one went, is not coming (one sent just before the
   * probe's is given a moment). One past the last that `received` never arrived, so never ran: it is sent again as
   * it is. Any other runs again if it has retries left, else fails with CallLostError. */
  private lostOnTheBus(shape: Shape, lease: Lease, ids: string[], received: number | undefined): void {
    setTimeout(() => {
      for (const id of ids) {
        const sent = lease.inFlight.get(id);
        if (!sent) continue; // answered meanwhile
        sent.abandoned = true;
        this.leave(lease, sent.spec, sent.expected);
        const { spec } = sent;
        // Whether it reached the worker (`received` counts the tasks it got with us as their caller), if it says.
        const arrived = received === undefined || spec.caller !== this.procId ? undefined : sent.seq <= received;
        if (arrived === false) {
          shape.backlog.unshift(spec);
          this.dispatch(shape);
          continue;
        }
        if (this.runAgain(shape, spec)) continue;
        const what = !arrived
          ? 'its request or its answer was lost on the way (worker %w is alive but does not hold it); it may have run'
          : 'its answer was lost on the way (it reached worker %w, which no longer holds it): it ran';
        this.finish(spec.taskId, {
          error: new CallLostError(`task ${spec.name}: ${what.replace('%w', lease.grant.workerId)}`),
        });
      }
      this.refill(shape, lease);
    }, LATE_ANSWER_MS).unref();
  }

  /** Whether an error the task threw is one its retryExceptions option asks to retry. */
  private retriesOn(spec: TaskSpec, error: Error): boolean {
    const x = this.retries.get(spec.taskId)?.exceptions;
    const name = (error as { remoteName?: string }).remoteName ?? error.name;
    return x === true || (Array.isArray(x) && x.includes(name));
  }

  /** Queues the task again if it has retries left (at least once: it may have run in part). */
  private runAgain(shape: Shape, spec: TaskSpec): boolean {
    const r = this.retries.get(spec.taskId);
    if (!r || r.left === 0 || this.closed) return false;
    if (r.left > 0) r.left--;
    r.runs++;
    shape.backlog.unshift(spec);
    this.dispatch(shape);
    return true;
  }

  /** Seals the result. A result in a node store, of a task with retries left, keeps what made it (its lineage), so
   * it can be made again if every node holding it dies, as in Ray. */
  private finish(taskId: string, result: ObjectLocation, shape?: Shape, spec?: TaskSpec): void {
    const r = this.retries.get(taskId);
    this.retries.delete(taskId);
    if (r?.rebuilding && 'error' in result) {
      const e = result.error;
      result = {
        error: new ObjectLostError(`${r.rebuilding}; running its task again failed: ${e.message}`, { cause: e }),
      };
    }
    this.owned.seal(taskId, result);
    const o = this.owned.get(taskId);
    if (o && r && r.left !== 0 && shape && spec && 'node' in result)
      o.rebuild = (why) => this.rebuild(shape, spec, r, why);
  }

  /** Runs a task again because its result was lost, once its inputs are found (they may be being rebuilt too). */
  private rebuild(shape: Shape, spec: TaskSpec, r: Runs, why: string): boolean {
    if (this.closed) return false;
    if (r.left > 0) r.left--;
    r.runs++;
    r.undelivered = 0;
    r.rebuilding = why;
    this.retries.set(spec.taskId, r);
    const deps: Record<string, ObjectLocation> = {};
    // After the current turn: the node death that lost this may be unsealing its inputs too, to rebuild them first.
    Promise.resolve()
      .then(() => this.locateInputs(spec.taskId, r.inputs, deps))
      .then(
        () => {
          spec.deps = deps;
          shape.backlog.push(spec);
          this.dispatch(shape);
        },
        (e: Error) =>
          this.finish(
            spec.taskId,
            { error: new Error(`an input it needs is gone: ${e.message}`, { cause: e }) },
            shape,
            spec,
          ),
      );
    return true;
  }

  /** Returns every lease. Pending tasks fail: the process is going away. */
  async close(): Promise<void> {
    this.closed = true;
    clearInterval(this.resendTimer);
    clearInterval(this.probeTimer);
    const releases: Promise<unknown>[] = [];
    for (const shape of this.shapes.values()) {
      for (const spec of shape.backlog.splice(0))
        this.finish(spec.taskId, {
          error: new ConnectionError(`task ${spec.name} was never sent: the driver left the cluster first`),
        });
      for (const lease of shape.leases) {
        clearTimeout(lease.idleTimer);
        // A worker still running our task cannot serve anyone else: busy tells the node to stop it.
        const busy = lease.inFlight.size > 0;
        releases.push(
          this.bus
            .request(
              subjects.nodeRelease(lease.grant.nodeId),
              { leaseId: lease.grant.leaseId, busy },
              { timeoutMs: 2000 },
            )
            .catch(() => undefined),
        );
      }
      shape.leases = [];
    }
    await Promise.all(releases);
  }
}
