// An inference pool, run from the driver: replica actors that serve one model, a router that sends each request to
// the least busy ready replica (at most maxOngoingRequests each, the rest wait here), and an autoscaler that keeps
// the replica count between min and max from the number of requests in the pool, as Ray Serve does.
import type { ActorHandle } from '../handle.ts';
import type { InferenceModel } from './inference-model.ts';
import { specRef, type SpecRef } from '../library/exported-spec.ts';
import type { InferenceReplica, InferenceReplicaConfig, ReplicaStats, Sample } from './inference-replica.ts';
import { UsageError, killActor, startLibraryActor } from '../library/runtime.ts';

export interface ServeOptions {
  /** Replicas kept at all times (default 1). */
  minReplicas?: number;
  /** Replicas the autoscaler may grow to (default minReplicas: no autoscaling). */
  maxReplicas?: number;
  /** Requests run together at most (default 32); 1 turns batching off. */
  maxBatchSize?: number;
  /** How long a replica holds a request while it waits for more to batch with (default 10 ms). */
  maxWaitMs?: number;
  /** Requests a replica is given at once (default 2 × maxBatchSize): a batch gathers while the last one runs. */
  maxOngoingRequests?: number;
  /** The autoscaler aims at this many requests in the pool per replica (default maxBatchSize). */
  targetOngoingRequests?: number;
  /** How long the load must call for more (fewer) replicas before the autoscaler adds (removes) them. */
  upscaleDelayMs?: number;
  downscaleDelayMs?: number;
  /** Resources of each replica (default 1 CPU, no GPU). */
  numCpus?: number;
  numGpus?: number;
  /** Told when the replica count changes. */
  onScale?(e: { from: number; to: number; load: number }): void;
}

export interface PoolStats {
  /** Replicas taking requests, and those loading their model. */
  replicas: number;
  starting: number;
  /** Requests sent to replicas and not answered yet, and those waiting here for a free replica. */
  ongoing: number;
  queued: number;
  completed: number;
  failed: number;
}

interface Member {
  handle: ActorHandle<InferenceReplica>;
  ongoing: number;
  ready: boolean;
  draining: boolean;
}
interface Waiting {
  input: Sample;
  resolve(v: Float32Array): void;
  reject(e: unknown): void;
}

const TICK_MS = 100;
/** Fewer requests per call cost more in calls than they gain in flow (unbatched pools: a batch is 1). */
const MIN_REQUESTS_PER_CALL = 16;

/** Starts a pool serving `model`; resolves once minReplicas replicas have loaded it. */
export async function serve(model: InferenceModel, o: ServeOptions = {}): Promise<InferencePool> {
  const pool = new InferencePool(
    await specRef(model, 'inference model', 'serve() takes an inferenceModel(...)'),
    model.spec.inputShape.reduce((a, b) => a * b, 1),
    o,
  );
  await pool.started;
  return pool;
}

export class InferencePool {
  private readonly members: Member[] = [];
  private readonly queue: Waiting[] = [];
  private readonly timer: NodeJS.Timeout;
  private readonly o: Required<Omit<ServeOptions, 'onScale'>> & Pick<ServeOptions, 'onScale'>;
  private completed = 0;
  private failed = 0;
  private closed = false;
  private dispatching = false;
  /** Since when the load has called for more (fewer) replicas than there are. */
  private upSince?: number;
  private downSince?: number;
  readonly started: Promise<void>;

  constructor(
    private readonly model: SpecRef,
    private readonly sampleSize: number,
    options: ServeOptions,
  ) {
    const min = options.minReplicas ?? 1;
    const maxBatchSize = options.maxBatchSize ?? 32;
    this.o = {
      minReplicas: min,
      maxReplicas: options.maxReplicas ?? min,
      maxBatchSize,
      maxWaitMs: options.maxWaitMs ?? 10,
      maxOngoingRequests: options.maxOngoingRequests ?? 2 * maxBatchSize,
      targetOngoingRequests: options.targetOngoingRequests ?? maxBatchSize,
      upscaleDelayMs: options.upscaleDelayMs ?? 1000,
      downscaleDelayMs: options.downscaleDelayMs ?? 10_000,
      numCpus: options.numCpus ?? 1,
      numGpus: options.numGpus ?? 0,
      onScale: options.onScale,
    };
    checkOptions(this.o);
    this.started = Promise.all(Array.from({ length: min }, () => this.add())).then(() => undefined);
    this.started.catch(() => this.close());
    this.timer = setInterval(() => this.autoscale(), TICK_MS).unref();
  }

