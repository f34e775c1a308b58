// The caller's side of actors: create them through the head, then call them directly on their own subject.
// Calls from one caller to one actor are sent in submission order; the head is never on the call path.
import { batchesOf, type Bus, type BatchedRequest } from '../bus/bus.ts';
import type { Gcs } from '../state/gcs.ts';
import { subjects } from '../protocol/subjects.ts';
import {
  ActorDiedError,
  CallLostError,
  NoRespondersError,
  PendingCallsLimitError,
  ProtocolError,
} from '../base/errors.ts';
import type { ActorCall, ActorState, ActorStateEvent } from '../protocol/actors.ts';
import type { OwnerTable } from '../../object-store/owner-table.ts';
import type { CallReply } from '../protocol/actors.ts';
import { checked, event } from '../protocol/check.ts';
import { checkActorState, checkCallReply, checkProbeAnswer } from '../protocol/schemas.ts';
import { defaults } from '../base/config.ts';

/** How long calls in flight at an actor's death wait for a reply that was already on its way. */
const LATE_REPLY_MS = 200;
/** How long a call lost with its lane waits for news of a death before it counts as lost in one anyway. */
const LOST_CALL_MS = 3000;
/** How long an answer sent just before a probe's may take to arrive after it. */
const LATE_ANSWER_MS = 1000;

interface Known {
  state: ActorState;
  incarnation: number;
  cause?: string;
  /** ALIVE: the worker hosting it, probed for calls we heard nothing of. */
  workerId?: string;
}

/** Where calls to the instance `k` go: under its worker's subjects. Undefined while no worker hosts it. */
function callSubject(actorId: string, k: Known): string | undefined {
  return k.workerId === undefined ? undefined : subjects.actorCall(k.workerId, actorId, k.incarnation);
}

/** A call sent and not yet answered: its own entry in the bus's batch, and told its answer there. */
class InFlight implements BatchedRequest<CallReply> {
  sentOn: string | undefined = undefined;

  constructor(
    private readonly caller: ActorCaller,
    readonly actorId: string,
    readonly call: ActorCall,
    readonly retriesLeft: number,
    /** Submission order of this caller's calls to this actor: re-sends keep it. */
    readonly seq: number,
  ) {}

  get body(): ActorCall {
    return this.call;
  }

  answered(r: CallReply): void {
    let reply: CallReply;
    try {
      reply = checked(checkCallReply, r); // from the bus: untrusted
    } catch (e) {
      this.caller.undelivered(this, e as Error);
      return;
    }
    this.caller.answered(this, reply);
  }

  failed(e: Error): void {
    this.caller.undelivered(this, e);
  }

  /** The same call, with `retriesLeft` left (a new entry: a late answer to this one is then told apart). */
  again(retriesLeft: number): InFlight {
    return new InFlight(this.caller, this.actorId, this.call, retriesLeft, this.seq);
  }
}

export class ActorCaller {
  private readonly known = new Map<string, Known>();
  private readonly waiters = new Map<string, Set<() => void>>();
  /** Per actor: the promise of the last send, so the next send goes after it. */
  private readonly chains = new Map<string, Promise<void>>();
  /** Per actor: its creation, until the head acknowledges it (kept when it failed: calls fail with its error). */
  private readonly created = new Map<string, Promise<void>>();
  /** Actors this process created: their state comes from events, no need to read KV. */
  private readonly mine = new Set<string>();
  private readonly inFlight = new Map<string, Map<string, InFlight>>();
  private readonly nextSeq = new Map<string, number>();
  /** Per actor: calls to send again once it is back, and the pending flush that sends them in submission order. */
  private readonly resends = new Map<string, InFlight[]>();
  private readonly flushes = new Map<string, Promise<void>>();
  /** Per actor: calls lost in a death, held a moment for late replies before they are re-sent. Newer calls wait for
   * them, so that an instance back within that moment does not run a newer call first. */
  private readonly holds = new Map<string, Promise<void>>();
  /** Per actor: calls waiting in its chain (not sent yet), bounded by maxPendingCalls. */
  private readonly pending = new Map<string, number>();
  /** Per actor with calls in flight: when we last sent it one or heard from it (silence gets it probed). */
  private readonly heardAt = new Map<string, number>();
  private readonly probing = new Set<string>();

