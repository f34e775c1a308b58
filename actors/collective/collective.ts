// Collective operations among a group of processes (usually actors): allreduce, broadcast, barrier, as MPI and Ray's
// ray.util.collective have them. Members talk to each other directly; the head is not involved. Chunks (under the
// server's max_payload) go over NATS until the receiver's acknowledgement names its lane: a member on the same machine
// is then sent to on that Unix socket: one hop instead of two, and no server to wake.
// Allreduce is recursive doubling for 2 members, and for a power of two and a short array (latency-bound: log2 N
// rounds, each member swapping its whole array with one other), else a ring (bandwidth-bound: each member sends and
// receives 2(N-1)/N of the data, in 2(N-1) rounds).
import { basename, dirname } from 'node:path';
import {
  TroupeError,
  NoRespondersError,
  RequestTimeoutError,
  registerErrorClass,
  chunkSize,
  bus,
  request,
  guardCheck,
  subjects,
  type Subscription,
  UsageError,
} from '../library/runtime.ts';

/** A collective could not complete: a member did not answer in time, or left. */
export class CollectiveError extends TroupeError {}
registerErrorClass(CollectiveError);

export type ReduceOp = 'sum' | 'mean' | 'max' | 'min';
type Numeric = Float32Array | Float64Array | Int32Array | Uint8Array;
/** The parts of a tfjs tensor used here; the result is made with the same tfjs. */
interface TensorLike {
  shape: number[];
  dtype: string;
  data(): Promise<ArrayLike<number>>;
}

export interface GroupOptions {
  /** This member's place in the group, 0 to worldSize - 1. */
  rank: number;
  worldSize: number;
  /** Bumped when the group re-forms (after a member restarts): messages of another generation are dropped. */
  generation?: number;
  /** A collective waiting longer than this for a member fails with CollectiveError (default 60 s). */
  timeoutMs?: number;
}

interface Chunk {
  g: number;
  op: number;
  step: number;
  part: number;
  parts: number;
  d: Uint8Array;
}

const NAME = /^[A-Za-z0-9_-]{1,64}$/;

/** A chunk's acknowledgement: taken; from another generation; or taken, and the receiver's lane is this socket. */
type Ack = true | { stale: true } | { lane: string };

/** Above this, a group of 4 or more takes the ring: recursive doubling sends log2 N whole arrays per member. */
const PAIRWISE_MAX_BYTES = 256 * 1024;

const count = (x: unknown) => Number.isSafeInteger(x) && (x as number) >= 0;
/** A chunk from the bus, checked before it is stored or combined. */
const checkChunk = guardCheck<Chunk>('collective chunk', (x) => {
  const c = x as Partial<Chunk> | null;
  if (typeof c !== 'object' || c === null) return 'not an object';
  if (!Number.isSafeInteger(c.g) || !count(c.op) || !count(c.step) || !count(c.part) || !count(c.parts))
    return 'g, op, step, part, parts must be whole numbers';
  return c.d instanceof Uint8Array ? undefined : 'd must be bytes';
});

/** Joins a group: from now on this process receives its share of the group's collectives. Every member must call
 * the same collectives in the same order, as in MPI. */
export function joinGroup(name: string, o: GroupOptions): CollectiveGroup {
  if (!NAME.test(name))
    throw new UsageError(`group name ${JSON.stringify(name)}: use 1 to 64 letters, digits, '-' or '_'`);
  if (!Number.isInteger(o.worldSize) || o.worldSize < 1)
    throw new UsageError(`worldSize must be a positive integer, got ${o.worldSize}`);
  if (!Number.isInteger(o.rank) || o.rank < 0 || o.rank >= o.worldSize)
    throw new UsageError(`rank must be an integer from 0 to ${o.worldSize - 1}, got ${o.rank}`);
  return new CollectiveGroup(name, o.rank, o.worldSize, o.generation ?? 0, o.timeoutMs ?? 60_000);
}