  /** The model's output for one input (inputShape numbers, as a Float32Array or array). */
  predict(input: Sample): Promise<Float32Array> {
    if (this.closed) return Promise.reject(new UsageError('predict(): the inference pool is closed'));
    if ((!(input instanceof Float32Array) && !Array.isArray(input)) || input.length !== this.sampleSize) {
      const got =
        input && typeof input === 'object' && 'length' in input
          ? `${(input as object).constructor.name} of length ${input.length}`
          : typeof input;
      return Promise.reject(
        new UsageError(`predict() takes one input of ${this.sampleSize} numbers (Float32Array or array), got ${got}`),
      );
    }
    return new Promise((resolve, reject) => {
      this.queue.push({ input, resolve, reject });
      this.dispatch();
    });
  }

  stats(): PoolStats {
    const live = this.members.filter((m) => !m.draining);
    return {
      replicas: live.filter((m) => m.ready).length,
      starting: live.filter((m) => !m.ready).length,
      ongoing: this.members.reduce((n, m) => n + m.ongoing, 0),
      queued: this.queue.length,
      completed: this.completed,
      failed: this.failed,
    };
  }

  /** Each ready replica's batching record. */
  replicaStats(): Promise<ReplicaStats[]> {
    return Promise.all(this.members.filter((m) => m.ready).map((m) => m.handle.stats() as PromiseLike<ReplicaStats>));
  }

  /** Stops the replicas; requests not answered yet fail. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.timer);
    for (const w of this.queue.splice(0))
      w.reject(new UsageError('the inference pool was closed before this request ran'));
    await Promise.all(
      this.members
        .splice(0)
        .map((m) => killActor(m.handle.actorId, true, 'inference pool closed').catch(() => undefined)),
    );
  }

  /** Starts a replica; it takes requests once its model is loaded. */
  private async add(): Promise<void> {
    const config: InferenceReplicaConfig = {
      model: this.model,
      maxBatchSize: this.o.maxBatchSize,
      maxWaitMs: this.o.maxWaitMs,
    };
    // maxConcurrency above maxOngoingRequests: stats() gets in while a replica is full.
    // A request in flight when its replica dies is sent again to the restarted one (3 times): predict has no side
    // effects.
    const handle = startLibraryActor<InferenceReplica>(
      'InferenceReplica',
      [config],
      {
        numCpus: this.o.numCpus,
        numGpus: this.o.numGpus,
        maxRestarts: -1,
        maxConcurrency: this.o.maxOngoingRequests + 2,
      },
      3,
    );
    const member: Member = { handle, ongoing: 0, ready: false, draining: false };
    this.members.push(member);
    try {
      await member.handle.ready();
    } catch (e) {
      const at = this.members.indexOf(member); // gone already when the pool closed or retired it while it started
      if (at >= 0) this.members.splice(at, 1);
      throw e;
    }
    member.ready = true;
    this.dispatch();
  }

  /** Sends waiting requests to the least busy ready replicas that have room, at the end of this turn: the requests
   * made in one turn go to a replica in one message (the calls of a turn travel together). */
  private dispatch(): void {
    if (this.dispatching) return;
    this.dispatching = true;
    queueMicrotask(() => {
      this.dispatching = false;
      const calls = new Map<Member, Waiting[]>();
      while (this.queue.length) {
        let best: Member | undefined;
        for (const m of this.members) {
          if (m.ready && !m.draining && m.ongoing < this.o.maxOngoingRequests && (!best || m.ongoing < best.ongoing))
            best = m;
        }
        if (!best) break;
        best.ongoing++;
        const to = calls.get(best) ?? calls.set(best, []).get(best)!;
        to.push(this.queue.shift()!);
      }
      // In calls of a batch or so each: a replica answers a call once all its requests ran, so answers come back
      // batch by batch, and the pool refills the replica while it computes instead of after all it was given.
      const chunk = Math.max(this.o.maxBatchSize, MIN_REQUESTS_PER_CALL);
      for (const [m, ws] of calls) for (let i = 0; i < ws.length; i += chunk) this.send(m, ws.slice(i, i + chunk));
    });
  }

