// A worker process, started by its node daemon. Runs tasks one at a time, in arrival order, and hosts actors.
// What user code prints goes to its log file and to the driver that owns the work, prefixed like "(Trainer pid=1234)".
import { realpathSync } from 'node:fs';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { join, relative } from 'node:path';
import { AsyncLocalStorage } from 'node:async_hooks';
import { Core } from '../core/core.ts';
import { subjects } from '../protocol/subjects.ts';
import { ModuleRefusedError, ProtocolError, TaskError, UsageError } from '../base/errors.ts';
import { ActorHost, contextOf, type HostedContext } from './actor-host.ts';
import { lanePath } from '../bus/lane.ts';
import { userLaneAuth } from '../bus/lane-auth.ts';
import type { IssuedUser } from '../bus/credential.ts';
import type { Asker } from '../bus/bus.ts';
import type { CallFrom } from '../../object-store/object-client.ts';
import { NodeCheckpoints } from './node-checkpoints.ts';
import { chooseBackend, currentBackend, describeBackend, tensorflowThreads, tfjsLoaded } from '../tensor/backend.ts';
import type { TaskEvent, TaskReply, TaskSpec } from '../protocol/tasks.ts';
import type { JobRef } from '../protocol/jobs.ts';
import { request } from '../protocol/check.ts';
import { checkActorStart, checkCallProbe, checkProcActorStop, checkTaskSpec } from '../protocol/schemas.ts';
import { registerTsxFor } from '../base/launch.ts';
import { troupeRoot } from '../shipping/troupe-install.ts';
import { checkActorId } from '../protocol/ids.ts';
import { LIBRARY_ACTORS } from '../protocol/library-actors.ts';
import { checkModuleUrl, realPaths, within } from './module-guard.ts';

const env = (k: string): string => {
  const v = process.env[k];
  if (!v) {
    console.error(`troupe worker: ${k} is not set; workers are started by a node daemon`);
    process.exit(2);
  }
  return v;
};
const procId = env('TROUPE_WORKER_ID');
// Our node daemon gone, even while this module was still loading: nothing will give us work, and nobody would stop us.
process.on('disconnect', () => process.exit(0));
if (!process.connected) process.exit(0);
const nodeId = env('TROUPE_NODE_ID');
/** The user our node signed for this process (or its plain token), sent over the IPC channel first thing (never in
 * the environment, which /proc/<pid>/environ shows to user code for the life of the process). */
