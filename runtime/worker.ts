// A worker process, started by its node daemon. Runs tasks one at a time, in arrival order, and reports them.
import { realpathSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { sep } from 'node:path';
import { Client } from './client.ts';
import { decode } from './codec.ts';
import { subjects } from './subjects.ts';
import { TaskError, UsageError } from './errors.ts';
import { ObjectRef } from '../object-store/object-ref.ts';
import type { TaskSpec, TaskReply } from './task-submitter.ts';
import type { TaskEvent } from './head.ts';

const env = (k: string): string => {
  const v = process.env[k];
  if (!v) { console.error(`troupe worker: ${k} is not set; workers are started by a node daemon`); process.exit(2); }
  return v;
};
const procId = env('TROUPE_WORKER_ID');
const nodeId = env('TROUPE_NODE_ID');
const client = await Client.connect({
  address: env('TROUPE_ADDRESS'), token: env('TROUPE_TOKEN'), role: 'worker', procId,
  localNode: { nodeId, objectDir: env('TROUPE_OBJECT_DIR') },
});
delete process.env.TROUPE_TOKEN; // user code has no business reading it
// A task waiting in get() lends its CPU back to the node, so the tasks it waits for can run (no nested-task deadlock).
client.blockHook = (blocked) => client.bus.publish(subjects.nodeBlocked(nodeId), { workerId: procId, blocked });

const events: TaskEvent[] = [];
setInterval(() => {
  if (events.length) client.bus.publish(subjects.evtTasks, events.splice(0));
}, 250).unref();

type Callable = (...args: unknown[]) => unknown;
const functions = new Map<string, Callable>();

/** Imports the module the function was defined in, refusing anything outside the job's working directory. */
async function loadFunction(fn: TaskSpec['fn'], workingDir: string): Promise<Callable> {
  const key = `${fn.url}#${fn.exportName}`;
  const known = functions.get(key);
  if (known) return known;
  if (!fn.url.startsWith('file://')) throw new UsageError(`refusing to load ${fn.url}: only file: modules are loaded`);
  let file: string, root: string;
  try {
    file = realpathSync(fileURLToPath(fn.url));
    root = realpathSync(workingDir);
  } catch (e) {
    throw new UsageError(`cannot load ${fn.url} on node ${nodeId}: ${(e as Error).message} (modules load from the same path on every node)`);
  }
  if (!(file + sep).startsWith(root + sep)) throw new UsageError(`refusing to load ${file}: it is outside the job's working directory ${root}`);
  const mod = (await import(fn.url)) as Record<string, unknown>;
  const exported = mod[fn.exportName] as { fn?: unknown } | undefined;
  if (typeof exported?.fn !== 'function') throw new UsageError(`${fn.url} has no remote function exported as '${fn.exportName}'`);
  functions.set(key, exported.fn as Callable);
  return exported.fn as Callable;
}

async function run(spec: TaskSpec): Promise<TaskReply> {
  const ev: TaskEvent = { taskId: spec.taskId, name: spec.name, state: 'RUNNING', nodeId, workerId: procId, pid: process.pid, startedAt: Date.now() };
  events.push({ ...ev });
  try {
    const fn = await loadFunction(spec.fn, spec.workingDir);
    const args = decode<unknown[]>(spec.args);
    for (let i = 0; i < args.length; i++) {
      const a = args[i];
      if (a instanceof ObjectRef) args[i] = spec.deps[a.id] ? await client.objects.load(a.id, spec.deps[a.id]) : await client.get(a);
    }
    if (process.cwd() !== spec.workingDir) process.chdir(spec.workingDir);
    const value = await fn(...args);
    const result = await client.objects.store(spec.taskId, value);
    events.push({ ...ev, state: 'FINISHED', endedAt: Date.now() });
    return { result };
  } catch (e) {
    const error = TaskError.from(e, `task ${spec.name}`);
    events.push({ ...ev, state: 'FAILED', endedAt: Date.now(), error: `${error.remoteName}: ${error.message}` });
    return { result: { error } };
  }
}

// One task at a time: a lease stands for the resources of one task.
let tail: Promise<unknown> = Promise.resolve();
client.bus.serve(subjects.procTask(procId), (spec: TaskSpec) => {
  const p = tail.then(() => run(spec));
  tail = p.catch(() => undefined);
  return p;
});

process.on('disconnect', () => process.exit(0)); // our node daemon is gone
process.on('SIGTERM', () => { void client.close().finally(() => process.exit(0)); });
// Ready only once the server has our task subscription: the first task may be published the moment we say so.
await client.bus.flush();
process.send?.({ type: 'ready' });
