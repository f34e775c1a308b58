/**
 * Pure scheduling decisions: request validation, resource arithmetic, node choice and GPU id bookkeeping.
 * No I/O and no clocks, so the node daemon and the driver can share it and tests can drive it directly.
 */
import { formatBytes } from '../base/bytes.ts';
import { UsageError } from '../base/errors.ts';
import { keysOf } from '../base/option-keys.ts';

/** Resource amounts by name. Built-in names: 'CPU', 'GPU', 'memory' (bytes); anything else is a custom resource. */
export type ResourceSet = Record<string, number>;
export type SchedulingStrategy = 'DEFAULT' | 'SPREAD' | { nodeId: string; soft?: boolean };
export interface ResourceRequest {
  numCpus?: number;
  numGpus?: number;
  memory?: number;
  resources?: Record<string, number>;
}
export interface NodeView {
  nodeId: string;
  alive: boolean;
  total: ResourceSet;
  available: ResourceSet;
  /** Free fraction of each GPU id, when known: 0.8 free GPU split as 0.4 + 0.4 cannot take a 0.5 demand. */
  gpuFree?: number[];
  /** Silent for a while, not declared dead: it counts for feasibility (it may come back) but takes nothing now, not
   * even a demand of zero. */
  suspect?: boolean;
}
export type Placement =
  | { kind: 'place'; nodeId: string }
  | { kind: 'wait' } // feasible on some alive node's totals, but nothing free now (or no alive node yet)
  | { kind: 'infeasible'; message: string }; // no alive node could EVER fit it

/** Slack for float sums such as 0.1 + 0.2 GPUs. */
const EPS = 1e-9;
/** Ray's hybrid policy packs until a node would pass this utilization. */
const PACK_THRESHOLD = 0.5;
const BUILT_IN = ['CPU', 'GPU', 'memory'] as const;
const REQUEST_KEYS = keysOf<ResourceRequest>({ numCpus: true, numGpus: true, memory: true, resources: true });