  constructor(
    private readonly bus: Bus,
    private readonly gcs: () => Promise<Gcs>,
    private readonly owned: OwnerTable,
  ) {}

  start(): void {
    this.bus.on(
      subjects.evtActorState,
      event(checkActorState, (e) => this.learn(e.actorId, e)),
    );
    setInterval(() => this.probe(), defaults.callProbeMs / 2).unref();
  }

  /** Registers the creation of an actor: its calls wait for it and fail with its error. */
  track(actorId: string, creation: Promise<void>, args: unknown[] = []): void {
    this.mine.add(actorId);
    this.created.set(
      actorId,
      creation.then(() => {
        this.created.delete(actorId);
      }),
    );
    this.created.get(actorId)!.catch(() => {
      this.args.delete(actorId);
    });
    if (args.length) this.args.set(actorId, args);
  }

  /** Refs among an actor's constructor arguments: every restart constructs it from them again, so they live as long
   * as the actor does. */
  private readonly args = new Map<string, unknown[]>();

  /** Throws when `limit` calls already wait for this actor to come up (a restart that never ends must not eat
   * memory). */
  checkPending(actorId: string, method: string, limit: number): void {
    const n = this.pending.get(actorId) ?? 0;
    if (limit !== -1 && n >= limit) {
      const k = this.known.get(actorId);
      throw new PendingCallsLimitError(
        `cannot call ${method}(): ${n} calls already wait for actor ${actorId}${k ? ` (${k.state})` : ''} ` +
          `(maxPendingCalls ${limit})`,
      );
    }
  }

  /** Sends a method call in order after the previous ones. The result seals into the owner table under call.callId.
   * waitFor: what must happen first (its ref arguments located). */
  call(actorId: string, call: ActorCall, waitFor: Promise<unknown> | undefined, maxTaskRetries: number): void {
    const seq = this.nextSeq.get(actorId) ?? 0;
    this.nextSeq.set(actorId, seq + 1);
    call.seq = seq;
    const entry = new InFlight(this, actorId, call, maxTaskRetries, seq);
    const prev = this.chains.get(actorId);
    // The common case, and the cheap one: nothing queued ahead, nothing to wait for, the actor alive. Send now.
    if (
      !prev &&
      !waitFor &&
      !this.created.has(actorId) &&
      !this.flushes.has(actorId) &&
      !this.holds.has(actorId) &&
      this.known.get(actorId)?.state === 'ALIVE'
    ) {
      this.send(actorId, entry);
      return;
    }
    this.pending.set(actorId, (this.pending.get(actorId) ?? 0) + 1);
    const sent: Promise<void> = (prev ?? Promise.resolve())
      .then(async () => {
        await this.created.get(actorId);
        await waitFor;
        await this.holds.get(actorId);
        await this.flushes.get(actorId); // calls being sent again after a restart go first
        await this.whenAlive(actorId);
        this.send(actorId, entry);
      })
      .catch((e: Error) => this.owned.seal(call.callId, { error: e }))
      .finally(() => {
        const left = this.pending.get(actorId)! - 1;
        if (left) this.pending.set(actorId, left);
        else this.pending.delete(actorId);
        if (this.chains.get(actorId) === sent) this.chains.delete(actorId);
      });
    this.chains.set(actorId, sent);
  }

  private send(actorId: string, entry: InFlight): void {
    // Only an instance we know is alive (callers wait for that): what we knew was dropped meanwhile when it stopped.
    const k = this.known.get(actorId);
    if (k?.state !== 'ALIVE') {
      this.sendAgain(actorId, entry);
      return;
    }
    const subject = callSubject(actorId, k);
    if (!subject) {
      // ALIVE with no worker named: not a record the head writes. Fail the call rather than ask again for ever.
      this.owned.seal(entry.call.callId, {
        error: new ProtocolError(`actor ${actorId} is ALIVE with no worker named: its record is malformed`),
      });
      return;
    }
    let calls = this.inFlight.get(actorId);
    if (!calls) this.inFlight.set(actorId, (calls = new Map()));
    calls.set(entry.call.callId, entry);
    this.heardAt.set(actorId, Date.now());
    this.bus.requestBatched(subject, entry);
  }

