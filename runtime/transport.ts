// The bus: one NATS connection per process, one wildcard reply inbox with a correlation map
// (no per-call subscription, no per-call timer), and servers that never die of a bad message.
import { connect, type NatsConnection, type Msg, type Subscription } from '@nats-io/transport-node';
import { AuthorizationError, nuid } from '@nats-io/nats-core';
import { encode, decode } from './codec.ts';
import { parseAddress, defaults } from './config.ts';
import { AuthenticationError, ConnectionError, NoRespondersError, RequestTimeoutError, UsageError } from './errors.ts';

export type { Subscription };

/** Reply envelope: [0, value] or [1, error]. */
type Reply = [0, unknown] | [1, Error];

interface Pending {
  resolve(v: unknown): void;
  reject(e: Error): void;
  subject: string;
  deadline: number; // 0 = none
  /** Scatter-gather: collect every reply until the deadline. */
  gathered?: unknown[];
  /** Answered in parts: told of each; true once the last has come. */
  part?: (v: any) => boolean;
}

/** A handler returns this when it answers by itself (with replyTo), perhaps in several parts. */
const NO_REPLY = Symbol('troupe.noReply');

/** Requests of one batch that go as a message of their own, without waiting for the end of the turn. */
const BATCH_PART = 256;

/** A request sent with requestBatched. It is its own entry in the batch (no promise, no closures: a busy caller
 * makes thousands a second) and hears of its answer, once, by one of its methods. */
export interface BatchedRequest<T = any> {
  readonly body: unknown;
  answered(value: T): void;
  failed(error: Error): void;
}

/** Tells a request its answer. A handler that throws is a bug: it surfaces as an uncaught error, as a throwing
 * promise handler would, without keeping the other requests of its batch from hearing theirs. */
function settle(req: BatchedRequest, failed: boolean, value: unknown): void {
  try {
    if (failed) req.failed(value instanceof Error ? value : new Error(String(value)));
    else req.answered(value);
  } catch (e) {
    queueMicrotask(() => { throw e; });
  }
}

/** Answers to a batch, as they finish: [index in the batch, 1 if it failed, value or error]. */
type BatchPart = Array<[number, 0 | 1, unknown]>;

// The two classes below hold what closures made per batch would: under tsx, each named closure costs a
// defineProperty (esbuild's keepNames), which a busy actor pays thousands of times a second.

/** A batch sent, waiting for its answers, which come in parts. */
class SentBatch implements Pending {
  readonly deadline = 0;
  private answered = 0;
  constructor(readonly subject: string, private readonly items: Array<BatchedRequest | undefined>) {}

  resolve(): void {}

  /** Each request hears once: it leaves `items` when answered. True once all have. */
  part(answers: BatchPart): boolean {
    for (const [i, failed, value] of answers) {
      const x = this.items[i];
      if (!x) continue;
      this.items[i] = undefined;
      settle(x, failed === 1, value);
    }
    this.answered += answers.length;
    return this.answered >= this.items.length;
  }

  reject(e: Error): void {
    for (let i = 0; i < this.items.length; i++) {
      const x = this.items[i];
      this.items[i] = undefined;
      if (x) settle(x, true, e);
    }
  }
}

/** The answers of one received batch that finished in this turn of the event loop. */
class BatchAnswers {
  done: BatchPart = [];
  constructor(readonly reply: string | undefined) {}
}

export interface ConnectOptions {
  address: string;
  token: string;
  /** Shown by the server (connz) and in logs. */
  name: string;
  /** Daemons reconnect forever; drivers give up after a while. */
  daemon?: boolean;
}

export type Handler = (body: any, msg: Msg) => unknown;

export class Bus {
  readonly inbox = `_INBOX.${nuid.next()}`;
  private readonly pending = new Map<string, Pending>();
  private seq = 0;
  private sweeper: NodeJS.Timeout | undefined;
  private closed = false;

  private constructor(readonly nc: NatsConnection, readonly address: string) {
    nc.subscribe(`${this.inbox}.*`, { callback: (_err, msg) => this.onReply(msg) });
    // The server is gone for good (reconnects exhausted, or it refused us): nothing pending will ever be answered.
    // Said once on stderr too, since later calls into nats.js only say "closed connection".
    nc.closed().then((err) => {
      const lost = new ConnectionError(`lost the cluster at ${address}${err ? `: ${err.message}` : ''}`, { cause: err });
      if (!this.closed) console.error(`troupe: ${lost.message}`);
      this.failPending(lost);
    });
  }

