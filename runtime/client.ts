// The runtime inside every driver and worker process: its bus, the objects it owns, its task submitter.
import { randomBytes } from 'node:crypto';
import { Bus } from './transport.ts';
import { subjects } from './subjects.ts';
import { defaults } from './config.ts';
import { encode } from './codec.ts';
import { GetTimeoutError, UsageError } from './errors.ts';
import { TaskSubmitter, type TaskSpec } from './task-submitter.ts';
import { normalizeRequest, type ResourceRequest, type SchedulingStrategy } from './scheduler.ts';
import { ObjectRef, setRefResolver } from '../object-store/object-ref.ts';
import { ObjectClient, objectSubjects } from '../object-store/object-client.ts';
import { NodeStore } from '../object-store/node-store.ts';
import type { ObjectLocation } from '../object-store/location.ts';

export interface ClientOptions {
  address: string;
  token: string;
  role: 'driver' | 'worker';
  procId?: string;
  /** The node daemon on this machine, if any: large objects go into its store. */
  localNode?: { nodeId: string; objectDir: string };
}

export interface TaskOptions extends ResourceRequest {
  schedulingStrategy?: SchedulingStrategy;
  /** Shown in `troupe list tasks` and errors; defaults to the function's name. */
  name?: string;
}

export interface WaitOptions {
  /** How many refs must be ready (default 1). */
  numReturns?: number;
  /** Return what is ready after this long (default: wait for numReturns). */
  timeoutMs?: number;
}

export function newId(): string {
  return randomBytes(12).toString('hex');
}

let current: Client | undefined;

/** The runtime of this process; throws a clear error before init(). */
export function currentClient(): Client {
  if (!current) throw new UsageError('troupe is not initialized: call `await init()` first');
  return current;
}

export function hasClient(): boolean {
  return current !== undefined;
}

export class Client {
  readonly procId: string;
  readonly objects: ObjectClient;
  readonly tasks: TaskSubmitter;
  private heartbeat: NodeJS.Timeout | undefined;

  private constructor(readonly bus: Bus, readonly o: ClientOptions) {
    this.procId = o.procId ?? newId();
    const store = o.localNode ? new NodeStore(o.localNode.objectDir) : undefined;
    this.objects = new ObjectClient({ bus, procId: this.procId, nodeId: o.localNode?.nodeId, store, inlineThreshold: defaults.inlineThreshold });
    this.tasks = new TaskSubmitter(bus, this.procId, this.objects.owned);
  }

  static async connect(o: ClientOptions): Promise<Client> {
    if (current) throw new UsageError('troupe is already initialized in this process: call shutdown() first');
    const bus = await Bus.connect({ address: o.address, token: o.token, name: `troupe-${o.role}-${process.pid}`, daemon: o.role === 'worker' });
    const c = new Client(bus, o);
    c.objects.serve();
    c.tasks.start();
    bus.serve(subjects.allObjects, () => c.ownedObjects());
    // Node daemons and the head watch this to take back leases of processes that died.
    const beat = () => { if (!bus.isClosed) bus.publish(subjects.hbProc(c.procId), {}); };
    beat();
    c.heartbeat = setInterval(beat, 1000);
    c.heartbeat.unref();
    await bus.flush(); // nobody may learn our id before our subscriptions are live
    current = c;
    setRefResolver((ref) => c.get(ref));
    return c;
  }

  /** Submits a task; argument problems (bad options, unserializable values) throw here, at the call site. */
  submitTask<R>(fn: { url: string; exportName: string; name: string }, args: unknown[], opts: TaskOptions): ObjectRef<R> {
    const demand = normalizeRequest({ numCpus: opts.numCpus, numGpus: opts.numGpus, memory: opts.memory, resources: opts.resources }, 1);
    const strategy = checkStrategy(opts.schedulingStrategy);
    const taskId = newId();
    const name = opts.name ?? fn.name;
    const spec: TaskSpec = { taskId, name, fn: { url: fn.url, exportName: fn.exportName }, args: encode(args), deps: {}, workingDir: process.cwd() };
    this.objects.owned.create(taskId, `task ${name}`);
    const deps = args.filter((a): a is ObjectRef => a instanceof ObjectRef);
    if (deps.length === 0) {
      this.tasks.submit(spec, demand, strategy);
    } else {
      // Send only when every top-level dependency exists; values pass from their holder to the worker, not through us.
      Promise.all(deps.map(async (d) => [d.id, await this.objects.locate(d)] as const)).then((locs) => {
        for (const [id, loc] of locs) {
          if ('error' in loc) { this.objects.owned.seal(taskId, loc); return; } // a failed input fails the task the same way
          spec.deps[id] = loc;
        }
        this.tasks.submit(spec, demand, strategy);
      }, (e: Error) => this.objects.owned.seal(taskId, { error: e }));
    }
    return new ObjectRef<R>(taskId, this.procId);
  }