  /** The actor's answer to a call we sent. */
  answered(entry: InFlight, r: CallReply): void {
    if (!this.takeInFlight(entry)) return; // failed over meanwhile
    const { actorId, call } = entry;
    this.heardAt.set(actorId, Date.now());
    if (r.notRun) {
      // The instance stopped (killed, crashed, restarting) before running it: it goes to the next instance.
      this.forget(actorId);
      this.sendAgain(actorId, entry);
    } else {
      this.owned.seal(call.callId, r.result);
    }
  }

  /** A call we sent got no answer. */
  undelivered(entry: InFlight, e: Error): void {
    if (e instanceof CallLostError) {
      this.lost(entry);
      return;
    }
    if (!this.takeInFlight(entry)) return;
    const { actorId, call } = entry;
    // Nobody got it: the actor died or is restarting and we had not heard yet. The call never ran, so sending it
    // again once the actor is back is safe whatever maxTaskRetries says. What we knew is stale: ask KV afresh.
    if (e instanceof NoRespondersError) {
      this.forget(actorId);
      this.sendAgain(actorId, entry);
    } else {
      this.owned.seal(call.callId, { error: e });
    }
  }

  /** A call whose lane closed after it went: it may have run, as when its actor dies with a call in flight. The news
   * of that death settles it (learn); if none comes in time, it is settled as one all the same. */
  private lost(entry: InFlight): void {
    setTimeout(() => {
      if (!this.takeInFlight(entry)) return; // settled by the death
      this.forget(entry.actorId);
      this.afterDeath(entry.actorId, entry);
    }, LOST_CALL_MS).unref();
  }

  /** Asks the worker of each actor we have heard nothing from for callProbeMs, while calls of ours are in flight
   * there over NATS (a lane loses nothing: its close settles them), which of them it still holds. Core NATS delivers
   * at most once: a call whose request or answer was lost would otherwise wait for ever. A worker busy in synchronous
   * code answers late or not at all; only an answer settles anything. No worker at all: the actor's record says
   * whether it died or restarts (news of that may have been lost too), or still runs there (the worker reconnects). */
  private probe(): void {
    const now = Date.now();
    for (const [actorId, calls] of this.inFlight) {
      if (calls.size === 0) {
        this.heardAt.delete(actorId);
        continue;
      }
      if (this.probing.has(actorId) || now - (this.heardAt.get(actorId) ?? 0) < defaults.callProbeMs) continue;
      const known = this.known.get(actorId);
      const workerId = known?.workerId;
      if (!workerId || this.bus.laneOf(callSubject(actorId, known)!)) continue;
      this.probing.add(actorId);
      const caller = calls.values().next().value!.call.caller;
      this.bus
        .request(subjects.procProbe(workerId), {
          ids: [...calls.keys()],
          actorId,
          caller,
          replies: batchesOf(calls.values()),
        })
        .then(
          (answer) => {
            const { unknown, received } = checked(checkProbeAnswer, answer); // from the bus: untrusted
            this.heardAt.set(actorId, Date.now());
            if (unknown.length) setTimeout(() => this.lostOnTheBus(actorId, unknown, received), LATE_ANSWER_MS).unref();
          },
          (e: Error) => {
            if (!(e instanceof NoRespondersError)) return;
            return this.gcs()
              .then((g) => g.actors.get(actorId))
              .then((info) => {
                if (info) this.learn(actorId, info); // RESTARTING or DEAD: its calls in flight settle there
              });
          },
        )
        .catch(() => undefined) // KV away: asked again at the next probe
        .finally(() => this.probing.delete(actorId));
    }
  }