function checkAmount(value: unknown, field: string): number {
  if (typeof value !== 'number') throw new UsageError(`${field} must be a number, got ${typeof value}`);
  if (Number.isNaN(value)) throw new UsageError(`${field} must not be NaN`);
  if (!Number.isFinite(value)) throw new UsageError(`${field} must be finite, got ${value}`);
  if (value < 0) throw new UsageError(`${field} must not be negative, got ${value}`);
  return value;
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Validates and normalizes a request into a demand. Defaults: numCpus defaultCpus (1 for tasks), others 0. Zero
 * entries are omitted.
 * Throws TypeError/RangeError with a clear message naming the bad field for: non-number, NaN, Infinity, negative;
 * numGpus > 1 that is not an integer (fractions only below 1, like Ray); a custom resource named CPU/GPU/memory;
 * unknown keys in the request object. */
export function normalizeRequest(req: ResourceRequest | undefined, defaultCpus = 1): ResourceSet {
  checkAmount(defaultCpus, 'defaultCpus');
  if (req === undefined) return defaultCpus > 0 ? { CPU: defaultCpus } : {};
  if (!isPlainObject(req)) throw new UsageError('resource request must be an object');
  for (const key of Object.keys(req)) {
    if (!REQUEST_KEYS.has(key)) {
      throw new UsageError(`unknown resource option '${key}' (expected numCpus, numGpus, memory or resources)`);
    }
  }
  const out: ResourceSet = {};
  const cpus = req.numCpus === undefined ? defaultCpus : checkAmount(req.numCpus, 'numCpus');
  if (cpus > 0) out.CPU = cpus;
  if (req.numGpus !== undefined) {
    const gpus = checkAmount(req.numGpus, 'numGpus');
    // A fraction shares one GPU id; above 1 it would have to straddle ids, which Ray refuses too.
    if (gpus > 1 && !Number.isInteger(gpus)) {
      throw new UsageError(`numGpus must be a whole number when above 1 (fractions only below 1), got ${gpus}`);
    }
    if (gpus > 0) out.GPU = gpus;
  }
  if (req.memory !== undefined) {
    const mem = checkAmount(req.memory, 'memory');
    if (mem > 0) out.memory = mem;
  }
  if (req.resources !== undefined) {
    const custom: unknown = req.resources;
    if (!isPlainObject(custom)) throw new UsageError('resources must be an object of {name: amount}');
    for (const [name, value] of Object.entries(custom)) {
      if ((BUILT_IN as readonly string[]).includes(name)) {
        throw new UsageError(
          `resources.${name} is built in; use ${name === 'CPU' ? 'numCpus' : name === 'GPU' ? 'numGpus' : 'memory'} ` +
            `instead`,
        );
      }
      if (name === '') throw new UsageError('resources must not contain an empty name');
      const amount = checkAmount(value, `resources.${name}`);
      if (amount > 0) out[name] = amount;
    }
  }
  return out;
}

/** Validates a scheduling strategy (from options or from the bus); undefined means DEFAULT. */
export function checkStrategy(s: unknown): SchedulingStrategy {
  if (s === undefined || s === 'DEFAULT' || s === 'SPREAD') return s ?? 'DEFAULT';
  if (isPlainObject(s) && typeof s.nodeId === 'string') {
    if (s.soft !== undefined && typeof s.soft !== 'boolean')
      throw new UsageError('schedulingStrategy.soft must be a boolean');
    return { nodeId: s.nodeId, soft: s.soft as boolean | undefined };
  }
  let shown: string;
  try {
    shown = JSON.stringify(s) ?? String(s);
  } catch {
    shown = typeof s;
  }
  throw new UsageError(`schedulingStrategy must be 'DEFAULT', 'SPREAD' or { nodeId, soft? }, got ${shown}`);
}

/** Checks resource amounts that came over the bus (a node's free resources): a plain object of finite, non-negative
 * numbers. */
export function checkResources(d: unknown, what = 'resources'): ResourceSet {
  if (!isPlainObject(d)) throw new UsageError(`${what} must be an object of resource amounts`);
  const out: ResourceSet = {};
  for (const [k, v] of Object.entries(d)) {
    if (k === '') throw new UsageError(`${what} has an empty resource name`);
    out[k] = checkAmount(v, `${what}.${k}`);
  }
  return out;
}

/** Checks a demand that came over the bus: resource amounts, and whole GPUs above 1 (free GPUs, unlike a demand, may be
 * 1.4). */
export function checkDemand(d: unknown): ResourceSet {
  const out = checkResources(d, 'demand');
  if ((out.GPU ?? 0) > 1 && !Number.isInteger(out.GPU))
    throw new UsageError(`demand.GPU above 1 must be a whole number, got ${out.GPU}`);
  return out;
}

export function fits(available: ResourceSet, demand: ResourceSet): boolean {
  for (const [k, need] of Object.entries(demand)) {
    if (need > 0 && (available[k] ?? 0) + EPS < need) return false;
  }
  return true;
}

function combine(a: ResourceSet, b: ResourceSet, sign: 1 | -1): ResourceSet {
  const out: ResourceSet = { ...a };
  for (const [k, v] of Object.entries(b)) {
    const r = (out[k] ?? 0) + sign * v;
    out[k] = Math.abs(r) < EPS ? 0 : r; // keep float dust from showing up as "CPU: 5.55e-17"
  }
  return out;
}

export function subtract(a: ResourceSet, b: ResourceSet): ResourceSet {
  return combine(a, b, -1);
}

export function add(a: ResourceSet, b: ResourceSet): ResourceSet {
  return combine(a, b, 1);
}

/** e.g. "{CPU: 1, GPU: 0.5, memory: 2.0 GiB, ssd: 1}": built-ins first, then custom names alphabetically. */
export function formatResources(r: ResourceSet): string {
  const custom = Object.keys(r)
    .filter((k) => !(BUILT_IN as readonly string[]).includes(k))
    .sort();
  const keys = [...BUILT_IN.filter((k) => k in r), ...custom];
  const parts = keys.map((k) => {
    const v = r[k] ?? 0;
    return `${k}: ${k === 'memory' ? formatBytes(v) : String(Number(v.toPrecision(12)))}`;
  });
  return `{${parts.join(', ')}}`;
}

/** Utilization after placing `demand`: max over the demanded kinds of used/total. */
function utilizationAfter(node: NodeView, demand: ResourceSet): number {
  let u = 0;
  for (const [k, need] of Object.entries(demand)) {
    const total = node.total[k] ?? 0;
    if (total <= 0) continue;
    const used = total - (node.available[k] ?? 0) + need;
    u = Math.max(u, used / total);
  }
  return u;
}

const byId = (a: NodeView, b: NodeView): number => (a.nodeId < b.nodeId ? -1 : a.nodeId > b.nodeId ? 1 : 0);

/** The node closest to fitting the demand, named in infeasible errors so the user sees what the cluster offers. */
function largestNode(alive: NodeView[], demand: ResourceSet): NodeView {
  const score = (n: NodeView): number => {
    let s = 0;
    for (const [k, need] of Object.entries(demand)) s += need > 0 ? Math.min((n.total[k] ?? 0) / need, 1) : 1;
    return s;
  };
  return [...alive].sort(
    (a, b) =>
      score(b) - score(a) ||
      (b.total.CPU ?? 0) - (a.total.CPU ?? 0) ||
      (b.total.GPU ?? 0) - (a.total.GPU ?? 0) ||
      byId(a, b),
  )[0]!;
}

function infeasible(alive: NodeView[], demand: ResourceSet): Placement {
  const big = largestNode(alive, demand);
  return {
    kind: 'infeasible',
    message:
      `no node can ever satisfy ${formatResources(demand)}; the largest node ${big.nodeId} has ` +
      `${formatResources(big.total)}`,
  };
}

/** Placement when nothing fits now: wait if some alive node could fit it once freed, else infeasible. */
function waitOrInfeasible(alive: NodeView[], demand: ResourceSet): Placement {
  if (alive.length === 0 || alive.some((n) => fits(n.total, demand))) return { kind: 'wait' };
  return infeasible(alive, demand);
}

function pickDefault(candidates: NodeView[], demand: ResourceSet): NodeView {
  const scored = candidates.map((n) => ({ n, u: utilizationAfter(n, demand) })).sort((a, b) => byId(a.n, b.n));
  const under = scored.filter((s) => s.u <= PACK_THRESHOLD + EPS);
  // Pack: the busiest node that stays under the threshold; otherwise spill to the emptiest one.
  const pool = under.length > 0 ? under : scored;
  const sign = under.length > 0 ? -1 : 1;
  let best = pool[0]!;
  for (const s of pool) if (sign * (s.u - best.u) < -EPS) best = s;
  return best.n;
}

function pickSpread(candidates: NodeView[], demand: ResourceSet, cursor: number): NodeView {
  const scored = candidates.map((n) => ({ n, u: utilizationAfter(n, demand) })).sort((a, b) => byId(a.n, b.n));
  const min = Math.min(...scored.map((s) => s.u));
  const tied = scored.filter((s) => s.u <= min + EPS);
  const i = ((Math.trunc(cursor) % tied.length) + tied.length) % tied.length;
  return tied[i]!.n;
}

/** Picks a node. DEFAULT = Ray's hybrid policy: among alive nodes where the demand fits now, prefer nodes whose
 * utilization after placement stays <= 0.5 (utilization = max over resource kinds in the demand of used/total),
 * choosing the most utilized of those (pack), ties broken by nodeId order; if none stays under 0.5, choose the least
 * utilized. SPREAD = among fitting nodes the least utilized, ties broken by rotating with opts.spreadCursor (caller
 * increments it). Node affinity {nodeId, soft:false} = only that node (infeasible if that node is dead/unknown or its
 * totals can never fit; wait if busy); soft:true = that node if it fits now, otherwise fall back to DEFAULT. Infeasible
 * message must name the demand and the largest alive node's totals, e.g. "no node can ever satisfy {CPU: 1, GPU: 4};
 * the largest node n-abc has {CPU: 8, GPU: 2, memory: 16.0 GiB}" (or "... there are no alive nodes" is NOT infeasible:
 * with zero alive nodes return wait). */
export function place(
  nodes: NodeView[],
  demand: ResourceSet,
  strategy: SchedulingStrategy = 'DEFAULT',
  opts: { spreadCursor?: number } = {},
): Placement {
  const alive = nodes.filter((n) => n.alive);
  if (typeof strategy === 'object') {
    const target = alive.find((n) => n.nodeId === strategy.nodeId);
    if (target && fitsNow(target, demand)) return { kind: 'place', nodeId: target.nodeId };
    if (!strategy.soft) {
      if (!target) {
        const state = nodes.some((n) => n.nodeId === strategy.nodeId) ? 'is dead' : 'is unknown';
        const what = formatResources(demand);
        return {
          kind: 'infeasible',
          message: `node ${strategy.nodeId} ${state}; cannot place ${what} there (hard node affinity)`,
        };
      }
      if (!fits(target.total, demand)) {
        return {
          kind: 'infeasible',
          message:
            `node ${target.nodeId} can never satisfy ${formatResources(demand)}; it has ` +
            `${formatResources(target.total)} (hard node affinity)`,
        };
      }
      return { kind: 'wait' };
    }
  }
  const candidates = alive.filter((n) => fitsNow(n, demand));
  if (candidates.length === 0) return waitOrInfeasible(alive, demand);
  const chosen =
    strategy === 'SPREAD' ? pickSpread(candidates, demand, opts.spreadCursor ?? 0) : pickDefault(candidates, demand);
  return { kind: 'place', nodeId: chosen.nodeId };
}

/** Fits the node's free resources, GPU ids included. */
function fitsNow(n: NodeView, demand: ResourceSet): boolean {
  if (n.suspect || !fits(n.available, demand)) return false;
  return !n.gpuFree || !demand.GPU || allocateGpus(n.gpuFree, demand.GPU) !== null;
}

function checkGpuAmount(amount: number): void {
  checkAmount(amount, 'GPU amount');
  if (amount > 1 && !Number.isInteger(amount))
    throw new UsageError(`GPU amount above 1 must be a whole number, got ${amount}`);
}

/** GPU id bookkeeping on one node. free[i] is the remaining fraction (0..1) of GPU id i.
 * amount < 1: pick one id with remaining >= amount, preferring the most-used id that still fits (so two 0.5 demands
 * share one id).
 * amount >= 1 (integer): pick `amount` ids that are entirely free (remaining === 1), lowest ids first.
 * Returns the chosen ids and the new free array (never mutates input), or null if it cannot be satisfied.
 * amount 0 → { ids: [], free }. */
export function allocateGpus(free: number[], amount: number): { ids: number[]; free: number[] } | null {
  checkGpuAmount(amount);
  if (amount === 0) return { ids: [], free: [...free] };
  const next = [...free];
  if (amount < 1) {
    let best = -1;
    for (let i = 0; i < free.length; i++) {
      const left = free[i]!;
      if (left + EPS >= amount && (best < 0 || left < free[best]! - EPS)) best = i;
    }
    if (best < 0) return null;
    const r = next[best]! - amount;
    next[best] = r < EPS ? 0 : r;
    return { ids: [best], free: next };
  }
  const ids: number[] = [];
  for (let i = 0; i < free.length && ids.length < amount; i++) if (free[i]! >= 1 - EPS) ids.push(i);
  if (ids.length < amount) return null;
  for (const i of ids) next[i] = 0;
  return { ids, free: next };
}

export function releaseGpus(free: number[], ids: number[], amount: number): number[] {
  checkGpuAmount(amount);
  const share = Math.min(amount, 1);
  const next = [...free];
  for (const i of ids) {
    if (!Number.isInteger(i) || i < 0 || i >= next.length)
      throw new UsageError(`GPU id ${i} is out of range (node has ${next.length})`);
    const r = next[i]! + share;
    next[i] = r > 1 - EPS ? 1 : r; // snap back to exactly 1 so whole-GPU demands see it as free
  }
  return next;
}