export class CollectiveGroup {
  private seq = 0;
  /** Chunks that came before anyone asked for them, and askers waiting for chunks. */
  private readonly inbox = new Map<string, Chunk>();
  private readonly waiting = new Map<string, (c: Chunk) => void>();
  private readonly sub: Subscription;
  private readonly bus = bus();
  private left = false;
  /** Members' subjects this member sends to on a lane. */
  private readonly routed = new Set<string>();

  constructor(
    readonly name: string,
    readonly rank: number,
    readonly worldSize: number,
    readonly generation: number,
    private readonly timeoutMs: number,
  ) {
    const lane = this.bus.ownLane;
    const taken: Ack = lane ? { lane } : true;
    // Batched requests: the kind a lane carries.
    this.sub = this.bus.serveBatched(
      subjects.collective(name, rank),
      request(checkChunk, (c: Chunk): Ack => {
        if (c.g !== this.generation) return { stale: true }; // from before the group re-formed
        const key = `${c.op}.${c.step}.${c.part}`;
        const w = this.waiting.get(key);
        if (w) {
          this.waiting.delete(key);
          w(c);
        } else this.inbox.set(key, c);
        return taken;
      }),
    );
  }

  /** Combines every member's array (or tensor) element-wise; each gets the result, as the type it gave. */
  async allreduce<T extends Numeric | TensorLike>(x: T, op: ReduceOp = 'sum'): Promise<T> {
    const data = await this.toArray(x);
    const n = this.worldSize;
    const seq = this.next();
    const powerOfTwo = (n & (n - 1)) === 0;
    if (n > 1 && powerOfTwo && (n === 2 || data.byteLength <= PAIRWISE_MAX_BYTES))
      await this.recursiveDoubling(seq, data, op);
    else if (n > 1) await this.ring(seq, data, op);
    if (op === 'mean') for (let i = 0; i < data.length; i++) data[i] /= n;
    await this.letRepliesGo();
    return this.fromArray(x, data);
  }

  /** In round k each member swaps its array with the member 2^k ranks away and combines the two. Both combine the
   * same two values (a + b there, b + a here: the same bits), so every member ends with the same result. */
  private async recursiveDoubling(seq: number, data: Numeric, op: ReduceOp): Promise<void> {
    for (let step = 0, mask = 1; mask < this.worldSize; step++, mask <<= 1) {
      const partner = this.rank ^ mask;
      const [, got] = await Promise.all([this.send(partner, seq, step, data), this.receive(seq, step, data, partner)]);
      combine(data, got, op);
    }
  }

  private async ring(seq: number, data: Numeric, op: ReduceOp): Promise<void> {
    const n = this.worldSize;
    const bounds = segments(data.length, n);
    const seg = (i: number) => data.subarray(bounds[mod(i, n)], bounds[mod(i, n) + 1]) as Numeric;
    const [left, right] = [mod(this.rank - 1, n), mod(this.rank + 1, n)];
    // Reduce-scatter: after n-1 steps this member holds the full reduction of segment rank+1.
    for (let s = 0; s < n - 1; s++) {
      const [, got] = await Promise.all([
        this.send(right, seq, s, seg(this.rank - s)),
        this.receive(seq, s, seg(this.rank - s - 1), left),
      ]);
      combine(seg(this.rank - s - 1), got, op);
    }
    // All-gather: pass the reduced segments round the ring.
    for (let s = 0; s < n - 1; s++) {
      const step = n - 1 + s;
      const target = seg(this.rank - s);
      const [, got] = await Promise.all([
        this.send(right, seq, step, seg(this.rank + 1 - s)),
        this.receive(seq, step, target, left),
      ]);
      target.set(got);
    }
  }