  static async connect(opts: ConnectOptions): Promise<Bus> {
    const server = parseAddress(opts.address);
    let nc: NatsConnection;
    try {
      nc = await connect({
        servers: server,
        token: opts.token,
        name: opts.name,
        maxReconnectAttempts: opts.daemon ? -1 : 60,
        reconnectTimeWait: 500,
        // One ping interval is our failure detector for the server itself.
        pingInterval: 5000,
      });
    } catch (e) {
      if (e instanceof AuthorizationError || (e as Error)?.name === 'AuthorizationError') {
        throw new AuthenticationError(`the cluster at ${opts.address} refused the token: check TROUPE_TOKEN or the current-cluster file`, { cause: e });
      }
      throw new ConnectionError(`cannot reach a troupe cluster at ${opts.address}: ${(e as Error).message}`, { cause: e });
    }
    return new Bus(nc, opts.address);
  }

  /** Request/response. timeoutMs 0 waits for ever (task calls: liveness comes from death events, not timers). */
  request<T = unknown>(subject: string, body: unknown, opts: { timeoutMs?: number } = {}): Promise<T> {
    const data = encode(body); // throws SerializationError here, at the caller
    return new Promise<T>((resolve, reject) => {
      const id = (this.seq++).toString(36);
      const timeoutMs = opts.timeoutMs ?? defaults.requestTimeoutMs;
      this.pending.set(id, { resolve: resolve as (v: unknown) => void, reject, subject, deadline: timeoutMs ? Date.now() + timeoutMs : 0 });
      if (timeoutMs) this.armSweeper();
      this.send(subject, data, `${this.inbox}.${id}`, (e) => {
        this.pending.delete(id);
        reject(e);
      });
    });
  }

  /**
   * A request that travels with the others made to the same subject in this turn of the event loop: one message
   * `{ batch }` for all of them, answered in parts (see serveBatched). For many small calls to one actor or worker,
   * per-message costs (encoding, the server, socket writes, wake-ups) are paid once per batch instead of per call.
   */
  requestBatched(subject: string, req: BatchedRequest): void {
    let batch = this.batches.get(subject);
    if (!batch) {
      batch = [];
      this.batches.set(subject, batch);
      this.flushSoon();
    }
    // A long run of calls in one turn goes in parts as it grows: the receiver works on one while we make the next.
    if (batch.push(req) >= BATCH_PART) {
      this.batches.delete(subject);
      this.sendBatch(subject, batch, true);
    }
  }

  private batches = new Map<string, BatchedRequest[]>();

  private sendBatches(): void {
    const all = this.batches;
    this.batches = new Map();
    for (const [subject, items] of all) this.sendBatch(subject, items);
  }

  /** Sends one batch (as several, if it is over the server's max_payload); now: without waiting for the turn to end. */
  private sendBatch(subject: string, all: BatchedRequest[], now = false): void {
    let groups: Array<{ data: Uint8Array; items: Array<BatchedRequest | undefined> }>;
    try {
      groups = this.fitting<BatchedRequest | undefined>(all, (items) => encode({ batch: items.map((x) => x!.body) }));
    } catch (e) {
      queueMicrotask(() => { for (const x of all) settle(x, true, e); }); // never inside the caller's call
      return;
    }
    for (const { data, items } of groups) {
      const id = (this.seq++).toString(36);
      const sent = new SentBatch(subject, items);
      this.pending.set(id, sent);
      if (now) this.sendNow(subject, data, `${this.inbox}.${id}`, (e) => this.unsent(id, sent, e));
      else this.send(subject, data, `${this.inbox}.${id}`, (e) => this.unsent(id, sent, e));
    }
  }

  private unsent(id: string, sent: SentBatch, e: Error): void {
    this.pending.delete(id);
    queueMicrotask(() => sent.reject(e));
  }

  /** Splits items into groups whose encoding fits under the server's max_payload, halving until each does.
   * A single item too large stays a group of its own: sending it fails, and says so. */
  private fitting<T>(items: T[], encodeGroup: (items: T[]) => Uint8Array): Array<{ data: Uint8Array; items: T[] }> {
    const data = encodeGroup(items);
    if (data.length <= this.maxPayload - 4096 || items.length === 1) return [{ data, items }];
    const half = Math.ceil(items.length / 2);
    return [...this.fitting(items.slice(0, half), encodeGroup), ...this.fitting(items.slice(half), encodeGroup)];
  }

  /** Serves requestBatched: runs the handler for each request of a batch as it comes, and answers with what finished
   * in each turn of the event loop, so a quick call is not held up by a slow one. */
  serveBatched(subject: string, handler: (body: any) => unknown): Subscription {
    return this.serve(subject, (body: { batch: unknown[] }, msg) => {
      if (!Array.isArray(body?.batch)) throw new TypeError(`requests on ${subject} come as { batch: [...] }`);
      const answers = new BatchAnswers(msg.reply);
      body.batch.forEach((item, i) => {
        try {
          Promise.resolve(handler(item)).then((v) => this.finished(answers, i, 0, v), (e) => this.finished(answers, i, 1, asError(e)));
        } catch (e) {
          this.finished(answers, i, 1, asError(e));
        }
      });
      return NO_REPLY;
    });
  }