  private send(m: Member, ws: Waiting[]): void {
    const packed = new Float32Array(ws.length * this.sampleSize);
    ws.forEach((w, i) => packed.set(w.input, i * this.sampleSize));
    Promise.resolve(m.handle.predict(packed, ws.length))
      .then(
        (ys) => {
          this.completed += ws.length;
          const per = ys.length / ws.length;
          ws.forEach((w, i) => w.resolve(ys.slice(i * per, (i + 1) * per)));
        },
        (e: unknown) => {
          this.failed += ws.length;
          for (const w of ws) w.reject(e);
        },
      )
      .finally(() => {
        m.ongoing -= ws.length;
        this.dispatch();
      });
  }

  private autoscale(): void {
    if (this.closed) return;
    this.retireDrained();
    const live = this.members.filter((m) => !m.draining);
    const load = this.queue.length + this.members.reduce((n, m) => n + m.ongoing, 0);
    const desired = Math.min(
      this.o.maxReplicas,
      Math.max(this.o.minReplicas, Math.ceil(load / this.o.targetOngoingRequests)),
    );
    const now = Date.now();
    this.upSince = desired > live.length ? (this.upSince ?? now) : undefined;
    this.downSince = desired < live.length ? (this.downSince ?? now) : undefined;
    if (this.upSince !== undefined && now - this.upSince >= this.o.upscaleDelayMs) {
      this.upSince = undefined;
      this.o.onScale?.({ from: live.length, to: desired, load });
      // a replica that cannot start is dropped; the next tick may try again
      for (let i = live.length; i < desired; i++) this.add().catch(() => undefined);
    } else if (this.downSince !== undefined && now - this.downSince >= this.o.downscaleDelayMs) {
      this.downSince = undefined;
      // One at a time, the least busy: it takes no new requests and stops once its own are answered.
      const idle = live.filter((m) => m.ready).sort((a, b) => a.ongoing - b.ongoing)[0] ?? live[live.length - 1];
      this.o.onScale?.({ from: live.length, to: live.length - 1, load });
      idle.draining = true;
      this.retireDrained();
    }
  }

  private retireDrained(): void {
    for (const m of this.members.filter((x) => x.draining && x.ongoing === 0)) {
      this.members.splice(this.members.indexOf(m), 1);
      killActor(m.handle.actorId, true, 'inference pool scaled down').catch(() => undefined);
    }
  }
}

function checkOptions(o: Required<Omit<ServeOptions, 'onScale'>>): void {
  const whole = (k: keyof typeof o, least: number) => {
    if (!Number.isInteger(o[k]) || (o[k] as number) < least)
      throw new UsageError(`serve(): ${k} must be a whole number >= ${least}, got ${o[k]}`);
  };
  whole('minReplicas', 1);
  whole('maxReplicas', 1);
  whole('maxBatchSize', 1);
  whole('maxOngoingRequests', 1);
  if (o.maxReplicas < o.minReplicas)
    throw new UsageError(`serve(): maxReplicas (${o.maxReplicas}) is below minReplicas (${o.minReplicas})`);
  for (const k of ['maxWaitMs', 'upscaleDelayMs', 'downscaleDelayMs', 'numCpus', 'numGpus'] as const) {
    if (!(Number.isFinite(o[k]) && o[k] >= 0)) throw new UsageError(`serve(): ${k} must be a number >= 0, got ${o[k]}`);
  }
  if (!(o.targetOngoingRequests > 0))
    throw new UsageError(`serve(): targetOngoingRequests must be above 0, got ${o.targetOngoingRequests}`);
}
