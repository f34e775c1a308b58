// One check per message type that crosses the bus (see check.ts). valibot schemas for the control plane; hand-written
// guards for the hot path (a task, an actor call: valibot's is() costs a noticeable share of a call there, see
// bench/workloads/message-checks.ts).
import * as v from 'valibot';
import { guardCheck, schemaCheck, thrownCheck } from './check.ts';
import { checkGraceMs, checkSubmissionId, checkSubmitRequest, type StopRequest } from './submissions.ts';
import type { ActorCall, ActorSpec, ActorStateEvent, CallReply } from './actors.ts';
import type { TaskReply, TaskSpec } from './tasks.ts';
import type { LocateAnswer } from './objects.ts';

/** Ids, names and subject tokens from the bus: bounded, and never a NATS wildcard or separator. */
const ID = /^[^\s.*>]{1,200}$/;
const id = v.pipe(v.string(), v.regex(ID, 'an id of 1 to 200 characters, no spaces, dots or wildcards'));
/** Causes and errors: they may carry a remote stack, so only very long ones are refused. */
const text = v.pipe(v.string(), v.maxLength(1_000_000));
const count = v.pipe(v.number(), v.safeInteger(), v.minValue(0));
const amount = v.pipe(v.number(), v.finite(), v.minValue(0));
const resources = v.record(v.pipe(v.string(), v.minLength(1), v.maxLength(200)), amount);
const bytes = v.instance(Uint8Array);
const fnRef = v.object({
  url: v.pipe(v.string(), v.maxLength(4096)),
  exportName: v.pipe(v.string(), v.maxLength(200)),
});
const strategy = v.union([v.picklist(['DEFAULT', 'SPREAD']), v.object({ nodeId: id, soft: v.optional(v.boolean()) })]);
/** Checked in full by checkJob() where it is used; here only its outline. */
const job = v.object({ id, driver: id, root: v.pipe(v.string(), v.maxLength(4096)) });
const callArgs = v.union([bytes, v.pipe(v.array(v.unknown()), v.maxLength(10_000))]);

export const actorSpec = v.object({
  actorId: id,
  className: v.pipe(v.string(), v.maxLength(1000)),
  cls: fnRef,
  args: callArgs,
  deps: v.record(v.string(), v.unknown()),
  demand: resources,
  strategy,
  maxRestarts: v.pipe(v.number(), v.safeInteger(), v.minValue(-1)),
  maxTaskRetries: v.pipe(v.number(), v.safeInteger(), v.minValue(-1)),
  maxConcurrency: v.pipe(v.number(), v.safeInteger(), v.minValue(1)),
  name: v.optional(v.pipe(v.string(), v.maxLength(200))),
  namespace: v.pipe(v.string(), v.maxLength(200)),
  lifetime: v.picklist(['owned', 'detached']),
  isolation: v.picklist(['process', 'shared']),
  owner: id,
  workingDir: v.pipe(v.string(), v.maxLength(4096)),
  job: v.optional(job),
  supervisor: v.optional(id),
  crashOnError: v.optional(v.boolean()),
  shutdownMs: v.optional(count),
  maxPendingCalls: v.optional(v.pipe(v.number(), v.safeInteger(), v.minValue(-1))),
  checkpointEvery: v.optional(v.object({ calls: v.optional(count), seconds: v.optional(amount) })),
});

/** The `actor` of a lease request: checked whole before the node reserves anything for it. */
const leaseActor = v.object({ spec: actorSpec, incarnation: count });

export const checkLeaseRequest = schemaCheck(
  'lease request',
  v.object({
    clientId: id,
    job,
    demand: resources,
    actor: v.optional(leaseActor),
    replyWithinMs: v.optional(amount),
    seq: v.optional(count),
    term: count,
  }),
);

export const checkLeaseRequestMsg = schemaCheck(
  'lease request to the head',
  v.union([
    v.object({ cancel: id }),
    v.object({ reqId: id, clientId: id, job, demand: resources, strategy: v.optional(strategy) }),
  ]),
);