  /** One request of a batch has finished: its answer goes with the others that finish in this turn. */
  private finished(answers: BatchAnswers, i: number, failed: 0 | 1, value: unknown): void {
    if (answers.done.push([i, failed, value]) === 1) { this.beforeFlush.push(answers); this.flushSoon(); }
  }

  /** Publishes to every subscriber of `subject` and collects replies for windowMs (scatter-gather). */
  gather<T = unknown>(subject: string, body: unknown, windowMs: number): Promise<T[]> {
    const data = encode(body);
    return new Promise<T[]>((resolve, reject) => {
      const id = (this.seq++).toString(36);
      this.pending.set(id, { resolve: resolve as (v: unknown) => void, reject, subject, deadline: Date.now() + windowMs, gathered: [] });
      this.armSweeper();
      this.send(subject, data, `${this.inbox}.${id}`, reject);
    });
  }

  /** Fire and forget. */
  publish(subject: string, body: unknown): void {
    this.send(subject, encode(body));
  }

  // Everything this process sends in one turn of the event loop leaves in one socket write: nats.js flushes once per
  // microtask, and a chain of awaits would otherwise cost a write (and a wake-up of the server) per message.
  private outbox: Array<[string, Uint8Array, string | undefined, ((e: Error) => void) | undefined]> = [];
  /** Parts of batched answers to put together before the outbox goes. */
  private beforeFlush: BatchAnswers[] = [];
  private flushing = false;

  private send(subject: string, data: Uint8Array, reply?: string, onError?: (e: Error) => void): void {
    this.outbox.push([subject, data, reply, onError]);
    this.flushSoon();
  }

  /** Sends at once, ahead of the outbox, and writes to the socket now: nats.js otherwise writes at the next microtask,
   * which a long synchronous run of calls holds back until it ends. It has no public call for this; where its
   * internals differ, the message goes at the next microtask as usual. */
  private sendNow(subject: string, data: Uint8Array, reply?: string, onError?: (e: Error) => void): void {
    if (this.publish1(subject, data, reply, onError)) (this.nc as unknown as { protocol?: { flushPending?(): void } }).protocol?.flushPending?.();
  }

  /** Hands one message to nats.js; false (and onError told) when it refuses it. */
  private publish1(subject: string, data: Uint8Array, reply?: string, onError?: (e: Error) => void): boolean {
    try {
      this.nc.publish(subject, data, reply ? { reply } : undefined);
      return true;
    } catch (e) {
      if (onError) onError(e as Error);
      else console.error(`troupe: could not send on ${subject}:`, e);
      return false;
    }
  }

  /** At the end of this turn of the event loop: batched answers, then batched requests, then every message, in one write. */
  private flushSoon(): void {
    if (this.flushing) return;
    this.flushing = true;
    setImmediate(() => this.flushNow());
  }

  private flushNow(): void {
    this.flushing = true; // what the steps below send joins this flush
    try {
      const parts = this.beforeFlush;
      this.beforeFlush = [];
      for (const a of parts) { const out = a.done; a.done = []; this.replyParts(a.reply, out); }
      this.sendBatches();
      const batch = this.outbox;
      this.outbox = [];
      for (const [subject, data, reply, onError] of batch) this.publish1(subject, data, reply, onError);
    } finally {
      this.flushing = false;
      if (this.outbox.length || this.beforeFlush.length || this.batches.size) this.flushSoon();
    }
  }

  /** Answers requests on `subject`. A malformed message or a throwing handler gets an error reply; the process goes on. */
  serve(subject: string, handler: Handler, opts: { queue?: string } = {}): Subscription {
    return this.nc.subscribe(subject, {
      queue: opts.queue,
      callback: (_err, msg) => {
        let body: unknown;
        try {
          body = decode(msg.data);
        } catch (e) {
          this.respond(msg, [1, new UsageError(`malformed message on ${msg.subject}: ${(e as Error).message}`)]);
          return;
        }
        let out: unknown;
        try {
          out = handler(body, msg);
        } catch (e) {
          this.respond(msg, [1, asError(e)]);
          return;
        }
        if (out instanceof Promise) out.then((v) => this.respond(msg, [0, v]), (e) => this.respond(msg, [1, asError(e)]));
        else if (out !== NO_REPLY) this.respond(msg, [0, out]);
      },
    });
  }

  /** Listens to events (no reply). Malformed events are dropped with a warning. */
  on(subject: string, handler: (body: any, subject: string) => void): Subscription {
    return this.nc.subscribe(subject, {
      callback: (_err, msg) => {
        let body: unknown;
        try { body = decode(msg.data); } catch {
          warnOnce(`dropped a malformed event on ${msg.subject}`);
          return;
        }
        try { handler(body, msg.subject); } catch (e) {
          console.error(`troupe: handler for ${msg.subject} failed:`, e);
        }
      },
    });
  }