  /** `root`'s value, on every member. Members other than the root pass a value of the same type and length: its
   * contents are ignored. */
  async broadcast<T extends Numeric | TensorLike>(x: T, root = 0): Promise<T> {
    if (!Number.isInteger(root) || root < 0 || root >= this.worldSize)
      throw new UsageError(`root must be a rank from 0 to ${this.worldSize - 1}, got ${root}`);
    const data = await this.toArray(x);
    const seq = this.next();
    if (this.rank === root) {
      await Promise.all(
        Array.from({ length: this.worldSize }, (_, r) => r)
          .filter((r) => r !== root)
          .map((r) => this.send(r, seq, 0, data)),
      );
    } else if (this.worldSize > 1) {
      data.set(await this.receive(seq, 0, data, root));
    }
    await this.letRepliesGo();
    return this.fromArray(x, data);
  }

  /** Returns once every member has called it. */
  async barrier(): Promise<void> {
    await this.allreduce(new Int32Array(1));
  }

  /** Stops receiving for this group. */
  leave(): void {
    this.left = true;
    this.sub.unsubscribe();
    for (const subject of this.routed) this.bus.route(subject, undefined);
    this.routed.clear();
    for (const w of this.waiting.values()) w({ g: -1, op: -1, step: -1, part: -1, parts: 0, d: new Uint8Array() });
    this.waiting.clear();
    this.inbox.clear();
  }

  /** Our acknowledgements of the last chunks leave at the end of this turn of the event loop. Returning before
   * that would hold them behind whatever the caller computes next, and hold up the members waiting for them. */
  private letRepliesGo(): Promise<void> {
    return new Promise((r) => setImmediate(r));
  }

  private next(): number {
    if (this.left) throw new CollectiveError(`this member left group ${this.name}`);
    return this.seq++;
  }

  /** Sends a segment in chunks, several in flight; a member not there yet (starting, restarting) is asked again. */
  private async send(to: number, op: number, step: number, seg: Numeric): Promise<void> {
    const bytes = new Uint8Array(seg.buffer, seg.byteOffset, seg.byteLength);
    const size = chunkSize(this.bus);
    const parts = Math.max(1, Math.ceil(bytes.length / size));
    const deadline = Date.now() + this.timeoutMs;
    const subject = subjects.collective(this.name, to);
    await Promise.all(
      Array.from({ length: parts }, async (_, part) => {
        const chunk: Chunk = {
          g: this.generation,
          op,
          step,
          part,
          parts,
          d: bytes.subarray(part * size, (part + 1) * size),
        };
        for (let wait = 20; ; wait = Math.min(wait * 2, 500)) {
          try {
            const ack = await this.request(subject, chunk, deadline);
            if (typeof ack === 'object' && ack !== null && 'stale' in ack)
              throw new CollectiveError(`group ${this.name}: rank ${to} is in another generation of the group`);
            if (typeof ack === 'object' && ack !== null && 'lane' in ack) this.takeLane(subject, ack.lane);
            return;
          } catch (e) {
            if (!(e instanceof NoRespondersError) || Date.now() + wait > deadline)
              throw this.failed(e, `sending to rank ${to}`);
            await new Promise((r) => setTimeout(r, wait));
          }
        }
      }),
    );
  }