const { token, laneKeys } = await new Promise<{ token: string | IssuedUser; laneKeys: string[] }>((resolve) => {
  const take = (m: { type?: string; token?: string | IssuedUser; laneKeys?: unknown }) => {
    if (m?.type !== 'credential' || !m.token) return;
    process.off('message', take);
    const keys = Array.isArray(m.laneKeys) ? m.laneKeys.filter((k): k is string => typeof k === 'string') : [];
    resolve({ token: m.token, laneKeys: keys });
  };
  process.on('message', take);
});
const client = await Core.connect({
  address: env('TROUPE_ADDRESS'),
  token,
  role: 'worker',
  procId,
  localNode: {
    nodeId,
    objectDir: env('TROUPE_OBJECT_DIR'),
    objectStoreMemory: Number(env('TROUPE_OBJECT_STORE_MEMORY')),
  },
});
client.useCheckpoints(new NodeCheckpoints());
// Our node binds us to the job of our first lease, before that lease is granted; we serve that job for life.
// It also says where the job's project is here (`local.root`: the driver's root, or a copy shipped from its machine)
// and the job's environment variables, set before any of its code loads.
/** The copy of the job's project this worker loads from, when it is not the driver's root itself. */
let copyRoot: string | undefined;
/** This worker's troupe, and the driver's where it is elsewhere: URLs of troupe's own modules map between them. */
const OWN_TROUPE = pathToFileURL(troupeRoot()).href;
let driverTroupe: string | undefined;
type JobMessage = {
  type?: string;
  job?: JobRef;
  local?: { root?: string; env?: Record<string, string> };
  cpus?: number;
};
process.on('message', (m: JobMessage) => {
  if (m?.type !== 'job' || !m.job) return;
  if (!client.job) {
    client.job = m.job;
    for (const [k, v] of Object.entries(m.local?.env ?? {})) process.env[k] = v;
    tensorflowThreads(m.cpus ?? 0); // before any of the job's code can load TensorFlow
    const theirs = m.job.env?.troupe && pathToFileURL(m.job.env.troupe).href;
    if (theirs && theirs !== OWN_TROUPE) driverTroupe = theirs;
    if (m.local?.root && m.local.root !== m.job.root) {
      copyRoot = m.local.root;
      process.chdir(copyRoot); // actors too run in the copy (a task moves to its own working directory there)
      const copyUrl = pathToFileURL(realpathSync(copyRoot)).href;
      const driverUrl = pathToFileURL(m.job.root).href;
      client.shareUrl = (url) => {
        if (url.startsWith(`${copyUrl}/`)) return driverUrl + url.slice(copyUrl.length);
        if (driverTroupe && url.startsWith(`${OWN_TROUPE}/`)) return driverTroupe + url.slice(OWN_TROUPE.length);
        return url;
      };
      const copy = realpathSync(copyRoot);
      const driverRoot = m.job.root;
      client.workingDir = () =>
        within(copy, process.cwd()) ? join(driverRoot, relative(copy, process.cwd())) : driverRoot;
    }
  }
  process.send?.({ type: 'bound', jobId: client.job.id }); // never another job's: the node checks
});
/** Where a task runs, from the working directory its message names: that place when it is inside the job's root
 * (in the copy, when there is one), else the root. The job's root is its registered one; a message never moves a
 * task out of it. */
function taskDir(named: unknown, job: JobRef): string {
  const root = localRoot(job);
  if (typeof named !== 'string' || !within(job.root, named)) return root;
  // Checked once per directory: two realpaths a task (an lstat per path component) were a quarter of a worker's
  // time on tiny tasks. Only the job's own code could later swap a checked directory for a link out of the root.
  let dir = taskDirs.get(named);
  if (dir !== undefined) return dir;
  dir = copyRoot ? join(copyRoot, relative(job.root, named)) : named;
  try {
    dir = within(realpathSync(root), realpathSync(dir)) ? dir : root;
  } catch {
    return root; // not here (yet): the root, and asked again next time
  }
  if (taskDirs.size >= 256) taskDirs.clear();
  taskDirs.set(named, dir);
  return dir;
}
/** taskDir's answers, by the directory a message named. */
const taskDirs = new Map<string, string>();
/** A module URL of the driver's machine, here: by the most specific of the job's root (to the copy) and the driver's
 * troupe (to ours), so troupe installed inside the project is still ours, and a project inside troupe's own checkout
 * (never shipped) loads from ours. */
function localUrl(url: string): string {
  const path = fileURLToPath(url);
  const theirTroupe = driverTroupe && fileURLToPath(driverTroupe);
  const inTroupe = !!theirTroupe && within(theirTroupe, path);
  const inCopy = !!copyRoot && !!client.job && within(client.job.root, path);
  if (inCopy && !(inTroupe && theirTroupe!.length > client.job!.root.length))
    return pathToFileURL(join(copyRoot!, relative(client.job!.root, path))).href;
  if (inTroupe) return OWN_TROUPE + url.slice(driverTroupe!.length);
  return url; // troupe's own actors, or refused by loadModule
}
/** The job's root here: the copy, the driver's troupe mapped to ours (a project inside troupe's checkout), or as is. */
function localRoot(job: JobRef): string {
  if (copyRoot) return copyRoot;
  if (job.root !== mappedRoot?.root)
    mappedRoot = { root: job.root, here: fileURLToPath(localUrl(pathToFileURL(job.root).href)) };
  return mappedRoot.here;
}
/** localRoot's answer (asked for every task) for the job this worker serves. */
let mappedRoot: { root: string; here: string } | undefined;
// Callers on this machine send actor calls straight to us on this socket (in the node's private object directory).
// Lanes into this worker: only the credentials our node names (its cluster's drivers and workers) may open one. It
// names them again when they change (`troupe token create|revoke`): the lanes of a revoked one close.
const laneAuth =
  laneKeys.length && client.bus.user ? userLaneAuth({ user: client.bus.user, allowed: laneKeys }) : undefined;
