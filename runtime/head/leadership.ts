// Which of the cluster's heads leads: a lease in KV (protocol/cluster.ts HeadLease), taken and renewed only by
// compare-and-set on the entry's revision, as etcd's and Consul's elections do. Each head goes by its own clock: a
// standby takes over once it has seen the entry unchanged for a whole lease, so no two machines' clocks need agree.
// The term grows at every takeover; nodes refuse the messages of an older one (fencing), which is what stops a leader
// that was paused or cut off from acting on what it believed before it learns it lost.
import { randomBytes } from 'node:crypto';
import { readFileSync, readlinkSync } from 'node:fs';
import { hostname } from 'node:os';
import type { KV, KvEntry } from '@nats-io/kv';
import type { Bus } from '../bus/bus.ts';
import { isAlive, sleep } from '../base/processes.ts';
import { openKv } from '../state/buckets.ts';
import { Table } from '../state/gcs.ts';
import {
  HEAD_LEASE_BUCKET,
  HEAD_LEASE_KEY,
  HEAD_STANDBY_PREFIX,
  type HeadLease,
  type HeadStandby,
} from '../protocol/cluster.ts';
import { checkHeadLease, checkHeadStandby } from '../protocol/schemas.ts';
import { checked } from '../protocol/check.ts';

export class Leadership {
  readonly headId = randomBytes(6).toString('hex');
  /** The term this head leads with; 0 until it leads. */
  term = 0;
  /** The lease entry's revision this head last wrote. */
  private revision = 0;
  /** When the write of the last renewal that landed was sent. */
  private renewedAt = 0;
  private highestTerm = 0;
  private renewTimer: NodeJS.Timeout | undefined;
  private renewal: Promise<void> | undefined;
  private stopped = false;
  /** As a standby: when it last wrote its mark. */
  private markedAt = 0;
  private readonly since = new Date().toISOString();
  /** As the leader: the standbys' marks, and when (by this head's clock) each was last written. */
  private readonly standbysSeen = new Map<string, { standby: HeadStandby; at: number }>();
  private stopStandbyWatch: (() => void) | undefined;
  /** Resolves once the standby watch is set up (or failed to be). */
  private standbyWatch: Promise<void> | undefined;
  private lose!: (cause: string) => void;
  /** Resolves, with why, once another head has taken the lease from this one. */
  readonly lost = new Promise<string>((resolve) => {
    this.lose = resolve;
  });

  private constructor(
    private readonly bus: Bus,
    private readonly kv: KV,
    private readonly leaseMs: number,
  ) {}

  /** On a connection that no flood of requests delays (the head's heartbeat one): renewals must not queue. A read or
   * write of the lease gives up after one lease (nats.js's default is 5 s): one lost in a NATS cluster (sent to a
   * server that is cut off) must not hold up a takeover for longer. */
  static async open(bus: Bus, leaseMs: number): Promise<Leadership> {
    const kv = await openKv(bus, HEAD_LEASE_BUCKET, { history: 1 }, Math.max(1000, leaseMs));
    return new Leadership(bus, kv, leaseMs);
  }

  /** Resolves once this head leads (true): at once where the lease is free (never taken, given up, or held by a process
   * of this machine that is gone), else once its holder has left it unrenewed for a whole lease. `waiting` is told the
   * leader once, if this head has to wait. False: stopped first. */
  async acquire(waiting?: (leader: HeadLease) => void): Promise<boolean> {
    let seen = -1;
    let seenAt = 0;
    let last: KvEntry | undefined;
    let told = false;
    while (!this.stopped) {
      const disconnects = this.bus.disconnects;
      const entry = await this.kv.get(HEAD_LEASE_KEY).catch(() => 'away' as const);
      if (entry === 'away') {
        // This head lost the bus since its last read: the leader may have too, and could not renew meanwhile. Its
        // lease counts again from the next read, so that a nats-server restart does not pass for a silent leader.
        if (this.bus.disconnects !== this.disconnectsSeen) seen = -1;
        // A read lost on a live connection: in a NATS cluster, one sent to the copy on a server that is cut off,
        // which its peers see as gone only when their route to it breaks (30 s or more). The lease still counts from
        // the last change seen; taking it is a compare-and-set on that revision, which a renewal meanwhile defeats.
        else if (seen >= 0 && last && Date.now() - seenAt >= this.leaseMs && (await this.take(last))) {
          this.afterTaking();
          return true;
        }
      } else {
        this.disconnectsSeen = disconnects;
        // Only a later revision is a change: a copy that lags may answer with an earlier one (see renewOnce()).
        if (entry && entry.revision > seen) {
          seen = entry.revision;
          seenAt = Date.now();
          last = entry;
        }
        const current = entry && last && last.revision > entry.revision ? last : entry;
        const held = current?.operation === 'PUT' ? this.read(current) : undefined;
        const free = !held || held.released || this.gone(held) || Date.now() - seenAt >= this.leaseMs;
        if (free && (await this.take(current ?? undefined))) {
          this.afterTaking();
          return true;
        }
        if (held && !free && !told) {
          told = true;
          waiting?.(held);
        }
        if (Date.now() - this.markedAt >= this.leaseMs) await this.mark();
      }
      // Often: the lease counts from when this head saw the last renewal, which a poll sees late by up to its period.
      await sleep(this.leaseMs / 10);
    }
    return false;
  }