  /** Sends answers to a batch (as several parts, if they are over the server's max_payload). */
  private replyParts(reply: string | undefined, part: BatchPart): void {
    if (!reply || this.closed) return;
    for (const { data, items } of this.fitting(part, (answers) => encodeReply([0, answers]))) {
      // One answer too large for any message: its caller hears why instead of waiting for ever.
      const tooLarge = data.length > this.maxPayload && new RangeError(`the answer is ${data.length} bytes; the server takes at most ${this.maxPayload} in one message`);
      this.send(reply, tooLarge ? encodeReply([0, [[items[0][0], 1, tooLarge]]]) : data);
    }
  }

  /** Answer a request out of band (when the reply comes later than the handler returns). */
  replyTo(reply: string | undefined, value: unknown, isError = false): void {
    if (!reply || this.closed) return;
    this.send(reply, encodeReply(isError ? [1, asError(value)] : [0, value]));
  }

  /** Round trip to the server: every subscription made before it is in effect once this resolves. */
  async flush(): Promise<void> {
    this.flushNow();
    await this.nc.flush();
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.flushNow(); // what we said last (replies, frees, goodbyes) still goes out
    this.failPending(new ConnectionError('connection closed'));
    // Drain lets handlers finish, but must not hold a stopping process hostage: close after 2 s regardless.
    const drained = this.nc.drain().catch(() => undefined);
    const timer = setTimeout(() => void this.nc.close().catch(() => undefined), 2000);
    await Promise.race([drained, this.nc.closed()]);
    clearTimeout(timer);
  }

  private failPending(err: Error): void {
    clearInterval(this.sweeper);
    this.sweeper = undefined;
    for (const p of this.pending.values()) p.gathered ? p.resolve(p.gathered) : p.reject(err);
    this.pending.clear();
  }

  /** Largest message the server takes (its max_payload). */
  get maxPayload(): number {
    return this.nc.info?.max_payload ?? 1024 * 1024;
  }

  get isClosed(): boolean {
    return this.closed || this.nc.isClosed();
  }

  private respond(msg: Msg, reply: Reply): void {
    if (!msg.reply || this.closed) return;
    this.send(msg.reply, encodeReply(reply));
  }

  private onReply(msg: Msg): void {
    const id = msg.subject.slice(this.inbox.length + 1);
    const p = this.pending.get(id);
    if (!p) return; // late reply after a timeout
    if (msg.data.length === 0 && msg.headers?.code === 503) {
      if (p.gathered) return;
      this.pending.delete(id);
      p.reject(new NoRespondersError(`no one is listening on ${p.subject}`));
      return;
    }
    let reply: Reply;
    try {
      reply = decode<Reply>(msg.data);
    } catch (e) {
      if (p.gathered) return;
      this.pending.delete(id);
      p.reject(new UsageError(`malformed reply from ${p.subject}: ${(e as Error).message}`));
      return;
    }
    if (p.gathered) {
      if (reply[0] === 0) p.gathered.push(reply[1]);
      return;
    }
    if (p.part && reply[0] === 0) {
      let done: boolean;
      try { done = p.part(reply[1]); } catch (e) { done = true; this.pending.delete(id); p.reject(asError(e)); return; }
      if (done) { this.pending.delete(id); p.resolve(undefined); }
      return;
    }
    this.pending.delete(id);
    if (reply[0] === 0) p.resolve(reply[1]);
    else p.reject(reply[1] instanceof Error ? reply[1] : new Error(String(reply[1])));
  }

  /** One timer for all deadlines, running only while some request has one. */
  private armSweeper(): void {
    if (this.sweeper) return;
    this.sweeper = setInterval(() => {
      const now = Date.now();
      let left = false;
      for (const [id, p] of this.pending) {
        if (!p.deadline) continue;
        if (p.deadline > now) { left = true; continue; }
        this.pending.delete(id);
        if (p.gathered) p.resolve(p.gathered);
        else p.reject(new RequestTimeoutError(`no reply from ${p.subject} in time`));
      }
      if (!left) { clearInterval(this.sweeper); this.sweeper = undefined; }
    }, 50);
    this.sweeper.unref();
  }
}

function encodeReply(reply: Reply): Uint8Array {
  try {
    return encode(reply);
  } catch (e) {
    return encode([1, asError(e)]); // the handler's value could not be sent: say why instead of going silent
  }
}

function asError(e: unknown): Error {
  return e instanceof Error ? e : new Error(String(e));
}

const warned = new Set<string>();
function warnOnce(text: string): void {
  if (warned.has(text)) return;
  warned.add(text);
  console.warn(`troupe: ${text}`);
}
