// Schema-aware junk for the bus: for one valid message of a type, the same message broken every way a hostile or
// buggy sender could break it (nil, wrong types, missing and extra fields, huge, negative and NaN numbers, wildcard
// and over-long strings). Bounded: a few dozen variants per message.
import { subjects } from '../../runtime/protocol/subjects.ts';
import type { JobRef } from '../../runtime/protocol/jobs.ts';

const LONG = 'x'.repeat(5000);
const BAD_NUMBERS = [-1, Number.NaN, Number.POSITIVE_INFINITY, 1e308, 2 ** 53 + 1, 0.5];
const BAD_STRINGS = ['', '*', '>', 'a.b', '../../etc/passwd', LONG];

/** Values that replace a whole message. */
const WHOLE: unknown[] = [null, undefined, 0, -1, 'text', true, [], [null], {}, new Uint8Array(3), { batch: null }];

/** Each variant of `base` with one field broken, plus extra and whole-message junk. */
export function mutations(base: Record<string, unknown>): unknown[] {
  const out: unknown[] = [...WHOLE, { ...base, extra: LONG }, { ...base, constructor: 1, __proto__: null }];
  for (const [k, v] of Object.entries(base)) {
    const { [k]: _gone, ...without } = base;
    out.push(without, { ...base, [k]: null }, { ...base, [k]: [v] });
    if (typeof v === 'number') for (const n of BAD_NUMBERS) out.push({ ...base, [k]: n });
    else if (typeof v === 'string') for (const s of BAD_STRINGS) out.push({ ...base, [k]: s }, { ...base, [k]: 42 });
    else if (typeof v === 'object' && v !== null && !Array.isArray(v) && !(v instanceof Uint8Array)) {
      out.push({ ...base, [k]: 'text' });
      for (const m of mutations(v as Record<string, unknown>).slice(WHOLE.length)) out.push({ ...base, [k]: m });
    } else out.push({ ...base, [k]: 'text' }, { ...base, [k]: -1 });
  }
  return out;
}

/** A subject, one valid message of its type, and how messages travel there: alone, as `{ batch: [m] }` (requests
 * made with requestBatched) or as `[m]` (lists of events). */
export interface Target {
  subject: string;
  base: Record<string, unknown>;
  wrap?: 'batch' | 'list';
}

/** What goes on the wire for one variant. */
export function wrapped(t: Target, m: unknown): unknown {
  return t.wrap === 'batch' ? { batch: [m] } : t.wrap === 'list' ? [m] : m;
}

export interface FuzzIds {
  nodeIds: string[];
  /** A driver (this test's process). */
  driver: string;
  workerId: string;
  actorId: string;
  /** The worker hosting the actor (its calls are under that worker's subjects). */
  actorWorkerId: string;
  job: JobRef;
  /** The leading head's term (its messages to nodes carry it). */
  term: number;
}

/** For every subject troupe serves: where it is and one valid message of its type, with ids that match nothing live
 * and demands no node fits, so that a variant that stays valid changes nothing. Left out: nodeFenced (its valid
 * message stops a node: who may send it is a matter of permissions, not of shape), nodeJobSubmit (its valid message
 * runs a command) and jobLog (a stream, not a handler). */