  /** Connection losses counted when the lease was last read. */
  private disconnectsSeen = 0;

  /** Not awaited: the leader serves first. Both may wait seconds where the bus just lost its JetStream leader. */
  private afterTaking(): void {
    void this.kv.delete(this.markKey).catch(() => undefined);
    this.standbyWatch = this.watchStandbys();
  }

  /** Whether this head may act as the leader now: it holds the lease, and its last renewal was sent less than 4/5 of a
   * lease ago. A standby counts the lease from when it saw that renewal, which is later, so none can have taken over.
   * A head paused or cut off past that does nothing until a renewal lands (confirm()) or fails. */
  get valid(): boolean {
    return this.term > 0 && !this.stopped && Date.now() - this.renewedAt < this.leaseMs * 0.8;
  }

  /** Whether this head leads, renewing first if its lease lapsed, for as long as renewals fail for want of the bus
   * (nobody else can take the lease then either): false once another head holds it, or this head stops. */
  async confirm(): Promise<boolean> {
    while (!this.valid && this.term > 0 && !this.stopped) {
      await this.renew();
      if (!this.valid) await sleep(this.leaseMs / 10);
    }
    return this.valid;
  }

  /** The standbys heard from within three leases. One silent for ten is forgotten, its mark removed: a standby killed
   * without a word leaves no mark for ever. */
  standbys(): Array<HeadStandby & { lastSeenMsAgo: number }> {
    const now = Date.now();
    const out: Array<HeadStandby & { lastSeenMsAgo: number }> = [];
    for (const [key, { standby, at }] of this.standbysSeen) {
      const ago = now - at;
      if (ago > 10 * this.leaseMs) {
        this.standbysSeen.delete(key);
        void this.kv.delete(key).catch(() => undefined);
      } else if (ago <= 3 * this.leaseMs) out.push({ ...standby, lastSeenMsAgo: ago });
    }
    return out;
  }

  /** Stops renewing; a leader that still holds the lease gives it up, so that a standby takes over at once. */
  async stop(): Promise<void> {
    this.stopped = true;
    clearInterval(this.renewTimer);
    // A watch still being set up is stopped once it is, while the caller's connection is still open (a watch left on
    // a closed connection keeps its process alive); a bus too slow for that gets a lease's wait at most.
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([this.standbyWatch, new Promise((r) => (timer = setTimeout(r, this.leaseMs)))]);
    clearTimeout(timer);
    this.stopStandbyWatch?.();
    if (this.term === 0) {
      if (this.markedAt) await this.kv.delete(this.markKey).catch(() => undefined);
      return;
    }
    const released = { ...this.record(), released: true };
    await this.kv.update(HEAD_LEASE_KEY, JSON.stringify(released), this.revision).catch(() => undefined);
  }

  private get markKey(): string {
    return `${HEAD_STANDBY_PREFIX}${this.headId}`;
  }

  private async mark(): Promise<void> {
    const mark: HeadStandby = { headId: this.headId, hostname: hostname(), pid: process.pid, since: this.since };
    await this.kv.put(this.markKey, JSON.stringify(mark)).then(
      () => {
        this.markedAt = Date.now();
      },
      () => undefined,
    );
  }