  /** One chunk, on the member's lane when it named one, else over NATS; its acknowledgement by the deadline. */
  private request(subject: string, chunk: Chunk, deadline: number): Promise<unknown> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new RequestTimeoutError(`no acknowledgement in ${this.timeoutMs} ms`)),
        Math.max(1, deadline - Date.now()),
      );
      this.bus.requestBatched(subject, {
        body: chunk,
        answered: (ack) => {
          clearTimeout(timer);
          resolve(ack);
        },
        failed: (e) => {
          clearTimeout(timer);
          reject(e);
        },
      });
    });
  }

  /** Sends to a member on the lane its acknowledgement named (from the bus: untrusted), if that is a worker's socket
   * of this process's own node: never another path on this machine. */
  private takeLane(subject: string, lane: unknown): void {
    const own = this.bus.ownLane;
    if (typeof lane !== 'string' || !own || this.bus.laneOf(subject) === lane) return;
    if (dirname(lane) === dirname(own) && /^lane-\d{1,10}$/.test(basename(lane))) {
      this.bus.route(subject, lane);
      this.routed.add(subject);
    }
  }

  /** Receives a segment's chunks from member `from` into a buffer the size of `like`. */
  private async receive(op: number, step: number, like: Numeric, from: number): Promise<Numeric> {
    const out = new Uint8Array(like.byteLength);
    const first = await this.chunk(op, step, 0, from);
    const size = first.d.length;
    const rest = await Promise.all(
      Array.from({ length: first.parts - 1 }, (_, i) => this.chunk(op, step, i + 1, from)),
    );
    const total = (first.parts - 1) * size + (rest.length ? rest[rest.length - 1].d.length : size);
    if (total !== like.byteLength)
      throw new CollectiveError(
        `group ${this.name}: members passed arrays of different lengths (${like.byteLength} bytes here, ${total} ` +
          `from another)`,
      );
    for (const c of [first, ...rest]) out.set(c.d, c.part * size);
    const Ctor = like.constructor as new (b: ArrayBuffer) => Numeric;
    return new Ctor(out.buffer);
  }

  private chunk(op: number, step: number, part: number, from: number): Promise<Chunk> {
    const key = `${op}.${step}.${part}`;
    const have = this.inbox.get(key);
    if (have) {
      this.inbox.delete(key);
      return Promise.resolve(have);
    }
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiting.delete(key);
        reject(this.failed(new RequestTimeoutError(`nothing for ${this.timeoutMs} ms`), `waiting for rank ${from}`));
      }, this.timeoutMs);
      this.waiting.set(key, (c) => {
        clearTimeout(timer);
        if (c.op < 0) reject(new CollectiveError(`this member left group ${this.name}`));
        else resolve(c);
      });
    });
  }

  private failed(e: unknown, doing: string): CollectiveError {
    if (e instanceof CollectiveError) return e;
    return new CollectiveError(
      `group ${this.name}, rank ${this.rank} of ${this.worldSize}: collective failed ${doing}: ${(e as Error).message}`,
      { cause: e },
    );
  }

  /** A private copy to work in: the caller's array is never changed. */
  private async toArray(x: Numeric | TensorLike): Promise<Numeric> {
    if (ArrayBuffer.isView(x)) {
      if (
        !(x instanceof Float32Array || x instanceof Float64Array || x instanceof Int32Array || x instanceof Uint8Array)
      ) {
        throw new UsageError('collectives take Float32Array, Float64Array, Int32Array, Uint8Array or a tfjs tensor');
      }
      return x.slice();
    }
    if (typeof (x as TensorLike)?.data !== 'function')
      throw new UsageError('collectives take a typed array or a tfjs tensor');
    const values = await (x as TensorLike).data();
    return values instanceof Float32Array || values instanceof Int32Array || values instanceof Uint8Array
      ? values.slice()
      : Float32Array.from(values);
  }

  private async fromArray<T>(like: T, data: Numeric): Promise<T> {
    if (ArrayBuffer.isView(like)) return data as T;
    const t = like as unknown as TensorLike;
    const tf = await import('@tensorflow/tfjs-core');
    return tf.tensor(data, t.shape, t.dtype as 'float32') as unknown as T;
  }
}

/** Start offsets of n near-equal segments, and the end. */
function segments(length: number, n: number): number[] {
  const base = Math.floor(length / n),
    extra = length % n;
  const out = [0];
  for (let i = 0; i < n; i++) out.push(out[i] + base + (i < extra ? 1 : 0));
  return out;
}

const mod = (a: number, n: number) => ((a % n) + n) % n;

function combine(into: Numeric, from: Numeric, op: ReduceOp): void {
  if (op === 'max') for (let i = 0; i < into.length; i++) into[i] = Math.max(into[i], from[i]);
  else if (op === 'min') for (let i = 0; i < into.length; i++) into[i] = Math.min(into[i], from[i]);
  else for (let i = 0; i < into.length; i++) into[i] += from[i];
}