const grant = v.object({
  leaseId: id,
  nodeId: id,
  workerId: id,
  pid: count,
  gpuIds: v.array(count),
  backend: v.optional(v.string()),
  direct: v.optional(v.pipe(v.string(), v.maxLength(4096))),
});
const busy = v.object({
  busy: v.literal(true),
  preparing: v.optional(v.literal(true)),
  available: resources,
  gpuFree: v.array(amount),
});

/** A node's answer to a lease request (the head checks it before it places anything on it). */
export const checkLeaseAnswer = schemaCheck('lease answer', v.union([busy, grant]));

export const checkLeaseGranted = schemaCheck(
  'lease grant message',
  v.union([v.object({ reqId: id, grant }), v.object({ reqId: id, error: v.instance(Error) })]),
);

export const checkHeartbeat = schemaCheck(
  'node heartbeat',
  v.object({
    nodeId: id,
    available: resources,
    gpuFree: v.array(amount),
    leaseRequestsSeen: count,
    workers: count,
    leases: count,
    malformed: v.optional(v.record(v.pipe(v.string(), v.maxLength(200)), count)),
    startedAt: v.optional(v.pipe(v.string(), v.maxLength(64))),
  }),
);

export const checkWorkerDied = schemaCheck(
  'worker_died event',
  v.object({
    workerId: id,
    nodeId: id,
    pid: count,
    cause: text,
    leaseIds: v.array(id),
    actorIds: v.array(id),
  }),
);

export const checkNodeDied = schemaCheck('node_died event', v.object({ nodeId: id, cause: v.optional(text) }));

export const checkActorState = schemaCheck<v.GenericSchema<ActorStateEvent>>(
  'actor_state event',
  v.object({
    actorId: id,
    state: v.picklist(['PENDING', 'ALIVE', 'RESTARTING', 'DEAD']),
    incarnation: count,
    cause: v.optional(text),
    supervisor: v.optional(id),
    held: v.optional(v.boolean()),
    normal: v.optional(v.boolean()),
    direct: v.optional(v.pipe(v.string(), v.maxLength(4096))),
    workerId: v.optional(id),
  }) as v.GenericSchema<ActorStateEvent>,
);

const taskEvent = v.object({
  taskId: id,
  name: v.pipe(v.string(), v.maxLength(10_000)),
  state: v.picklist(['RUNNING', 'FINISHED', 'FAILED']),
  nodeId: id,
  workerId: id,
  pid: count,
  startedAt: amount,
  endedAt: v.optional(amount),
  error: v.optional(text),
});
export const checkTaskEvents = schemaCheck('task events', v.pipe(v.array(taskEvent), v.maxLength(10_000)));

export const checkActorCreate = schemaCheck('actor create request', v.object({ spec: actorSpec }));
export const checkActorKill = schemaCheck(
  'actor kill request',
  v.object({ actorId: id, noRestart: v.optional(v.boolean()), cause: v.optional(text), by: v.optional(id) }),
);
export const checkActorRestart = schemaCheck('actor restart request', v.object({ actorId: id, supervisor: id }));
export const checkOwnerDone = schemaCheck('owner-done request', v.object({ owner: id }));
export const checkTasksQuery = schemaCheck(
  'tasks query',
  v.optional(v.nullable(v.object({ limit: v.optional(v.pipe(count, v.maxValue(100_000))) }))),
);
export const checkRelease = schemaCheck('lease release', v.object({ leaseId: id, busy: v.optional(v.boolean()) }));
export const checkBlocked = schemaCheck('blocked notice', v.object({ workerId: id, blocked: v.boolean() }));
export const checkNodeActorStop = schemaCheck(
  'actor stop request',
  v.object({ actorId: id, leaseId: v.optional(id), graceMs: v.optional(amount), term: count }),
);
export const checkProcActorStop = schemaCheck(
  'actor stop request',
  v.object({ actorId: id, graceMs: v.optional(amount) }),
);
export const checkActorStart = schemaCheck<v.GenericSchema<{ spec: ActorSpec; incarnation: number }>>(
  'actor start request',
  v.object({ spec: actorSpec, incarnation: count }) as v.GenericSchema<{ spec: ActorSpec; incarnation: number }>,
);
/** A caller asks which of its tasks or calls a worker still holds (queued, running, or its answer not yet sent). */
/** The caller whose tasks or calls they are, and for an actor's calls the actor (`received` answers for them).
 * `replies`: the reply subjects of the batches they went in, whose answers the worker sends again if it kept them. */