if (laneAuth) {
  client.bus.useLaneAuth(laneAuth);
  process.on('message', (m: { type?: unknown; keys?: unknown }) => {
    if (m?.type !== 'lane-keys' || !Array.isArray(m.keys)) return;
    laneAuth.allow(m.keys.filter((k): k is string => typeof k === 'string'));
    client.bus.recheckLanes();
  });
}
const lane = await client.bus.listenLanes(lanePath(env('TROUPE_OBJECT_DIR'), process.pid));
// A task waiting in get() lends its CPU back to the node, so the tasks it waits for can run (no nested-task deadlock).
client.blockHook = (blocked) => client.bus.publish(subjects.nodeBlocked(nodeId), { workerId: procId, blocked });

// --- output to the owning driver ---------------------------------------------------------------
const logContext = new AsyncLocalStorage<HostedContext>();
// A process given to one actor ('process' isolation, the default), or running tasks one at a time, writes only for
// that actor's or the current task's owner. It needs no AsyncLocalStorage, whose promise hooks cost about a fifth of
// a busy actor's time on Node 20.
let soleContext: HostedContext | undefined;
const currentContext = (): HostedContext | undefined => soleContext ?? logContext.getStore();
let outbox = new Map<string, Array<{ prefix: string; text: string; stderr: boolean }>>();
function flushOutput(): void {
  if (outbox.size === 0) return;
  const sending = outbox;
  outbox = new Map();
  for (const [owner, lines] of sending) client.bus.publishTo(owner, subjects.log(owner), lines);
}
/** Runs user code with its output going to ctx.owner; what it printed is sent before its result (same connection, in
 * order). */
const inContext = async <T>(ctx: HostedContext, fn: () => Promise<T>): Promise<T> => {
  try {
    return soleContext ? await fn() : await logContext.run(ctx, fn);
  } finally {
    flushOutput();
    workDone = true;
  }
};
// Refs user code dropped are only counted as gone once V8 collects them, and a quiet worker may never collect: after
// work, while we hold refs, collect now and then so their owners can free what nobody uses.
let workDone = false;
const gc = (globalThis as { gc?: () => void }).gc;
setInterval(() => {
  if (workDone && gc && client.objects.refs.size > 0) {
    workDone = false;
    gc();
  }
}, 2000).unref();
for (const [stream, stderr] of [
  [process.stdout, false],
  [process.stderr, true],
] as const) {
  const write = stream.write.bind(stream) as (chunk: unknown, ...rest: unknown[]) => boolean;
  stream.write = ((chunk: unknown, ...rest: unknown[]) => {
    const ctx = currentContext();
    if (ctx) {
      const lines = outbox.get(ctx.owner) ?? [];
      lines.push({
        prefix: ctx.prefix,
        text: typeof chunk === 'string' ? chunk : Buffer.from(chunk as Uint8Array).toString(),
        stderr,
      });
      outbox.set(ctx.owner, lines);
    }
    return write(chunk, ...rest);
  }) as typeof stream.write;
}
setInterval(flushOutput, 50).unref(); // output of long-running calls, while they run
client.ownerHook = () => currentContext()?.owner;

// --- code loading --------------------------------------------------------------------------------
const exportsCache = new Map<string, unknown>();
/** troupe's own actor classes (the libraries' actors: Supervisor, ParamServer, Replica, InferenceReplica): these
 * exact modules load from wherever troupe is installed, besides the job's own. */