export function fuzzTargets(ids: FuzzIds): Target[] {
  const ghost = 'ffffffffffffffff';
  const fakeJob = { id: 'fuzzjob', driver: ghost, root: '/nonexistent' };
  const spec = {
    actorId: ghost,
    className: 'Ghost',
    cls: { url: 'file:///nonexistent.js', exportName: 'Ghost' },
    args: [],
    deps: {},
    demand: { fuzz: 1 },
    strategy: 'DEFAULT',
    maxRestarts: 0,
    maxTaskRetries: 0,
    maxConcurrency: 1,
    namespace: 'fuzz',
    lifetime: 'owned',
    isolation: 'process',
    owner: ghost,
    workingDir: '/nonexistent',
    job: fakeJob,
  };
  const loc = { node: ids.nodeIds[0], size: 10 };
  const out: Target[] = [
    { subject: subjects.headLease, base: { reqId: 'r', clientId: ghost, job: fakeJob, demand: { fuzz: 1 } } },
    { subject: subjects.headLease, base: { cancel: 'r' } },
    { subject: subjects.headStatus, base: {} },
    { subject: subjects.headTasks, base: { limit: 5 } },
    { subject: subjects.headActorCreate, base: { spec } },
    { subject: subjects.headActorKill, base: { actorId: ghost, noRestart: true, cause: 'fuzz' } },
    { subject: subjects.headActorRestart, base: { actorId: ghost, supervisor: ghost } },
    { subject: subjects.headActorsOfOwner, base: { owner: ghost } },
    { subject: subjects.headCheckpointDelete, base: { job: fakeJob, name: 'job.fuzzjob.x' } },
    { subject: subjects.evtWorkerDied, base: { workerId: ghost, nodeId: ghost, pid: 1, cause: 'x', leaseIds: [] } },
    { subject: subjects.evtNodeDied, base: { nodeId: ghost, cause: 'fuzz' } },
    { subject: subjects.evtProcExited, base: { procId: ghost } },
    {
      subject: subjects.evtTasks,
      wrap: 'list',
      base: { taskId: 't', name: 'n', state: 'RUNNING', nodeId: ghost, workerId: ghost, pid: 1, startedAt: 1 },
    },
    { subject: subjects.evtActorState, base: { actorId: ghost, state: 'DEAD', incarnation: 1 } },
    { subject: subjects.hbProc(ghost), base: {} },
    { subject: subjects.allObjects, base: {} },
    { subject: subjects.log(ids.driver), wrap: 'list', base: { prefix: '(fuzz)', text: 'x', stderr: false } },
    { subject: subjects.headHello, base: { troupe: '0.0.0', protocol: 1, role: 'fuzz' } },
    { subject: subjects.hbNode(ghost), base: { nodeId: ghost, available: {}, gpuFree: [], leaseRequestsSeen: 0 } },
    { subject: subjects.procLeaseGranted(ids.driver), base: { reqId: 'nobody', error: 'x' } },
    { subject: subjects.jobShip(ids.job.id), base: { sha256: '0'.repeat(64) } },
    { subject: subjects.trainProgress('fuzz'), base: { epoch: 1, step: 1, of: 2 } },
    {
      subject: subjects.collective('fuzz', 0),
      base: { g: 0, op: 0, step: 0, part: 0, parts: 1, d: new Uint8Array(4) },
    },
    {
      subject: subjects.procTask(ids.workerId),
      wrap: 'batch',
      base: {
        taskId: 'fuzztask',
        name: 'fuzz',
        fn: { url: 'file:///nonexistent.js', exportName: 'x' },
        args: new Uint8Array(0),
        workingDir: '/nonexistent',
        owner: ghost,
        caller: ghost,
      },
    },
    { subject: subjects.procProbe(ids.workerId), base: { ids: ['fuzztask'] } },
    { subject: subjects.procActorStart(ids.workerId), base: { spec, incarnation: 1 } },
    { subject: subjects.procActorStop(ids.workerId), base: { actorId: ghost, graceMs: 0 } },
    {
      subject: subjects.actorCall(ids.actorWorkerId, ids.actorId, 0), // its first instance
      wrap: 'batch',
      base: { callId: 'c', method: 'nonexistentMethod', args: [], caller: ghost },
    },
  ];
  for (const node of ids.nodeIds) {
    out.push(
      {
        subject: subjects.nodeLease(node),
        base: { clientId: ghost, job: fakeJob, demand: { fuzz: 1 }, term: ids.term },
      },
      {
        subject: subjects.nodeLease(node),
        base: { clientId: ghost, job: fakeJob, demand: { fuzz: 1 }, actor: { spec, incarnation: 1 }, term: ids.term },
      },
      { subject: subjects.nodeRelease(node), base: { leaseId: ghost, busy: false } },
      { subject: subjects.nodeBlocked(node), base: { workerId: ghost, blocked: true } },
      { subject: subjects.nodeObjects(node), base: {} },
      { subject: subjects.nodeActorStop(node), base: { actorId: ghost, leaseId: ghost, graceMs: 0, term: ids.term } },
      { subject: subjects.nodeActors(node), base: {} },
      { subject: subjects.nodeJobStop(node), base: { submissionId: ghost } },
      { subject: subjects.obj.nodeSeal(node), base: { id: ghost, size: 10, owner: ghost } },
      { subject: subjects.obj.nodeRead(node), base: { id: ghost, offset: 0, length: 10 } },
      { subject: subjects.obj.nodeFree(node), base: { ids: [ghost] } },
      { subject: subjects.obj.nodeRestore(node), base: { id: ghost } },
      { subject: subjects.obj.nodeFetch(node), base: { id: ghost, size: 10, owner: ghost, from: [ghost] } },
      { subject: subjects.obj.nodeTouch(node), base: { id: ghost } },
    );
  }
  for (const proc of [ids.driver, ids.workerId])
    out.push(
      { subject: subjects.obj.procLocate(proc), base: { id: ghost } },
      { subject: subjects.obj.procRead(proc), base: { id: ghost, offset: 0, length: 10 } },
      { subject: subjects.obj.procBorrow(proc), base: { id: ghost, proc: ghost, add: true, seq: 1 } },
      { subject: subjects.obj.procCopied(proc), base: { id: ghost, node: ghost, location: loc } },
    );
  return out;
}