export const checkCallProbe = schemaCheck(
  'call probe',
  v.object({
    ids: v.pipe(v.array(id), v.maxLength(100_000)),
    actorId: v.optional(id),
    caller: v.optional(id),
    replies: v.optional(v.pipe(v.array(v.pipe(v.string(), v.maxLength(256))), v.maxLength(4096))),
  }),
);
/** The ids of a probe the worker does not hold: their answers went, or they never came. And `received`: the highest
 * `seq` of the caller's calls to the actor (or of its tasks to this worker) that reached the worker,
 * where the worker knows it. They reach it in the order they were sent, and the probe after them: one past it never
 * came, and never will. */
export const checkProbeAnswer = schemaCheck(
  'call probe answer',
  v.object({ unknown: v.pipe(v.array(id), v.maxLength(100_000)), received: v.optional(count) }),
);
/** `startedAt`: the incarnation of the node fenced (absent: whichever runs); `term`: the fencing head's. */
export const checkFenced = schemaCheck(
  'fence notice',
  v.object({ cause: v.optional(v.unknown()), startedAt: v.optional(v.string()), term: count }),
);
/** Requests whose body is not read (status, listings): any value, nothing acted on. */
export const anyBody = guardCheck<unknown>('request', () => undefined);

// --- the hot path: hand-written ----------------------------------------------------------------------------------

const isStr = (x: unknown, max = 4096): x is string => typeof x === 'string' && x.length <= max;
const isSeq = (x: unknown): x is number => Number.isSafeInteger(x) && (x as number) >= 0;
const isObj = (x: unknown): x is Record<string, unknown> => typeof x === 'object' && x !== null && !Array.isArray(x);
const isArgs = (x: unknown) => x instanceof Uint8Array || (Array.isArray(x) && x.length <= 10_000);

/** One task of a batch on procTask. */
export const checkTaskSpec = guardCheck<TaskSpec>('task', (x) => {
  if (!isObj(x)) return 'not an object';
  if (!isStr(x.taskId, 200) || !ID.test(x.taskId)) return 'taskId';
  if (!isStr(x.name, 10_000)) return 'name';
  const fn = x.fn as Record<string, unknown> | undefined;
  if (!isObj(fn) || !isStr(fn.url) || !isStr(fn.exportName, 200)) return 'fn { url, exportName }';
  if (!isArgs(x.args)) return 'args';
  if (x.deps !== undefined && !isObj(x.deps)) return 'deps';
  if (!isStr(x.workingDir) || !isStr(x.owner, 200) || !isStr(x.caller, 200)) return 'workingDir, owner, caller';
  if (x.seq !== undefined && !isSeq(x.seq)) return 'seq';
  return undefined;
});

/** One call of a batch on an actor's subject. */
export const checkActorCall = guardCheck<ActorCall>('actor call', (x) => {
  if (!isObj(x)) return 'not an object';
  if (!isStr(x.callId, 200) || !isStr(x.method, 200)) return 'callId, method';
  if (!isArgs(x.args)) return 'args';
  if (x.deps !== undefined && !isObj(x.deps)) return 'deps';
  if (!isStr(x.caller, 200)) return 'caller';
  if (x.seq !== undefined && !isSeq(x.seq)) return 'seq';
  return undefined;
});

/** Why x is not an ObjectLocation, or undefined. */
function locationProblem(x: unknown): string | undefined {
  if (!isObj(x)) return 'a location must be an object';
  if (x.refs !== undefined) {
    if (!Array.isArray(x.refs) || x.refs.length > 100_000) return 'refs';
    for (const r of x.refs) if (!isObj(r) || !isStr(r.id, 200) || !isStr(r.owner, 200)) return 'refs';
  }
  if ('inline' in x) return x.inline instanceof Uint8Array ? undefined : 'inline';
  if ('value' in x) {
    const t = typeof x.value;
    return x.value === null || t === 'number' || t === 'boolean' || t === 'undefined' || t === 'string'
      ? undefined
      : 'value';
  }
  if ('error' in x) return x.error instanceof Error ? undefined : 'error';
  const size = x.size;
  if (!Number.isSafeInteger(size) || (size as number) < 0) return 'size';
  if ('node' in x) {
    if (!isStr(x.node, 200)) return 'node';
    if (x.copies !== undefined && !(Array.isArray(x.copies) && x.copies.every((c) => isStr(c, 200)))) return 'copies';
    return undefined;
  }
  if ('proc' in x) return isStr(x.proc, 200) ? undefined : 'proc';
  return 'not inline, value, node, proc or error';
}