const LIBRARY_MODULES = realPaths(Object.values(LIBRARY_ACTORS));

/** Imports the module a function or class was defined in (checked by loadModule). One job for the life of this
 * process: what it imported is that job's code. */
async function loadExport(ref: { url: string; exportName: string }): Promise<unknown> {
  if (typeof ref?.exportName !== 'string') throw new UsageError('a module export is named by a string');
  const key = `${ref.url}#${ref.exportName}`;
  if (exportsCache.has(key)) return exportsCache.get(key);
  const mod = await loadModule(ref.url, true);
  if (!Object.hasOwn(mod, ref.exportName)) throw new UsageError(`${ref.url} has no export '${ref.exportName}'`);
  // The job computes with tfjs: choose the best backend that loads here before its code runs.
  if (tfjsLoaded() && !currentBackend())
    console.error(`troupe: tensor backend ${describeBackend(await chooseBackend())}`);
  exportsCache.set(key, mod[ref.exportName]);
  return mod[ref.exportName];
}

/** Imports a module of the job by the URL its driver named (mapped to the copy of its project here, if any), after
 * checking it (module-guard.ts): a file inside the job's registered root, or (`library`) exactly one of troupe's
 * library actor modules. Nothing is imported, so none of its code runs, when the check fails. Libraries load the
 * job's specs through it too, without `library`. */
async function loadModule(given: unknown, library = false): Promise<Record<string, unknown>> {
  if (!client.job) throw new ProtocolError('this worker was given work before its node bound it to a job');
  let root: string;
  try {
    root = realpathSync(localRoot(client.job));
  } catch (e) {
    throw new ModuleRefusedError(
      `cannot load ${String(given).slice(0, 200)} on node ${nodeId}: the job's root is missing here ` +
        `(${(e as Error).message})` +
        (copyRoot ? '' : ' (runtimeEnv: false: modules load from the same path on every node)'),
    );
  }
  const url = checkModuleUrl(given, {
    root,
    library: library ? LIBRARY_MODULES : undefined,
    localUrl,
    what: `on node ${nodeId}`,
  });
  await registerTsxFor(url, root);
  return (await import(url)) as Record<string, unknown>;
}
client.importModule = (url) => loadModule(url, false);

// --- tasks ---------------------------------------------------------------------------------------
// By task id: a task that starts and ends between two sends is reported once, FINISHED, not RUNNING then FINISHED.
// At most the latest MAX_TASK_EVENTS a send: the head keeps only the last 10,000 of the cluster, and thousands of tiny
// tasks a second would otherwise cost more to report than to run.
const MAX_TASK_EVENTS = 1000;
const events = new Map<string, TaskEvent>();
setInterval(() => {
  if (events.size) {
    client.bus.publish(subjects.evtTasks, [...events.values()]);
    events.clear();
  }
}, 250).unref();
function report(ev: TaskEvent): void {
  events.delete(ev.taskId); // (re)inserted last: the oldest go first
  events.set(ev.taskId, ev);
  if (events.size > MAX_TASK_EVENTS) events.delete(events.keys().next().value!);
}

async function run(spec: TaskSpec, asker: Asker): Promise<TaskReply> {
  // One object, changed as the task goes: a report is encoded when it is sent.
  const ev: TaskEvent = {
    taskId: spec.taskId,
    name: spec.name,
    state: 'RUNNING',
    nodeId,
    workerId: procId,
    pid: process.pid,
    startedAt: Date.now(),
  };
  report(ev);
  try {
    const exported = (await loadExport(spec.fn)) as { fn?: unknown } | undefined;
    if (typeof exported?.fn !== 'function')
      throw new UsageError(`${spec.fn.url} exports '${spec.fn.exportName}', which is not a remote function`);
    const from: CallFrom = { caller: spec.caller, asker };
    const args = await client.objects.resolveArgs(spec.args, spec.deps, from);
    const cwd = taskDir(spec.workingDir, client.job!);
    if (process.cwd() !== cwd) process.chdir(cwd);
    const started = performance.now();
    const value = await (exported.fn as (...a: unknown[]) => unknown)(...args);
    const ms = performance.now() - started;
    const result = await client.objects.store(spec.taskId, value, spec.caller);
    await from.confirmed; // refs among the arguments: before the caller lets go of them
    ev.state = 'FINISHED';
    ev.endedAt = Date.now();
    report(ev);
    return { result, ms };
  } catch (e) {
    const error = TaskError.from(e, `task ${spec.name}`);
    ev.state = 'FAILED';
    ev.endedAt = Date.now();
    ev.error = `${error.remoteName}: ${error.message}`;
    report(ev);
    return { result: { error } };
  }
}