  private async watchStandbys(): Promise<void> {
    this.stopStandbyWatch = await new Table<HeadStandby>(this.kv)
      .watch((key, value) => {
        if (!key.startsWith(HEAD_STANDBY_PREFIX)) return;
        if (value === undefined) return void this.standbysSeen.delete(key);
        try {
          this.standbysSeen.set(key, { standby: checked(checkHeadStandby, value), at: Date.now() });
        } catch {
          // counted and logged by checked()
        }
      })
      .catch(() => undefined);
    if (this.stopped) this.stopStandbyWatch?.(); // stopped while the watch was being set up
  }

  private async take(entry: KvEntry | undefined): Promise<boolean> {
    const term = this.highestTerm + 1;
    const value = JSON.stringify({ ...this.record(), term });
    const sent = Date.now();
    try {
      this.revision = entry
        ? await this.kv.update(HEAD_LEASE_KEY, value, entry.revision)
        : await this.kv.create(HEAD_LEASE_KEY, value);
    } catch {
      // Another head was quicker, or the answer was lost or late (a loaded machine, a cluster that lost a server)
      // while the write landed: then the lease is this head's.
      const now = await this.kv.get(HEAD_LEASE_KEY).catch(() => undefined);
      const lease = now?.operation === 'PUT' ? this.read(now) : undefined;
      if (!now || lease?.headId !== this.headId || lease.term !== term) return false;
      this.revision = now.revision;
    }
    this.term = term;
    this.renewedAt = sent;
    this.renewTimer = setInterval(() => void this.renew(), this.leaseMs / 3);
    return true;
  }

  /** One renewal at a time: a caller during one waits for it. */
  private renew(): Promise<void> {
    if (this.stopped) return Promise.resolve();
    this.renewal ??= this.renewOnce().finally(() => {
      this.renewal = undefined;
    });
    return this.renewal;
  }

  private async renewOnce(): Promise<void> {
    const sent = Date.now();
    try {
      this.revision = await this.kv.update(HEAD_LEASE_KEY, JSON.stringify(this.record()), this.revision);
      this.renewedAt = sent;
    } catch {
      // Either another head wrote the lease, or the bus is away (then nobody else can take it either: try again).
      const entry = await this.kv.get(HEAD_LEASE_KEY).catch(() => undefined);
      // A read may be answered by a copy that lags (a stream leader cut off that does not know it was replaced; any
      // copy, for a bucket read with direct gets): an entry older than our own write says nothing. Another head's
      // takeover is a later write, made on the revision it read.
      if (!entry || entry.revision <= this.revision) return;
      const now = this.read(entry);
      if (now?.headId === this.headId && now.term === this.term) {
        this.revision = entry.revision; // our write landed; its answer was lost
        this.renewedAt = sent;
        return;
      }
      this.stopped = true;
      clearInterval(this.renewTimer);
      this.lose(`head ${now?.headId ?? '?'} on ${now?.hostname ?? '?'} took the lease (term ${now?.term ?? '?'})`);
    }
  }

  private read(entry: KvEntry): HeadLease | undefined {
    let lease: HeadLease;
    try {
      lease = checked(checkHeadLease, JSON.parse(new TextDecoder().decode(entry.value)));
    } catch {
      return undefined; // not a lease: taken over as if free
    }
    this.highestTerm = Math.max(this.highestTerm, lease.term);
    return lease;
  }

  /** Its holder was a process of this machine that is gone: it cannot act any more, so nobody need wait for it. */
  private gone(l: HeadLease): boolean {
    if (l.processSpace !== processSpace) return false;
    return l.pid === process.pid ? l.headId !== this.headId : !isAlive(l.pid);
  }

  private record(): HeadLease {
    return {
      headId: this.headId,
      term: this.term,
      hostname: hostname(),
      pid: process.pid,
      processSpace,
      renewedAt: new Date().toISOString(),
    };
  }
}

/** This kernel boot and pid namespace: where a pid names the same process. Containers on one machine share the boot
 * but not the namespace; unknown (no /proc) matches nothing. */
const processSpace = (() => {
  try {
    const boot = readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();
    return `${boot}/${readlinkSync('/proc/self/ns/pid')}`;
  } catch {
    return `unknown-${randomBytes(8).toString('hex')}`;
  }
})();