  /** Calls the actor's worker, which answers, does not hold: the bus lost the request or the answer. One past the
   * last that `received` (it never arrived, so never ran) is sent again, as if for the first time. Any other is sent
   * again if it has retries left (it may have run, as in a death), else it fails with CallLostError. */
  private lostOnTheBus(actorId: string, ids: string[], received: number | undefined): void {
    const calls = this.inFlight.get(actorId);
    for (const id of ids) {
      const entry = calls?.get(id);
      if (!entry || !this.takeInFlight(entry)) continue; // answered meanwhile
      if (received !== undefined && entry.seq > received) {
        this.sendAgain(actorId, entry.again(entry.retriesLeft));
        continue;
      }
      if (entry.retriesLeft !== 0) {
        this.sendAgain(actorId, entry.again(entry.retriesLeft === -1 ? -1 : entry.retriesLeft - 1));
        continue;
      }
      // It arrived (its worker says so), so its answer was lost: it ran. Without that word: it may have.
      const what =
        received === undefined
          ? 'its request or its answer was lost on the way (the actor is alive but does not hold it); it may have run'
          : 'its answer was lost on the way (it reached the actor, which no longer holds it): it ran';
      this.owned.seal(entry.call.callId, {
        error: new CallLostError(`${entry.call.method}() on actor ${actorId}: ${what} (maxTaskRetries 0: not re-sent)`),
      });
    }
  }

  /** Takes the entry off the calls in flight; false when it is no longer there (a death already took it). */
  private takeInFlight(entry: InFlight): boolean {
    const calls = this.inFlight.get(entry.actorId);
    if (calls?.get(entry.call.callId) !== entry) return false;
    calls.delete(entry.call.callId);
    return true;
  }

  /** Sends a call again once the actor is back. Everything waiting to be re-sent goes out together, in submission
   * order, before any newer call: a restart does not reorder one caller's calls. */
  private sendAgain(actorId: string, entry: InFlight): void {
    const waiting = this.resends.get(actorId) ?? [];
    waiting.push(entry);
    this.resends.set(actorId, waiting);
    if (this.flushes.has(actorId)) return;
    const take = () => {
      const batch = (this.resends.get(actorId) ?? []).sort((a, b) => a.seq - b.seq);
      this.resends.delete(actorId);
      this.flushes.delete(actorId);
      return batch;
    };
    // A short pause lets the other casualties of the same death (late replies, the state event) join the batch.
    // Calls held for late replies join before it goes (their seq is older).
    const flush = new Promise<void>((r) => setTimeout(r, 50))
      .then(() => this.holds.get(actorId))
      .then(() => this.whenAlive(actorId, true))
      .then(
        () => {
          for (const x of take()) this.send(actorId, x);
        },
        (e: Error) => {
          for (const x of take()) this.owned.seal(x.call.callId, { error: e });
        },
      );
    this.flushes.set(actorId, flush);
  }

  /** A death (or restart) of the actor: each in-flight call is re-sent if it has retries left, else fails at once. */
  private afterDeath(actorId: string, entry: InFlight): void {
    if (entry.retriesLeft !== 0) {
      this.sendAgain(actorId, entry.again(entry.retriesLeft === -1 ? -1 : entry.retriesLeft - 1));
      return;
    }
    const cause = this.known.get(actorId)?.cause ?? 'its worker stopped answering';
    this.owned.seal(entry.call.callId, {
      error: new ActorDiedError(
        `actor ${actorId} died while running ${entry.call.method}(): ${cause} (maxTaskRetries 0: not re-sent)`,
        { actorId },
      ),
    });
  }

  /** Calls to the instance `k` go over NATS again (its lane, if it had one, is for it alone). */
  private unroute(actorId: string, k: Known | undefined): void {
    const subject = k && callSubject(actorId, k);
    if (subject) this.bus.route(subject, undefined);
  }

  /** Drops what we knew of the actor (stale): the next call asks again. */
  private forget(actorId: string): void {
    this.unroute(actorId, this.known.get(actorId));
    this.known.delete(actorId);
  }