// One task at a time: a lease stands for the resources of one task.
let tail: Promise<unknown> = Promise.resolve();
/** Tasks here whose answer has not gone yet: what a caller's probe asks about. */
const heldTasks = new Set<string>();
/** Per caller: the highest `seq` of its tasks that arrived here (a probe's `received`). */
const tasksArrived = new Map<string, number>();
client.bus.serveBatched(
  subjects.procTask(procId),
  request(checkTaskSpec, (spec: TaskSpec, asker: Asker) => {
    heldTasks.add(spec.taskId);
    if (spec.seq !== undefined && !((tasksArrived.get(spec.caller) ?? -1) >= spec.seq))
      tasksArrived.set(spec.caller, spec.seq);
    const p = tail.then(() => {
      // a task worker hosts nothing else
      soleContext = { owner: spec.owner, prefix: `(${spec.name} pid=${process.pid})` };
      return inContext(soleContext, () => run(spec, asker));
    });
    tail = p.catch(() => undefined);
    return p.finally(() => heldTasks.delete(spec.taskId));
  }),
  { keepAnswers: true },
);

// --- actors --------------------------------------------------------------------------------------
const actors = new ActorHost(client, loadExport, inContext);
client.bus.serve(
  subjects.procActorStart(procId),
  request(checkActorStart, (req) => {
    // Its id names the subject its calls come on (no wildcard), and it must be of the job this worker serves.
    checkActorId(req.spec.actorId, 'an actor start');
    if (!client.job || req.spec.job?.id !== client.job.id)
      throw new ProtocolError(
        `an actor start for job ${String(req.spec.job?.id).slice(0, 64)}: this worker serves ` +
          (client.job ? `job ${client.job.id} only` : 'no job yet'),
      );
    // Its node never gives this process to anything else now (and never gave it tasks still running).
    if (req.spec.isolation === 'process' && actors.size === 0) {
      soleContext = contextOf(req.spec);
      logContext.disable();
    }
    return actors.start(req.spec, req.incarnation).then((started) => ({ ...started, direct: lane }));
  }),
);
// A caller's probe: which of its tasks and actor calls this process still holds (see defaults.callProbeMs).
client.bus.serve(
  subjects.procProbe(procId),
  request(checkCallProbe, ({ ids, actorId, caller, replies }, msg: { reply?: string } | undefined) => {
    // Answers the caller lost go again first, so they reach it before this reply: those calls ran, and run once.
    for (const r of replies ?? []) client.bus.answerAgain(msg?.reply, r);
    const unknown = ids.filter((id) => !heldTasks.has(id) && !actors.holds(id));
    const received = !caller ? undefined : actorId ? actors.received(actorId, caller) : tasksArrived.get(caller);
    return received === undefined ? { unknown } : { unknown, received };
  }),
);
client.bus.serve(
  subjects.procActorStop(procId),
  request(checkProcActorStop, (req) => actors.stop(checkActorId(req.actorId, 'an actor stop'), req.graceMs ?? 0)),
);

process.on('SIGTERM', () => {
  void client.close().finally(() => process.exit(0));
});
// Ready only once the server has our subscriptions: the first task may be published the moment we say so.
await client.bus.flush();
process.send?.({ type: 'ready', lane }); // where callers on this machine send its tasks too
