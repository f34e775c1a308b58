// What `troupe status` shows of the work waiting for resources: one row per kind of demand (what it asks, where), with
// how many wait and the longest wait, as Ray's `ray status` does. A row per request would grow with the queue (tens of
// thousands of actors waiting for CPUs) past what one NATS message carries, and status would fail when it is most
// wanted.
import type { ResourceSet, SchedulingStrategy } from '../scheduling/placement.ts';
import type { PendingDemand } from '../protocol/cluster.ts';

/** The most rows: beyond them, the kinds waiting for the fewest are left out (counted in `left`). */
export const PENDING_ROWS = 100;

export interface WaitingRequest {
  demand: ResourceSet;
  strategy?: SchedulingStrategy;
  clientId: string;
  /** When it came (ms since the epoch). */
  since: number;
}

/** The requests grouped by demand and strategy, the most waiting first, at most PENDING_ROWS of them. */
export function pendingDemands(
  requests: Iterable<WaitingRequest>,
  now: number,
): { rows: PendingDemand[]; left: number } {
  const groups = new Map<string, PendingDemand & { owners: Set<string> }>();
  for (const r of requests) {
    const strategy = r.strategy ?? 'DEFAULT';
    const key = JSON.stringify([Object.entries(r.demand).sort(), strategy]);
    let g = groups.get(key);
    if (!g)
      groups.set(key, (g = { demand: r.demand, strategy, count: 0, clients: 0, waitingMs: 0, owners: new Set() }));
    g.count++;
    g.owners.add(r.clientId);
    g.waitingMs = Math.max(g.waitingMs, now - r.since);
  }
  const sorted = [...groups.values()].sort((a, b) => b.count - a.count || b.waitingMs - a.waitingMs);
  return {
    rows: sorted.slice(0, PENDING_ROWS).map(({ owners, ...row }) => ({ ...row, clients: owners.size })),
    left: Math.max(0, sorted.length - PENDING_ROWS),
  };
}