  private learn(actorId: string, e: Known & Pick<ActorStateEvent, 'direct'>): void {
    const before = this.known.get(actorId);
    if (before && before.incarnation > e.incarnation) return; // stale
    const now = { state: e.state, incarnation: e.incarnation, cause: e.cause, workerId: e.workerId };
    this.known.set(actorId, now);
    if (before && (before.incarnation !== e.incarnation || before.workerId !== e.workerId))
      this.unroute(actorId, before);
    // Learned before any call to this incarnation goes (calls wait for ALIVE), so one caller's calls keep one way.
    const lane = e.state === 'ALIVE' && defaults.lanes ? e.direct : undefined;
    const subject = callSubject(actorId, now);
    if (subject) this.bus.route(subject, lane);
    if (e.state === 'DEAD') this.args.delete(actorId);
    if (e.state === 'RESTARTING' || e.state === 'DEAD') {
      const calls = this.inFlight.get(actorId);
      if (calls?.size) {
        const lost = [...calls.values()];
        // Replies already on their way (a result, or "not run" from a crashing instance) may trail the event.
        const hold: Promise<void> = Promise.all([
          this.holds.get(actorId),
          new Promise((r) => setTimeout(r, LATE_REPLY_MS)),
        ]).then(() => {
          for (const c of lost) {
            if (calls.get(c.call.callId) !== c) continue; // answered meanwhile
            calls.delete(c.call.callId);
            this.afterDeath(actorId, c); // re-sent ones join the flush, which newer calls wait for next
          }
          if (this.holds.get(actorId) === hold) this.holds.delete(actorId);
        });
        this.holds.set(actorId, hold);
      }
    }
    if (e.state === 'ALIVE' || e.state === 'DEAD') {
      const w = this.waiters.get(actorId);
      this.waiters.delete(actorId);
      for (const f of w ?? []) f();
    }
  }

  /** Resolves when the actor is ALIVE; rejects with ActorDiedError (and its cause) when it is DEAD.
   * fresh: read its record even if we created it (what we knew turned out stale). */
  whenAlive(actorId: string, fresh = false): Promise<void> {
    const k = this.known.get(actorId);
    if (k?.state === 'ALIVE') return Promise.resolve();
    if (k?.state === 'DEAD') return Promise.reject(died(actorId, k.cause));
    return new Promise<void>((resolve, reject) => {
      let recheck: NodeJS.Timeout | undefined;
      const settle = () => {
        clearInterval(recheck);
        const now = this.known.get(actorId);
        if (now?.state === 'DEAD') reject(died(actorId, now.cause));
        else resolve();
      };
      const fail = (e: Error) => {
        clearInterval(recheck);
        reject(e);
      };
      const set = this.waiters.get(actorId) ?? new Set();
      set.add(settle);
      this.waiters.set(actorId, set);
      // Events tell us of changes. For an actor we did not create (a handle from getActor or an argument) KV tells us
      // where it stands now; for our own, the events from its creation on are enough (and 10,000 KV reads are not
      // free).
      if (!k && (fresh || !this.mine.has(actorId))) void this.readState(actorId, set, settle, fail);
      // The event we wait for may be lost (core NATS delivers at most once; a head killed between recording a state
      // and announcing it never announces it): a wait longer than callProbeMs reads the record again now and then.
      recheck = setInterval(() => {
        this.gcs()
          .then((g) => g.actors.get(actorId))
          .then((info) => {
            const known = this.known.get(actorId);
            if (info && set.has(settle) && (!known || known.incarnation <= info.incarnation)) this.learn(actorId, info);
          })
          .catch(() => undefined); // KV away: read again next time
      }, defaults.callProbeMs);
      recheck.unref();
    });
  }

  /** Reads the actor's record. A handle can travel ahead of its actor's record (its creator still resolving the
   * constructor's arguments), so a missing record is asked again for a while before it counts as no such actor. */
  private async readState(
    actorId: string,
    set: Set<() => void>,
    settle: () => void,
    reject: (e: Error) => void,
  ): Promise<void> {
    for (let attempt = 0; attempt < 60; attempt++) {
      const info = await this.gcs()
        .then((g) => g.actors.get(actorId))
        .catch(() => undefined);
      if (this.known.get(actorId)?.state === 'ALIVE' || !set.has(settle)) return; // an event came first
      if (info) {
        if (!this.known.has(actorId) || this.known.get(actorId)!.incarnation <= info.incarnation)
          this.learn(actorId, info);
        return;
      }
      await new Promise((r) => setTimeout(r, 500));
    }
    set.delete(settle);
    reject(died(actorId, 'no such actor'));
  }
}

function died(actorId: string, cause?: string): ActorDiedError {
  return new ActorDiedError(`actor ${actorId} is dead: ${cause ?? 'unknown cause'}`, { actorId });
}