/** An owner's answer to a locate. */
export const checkLocateAnswer = guardCheck<LocateAnswer>('locate answer', (x) =>
  isObj(x) && x.pending === true ? undefined : locationProblem(x),
);

/** A worker's answer to a task (the caller checks it before sealing the result). */
export const checkTaskReply = guardCheck<TaskReply>('task reply', (x) => {
  if (!isObj(x)) return 'not an object';
  if (x.ms !== undefined && !(typeof x.ms === 'number' && x.ms >= 0)) return 'ms';
  return locationProblem(x.result);
});

/** An actor's answer to a call. */
export const checkCallReply = guardCheck<CallReply>('actor call reply', (x) => {
  if (!isObj(x)) return 'not an object';
  if (x.notRun === true) return undefined;
  return locationProblem(x.result);
});

/** Worker output for a driver (subjects.log). */
export const checkLogLines = schemaCheck(
  'log lines',
  v.pipe(
    v.array(v.object({ prefix: v.pipe(v.string(), v.maxLength(1000)), text: v.string(), stderr: v.boolean() })),
    v.maxLength(100_000),
  ),
);

/** A worker's answer to an actor start (the node checks it before it tells the head). */
export const checkActorStarted = schemaCheck(
  'actor start answer',
  v.object({
    backend: v.optional(v.pipe(v.string(), v.maxLength(1000))),
    direct: v.optional(v.pipe(v.string(), v.maxLength(4096))),
  }),
);

/** A node's answer to "which actors are here". */
export const checkActorIds = schemaCheck('actor id list', v.pipe(v.array(id), v.maxLength(1_000_000)));

/** `troupe job submit` and `stop` (protocol/submissions.ts has the checks). */
export const checkSubmit = thrownCheck('job submit request', checkSubmitRequest);
export const checkStop = thrownCheck('job stop request', (x): StopRequest => {
  const r = x as Partial<StopRequest> | null;
  return { submissionId: checkSubmissionId(r?.submissionId), graceMs: checkGraceMs(r?.graceMs) };
});

/** The head's lease in KV (protocol/cluster.ts), read by standby heads and node daemons. */
export const checkHeadLease = schemaCheck(
  'head lease',
  v.object({
    headId: id,
    term: count,
    hostname: v.pipe(v.string(), v.maxLength(1000)),
    pid: count,
    processSpace: v.pipe(v.string(), v.maxLength(200)),
    renewedAt: v.pipe(v.string(), v.maxLength(200)),
    released: v.optional(v.boolean()),
  }),
);

export const checkHeadStandby = schemaCheck(
  'standby head mark',
  v.object({
    headId: id,
    hostname: v.pipe(v.string(), v.maxLength(1000)),
    pid: count,
    since: v.pipe(v.string(), v.maxLength(200)),
  }),
);

/** A node's record in KV (anyone who may write the bucket could have written it). */
export const checkNodeInfo = schemaCheck(
  'node record',
  v.object({
    nodeId: id,
    hostname: v.pipe(v.string(), v.maxLength(1000)),
    address: v.optional(v.pipe(v.string(), v.maxLength(1000))),
    troupeVersion: v.optional(v.pipe(v.string(), v.maxLength(200))),
    protocolVersion: v.optional(v.number()),
    pid: count,
    total: resources,
    state: v.picklist(['ALIVE', 'DEAD']),
    startedAt: v.pipe(v.string(), v.maxLength(200)),
    deadAt: v.optional(v.string()),
    cause: v.optional(text),
    objectDir: v.pipe(v.string(), v.maxLength(4096)),
    objectStoreMemory: v.optional(amount),
    isHead: v.boolean(),
    workersRunAs: v.optional(v.object({ user: v.pipe(v.string(), v.maxLength(64)), uid: count })),
  }),
);