  /** Stores a value; serialization errors throw here. */
  put<T>(value: T): ObjectRef<T> {
    const id = newId();
    const bytes = encode(value);
    this.objects.owned.create(id, 'put');
    this.objects.storeBytes(id, bytes).then(
      (loc) => this.objects.owned.seal(id, loc),
      (e: Error) => this.objects.owned.seal(id, { error: e }),
    );
    return new ObjectRef<T>(id, this.procId);
  }

  async get<T>(ref: ObjectRef<T>, timeoutMs?: number): Promise<T> {
    if (!(ref instanceof ObjectRef)) throw new TypeError(`get() takes an ObjectRef or an array of them, got ${describe(ref)}`);
    if (timeoutMs === undefined) return this.objects.get(ref);
    const loc = await withTimeout(this.objects.locate(ref), timeoutMs, () => new GetTimeoutError(`get(${ref.id}) timed out after ${timeoutMs} ms`));
    return this.objects.load<T>(ref.id, loc);
  }

  async wait<T>(refs: ObjectRef<T>[], o: WaitOptions = {}): Promise<[ObjectRef<T>[], ObjectRef<T>[]]> {
    if (!Array.isArray(refs) || refs.some((r) => !(r instanceof ObjectRef))) throw new TypeError('wait() takes an array of ObjectRefs');
    if (new Set(refs.map((r) => r.id)).size !== refs.length) throw new RangeError('wait() got the same ObjectRef twice');
    const numReturns = o.numReturns ?? 1;
    if (!Number.isInteger(numReturns) || numReturns < 0 || numReturns > refs.length) {
      throw new RangeError(`wait(): numReturns must be an integer from 0 to ${refs.length} (the number of refs), got ${numReturns}`);
    }
    const ready = new Set<string>();
    await new Promise<void>((resolve) => {
      let timer: NodeJS.Timeout | undefined;
      const done = () => { clearTimeout(timer); resolve(); };
      if (ready.size >= numReturns) return done();
      if (o.timeoutMs !== undefined) timer = setTimeout(done, o.timeoutMs);
      for (const r of refs) {
        const mark = () => { ready.add(r.id); if (ready.size >= numReturns) done(); };
        // A failed object is ready too: get() on it throws.
        if (!this.objects.owned.onSealed(r.id, mark)) this.objects.locate(r).then(mark, mark);
      }
    });
    return [refs.filter((r) => ready.has(r.id)), refs.filter((r) => !ready.has(r.id))];
  }

  private ownedObjects(): Array<{ id: string; owner: string; createdBy: string; state: string; size: number; where: string }> {
    const rows = [];
    for (const o of this.objects.owned.values()) {
      const loc = o.location;
      rows.push({
        id: o.id, owner: this.procId, createdBy: o.createdBy,
        state: !loc ? 'PENDING' : 'error' in loc ? 'FAILED' : 'READY',
        size: !loc ? 0 : 'inline' in loc ? loc.inline.length : 'size' in loc ? loc.size : 0,
        where: !loc || 'error' in loc ? '-' : 'inline' in loc ? 'inline' : 'node' in loc ? `node ${loc.node}` : `memory of ${loc.proc}`,
      });
    }
    return rows;
  }

  async close(): Promise<void> {
    if (current === this) { current = undefined; setRefResolver(undefined); }
    clearInterval(this.heartbeat);
    await this.tasks.close();
    await this.freeStoredObjects();
    await this.bus.close();
  }

  /** Objects we own that sit in node stores go with us (reference counting proper is the object store's job). */
  private async freeStoredObjects(): Promise<void> {
    const byNode = new Map<string, string[]>();
    for (const o of this.objects.owned.values()) {
      const loc: ObjectLocation | undefined = o.location;
      if (loc && 'node' in loc) byNode.set(loc.node, [...(byNode.get(loc.node) ?? []), o.id]);
    }
    await Promise.all([...byNode].map(([node, ids]) => this.bus.request(objectSubjects.nodeFree(node), { ids }, { timeoutMs: 2000 }).catch(() => undefined)));
  }
}

function checkStrategy(s: unknown): SchedulingStrategy {
  if (s === undefined || s === 'DEFAULT' || s === 'SPREAD') return s ?? 'DEFAULT';
  if (typeof s === 'object' && s !== null && typeof (s as { nodeId?: unknown }).nodeId === 'string') {
    const { nodeId, soft } = s as { nodeId: string; soft?: unknown };
    if (soft !== undefined && typeof soft !== 'boolean') throw new TypeError('schedulingStrategy.soft must be a boolean');
    return { nodeId, soft: soft as boolean | undefined };
  }
  throw new TypeError(`schedulingStrategy must be 'DEFAULT', 'SPREAD' or { nodeId, soft? }, got ${describe(s)}`);
}

function withTimeout<T>(p: Promise<T>, ms: number, err: () => Error): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const t = setTimeout(() => reject(err()), ms);
    p.then((v) => { clearTimeout(t); resolve(v); }, (e) => { clearTimeout(t); reject(e); });
  });
}

function describe(v: unknown): string {
  try { return typeof v === 'object' ? JSON.stringify(v) ?? String(v) : `${typeof v} ${String(v)}`; } catch { return typeof v; }
}
