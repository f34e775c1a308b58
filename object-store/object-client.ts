// How a process stores values and follows ObjectRefs to them: owner lookup, local file reads, copies fetched from
// other nodes, and the owner's half of reference counting. Every process (driver or worker) has one.
import { LRUCache } from 'lru-cache';
import { encodeParts, decode, byteLength } from '../runtime/base/codec.ts';
import { ObjectLostError, NoRespondersError, ProtocolError, RequestTimeoutError } from '../runtime/base/errors.ts';
import { defaults } from '../runtime/base/config.ts';
import { checked } from '../runtime/protocol/check.ts';
import { checkLocateAnswer } from '../runtime/protocol/schemas.ts';
import type { Asker, Bus } from '../runtime/bus/bus.ts';
import { ObjectRef, collectRefs, withUntrackedRefs } from './object-ref.ts';
import { holders, isPlainValue, type LocateAnswer, type ObjectLocation } from '../runtime/protocol/objects.ts';
import { subjects } from '../runtime/protocol/subjects.ts';
import { Borrowers } from './borrowers.ts';
import { OwnerTable, type OwnedObject } from './owner-table.ts';
import { RefCounter } from './ref-counter.ts';
import type { NodeStore } from './node-store.ts';
import { checkRange, fetchToMemory, makeChunk } from './transfer.ts';
import { checkObjectMessage, isPlain, parseObjectMessage, type CallArgs } from '../runtime/protocol/objects.ts';

/** tfjs tensors (duck-typed): immutable, so one decoded instance can serve every get in a process. */
function isTensor(v: unknown): boolean {
  return (
    typeof v === 'object' &&
    v !== null &&
    typeof (v as { dataSync?: unknown }).dataSync === 'function' &&
    typeof (v as { dispose?: unknown }).dispose === 'function'
  );
}

export interface ObjectClientOptions {
  bus: Bus;
  procId: string;
  /** The node daemon on this machine and its store, when there is one. */
  nodeId?: string;
  store?: NodeStore;
  inlineThreshold: number;
  /** Bytes of decoded values kept per process, so repeated gets of the same weights are free. */
  decodedCacheBytes?: number;
}

/** A call whose arguments resolveArgs decodes: its sender and the way back to it that its answer takes (none for an
 * actor's start, which the head sends for its creator), and what the answer must wait for. */
export interface CallFrom {
  caller?: string;
  asker?: Asker;
  /** Set by resolveArgs: settles once the owners of the refs nested in the arguments know we hold them, for those
   * that had to be asked (see announceBorrow). The answer goes after it: the caller lets go of the refs it sent. */
  confirmed?: Promise<unknown>;
}

interface BorrowMsg {
  id: string;
  proc: string;
  node?: string;
  add: boolean;
  /** From `proc`'s own counter (see Borrowers); none when another process sends it on proc's behalf. */
  seq?: number;
}

export class ObjectClient {
  readonly owned = new OwnerTable();
  readonly refs: RefCounter;
  /** Large values held in memory when there is no local store. */
  private readonly held = new Map<string, Uint8Array>();
  /** Where borrowed objects are: sealed objects never change, so one answer serves every later get. */
  private readonly located = new LRUCache<string, ObjectLocation>({ max: 10_000 });
  /** One owner lookup in flight per borrowed object, however many callers wait. */
  private readonly locating = new Map<string, Promise<ObjectLocation>>();
  /** Processes whose node said they exited: an owner among them is gone for good, not reconnecting. */
  private readonly exited = new LRUCache<string, true>({ max: 10_000 });
  private readonly readyWaiters = new Map<string, Set<() => void>>();
  private readonly decoded: LRUCache<string, { value: unknown; given: boolean }>;
  /** Borrows told to their owners and not yet confirmed, by object (see announceBorrow). */
  private readonly announcing = new Map<string, Promise<void>>();
  /** The number of this process's last borrow message: each one says whether it holds an object, and an owner takes
   * the highest numbered (Borrowers), whichever way each came. */
  private borrowSeq = 0;
  /** The call whose arguments are being decoded, while resolveArgs tracks the refs nested in them. */
  private decodingFor: CallFrom | undefined;
  private freeBatch = new Map<string, string[]>();
  private freeTimer: NodeJS.Timeout | undefined;

  constructor(private readonly o: ObjectClientOptions) {
    this.refs = new RefCounter(o.procId, {
      borrowed: (id, owner) => this.announceBorrow(id, owner),
      returned: (id, owner) => {
        this.located.delete(id);
        this.sendBorrow(owner, { id, proc: o.procId, add: false, seq: ++this.borrowSeq });
      },
      unreferenced: (id) => this.maybeFree(id),
    });
    this.decoded = new LRUCache({
      maxSize: o.decodedCacheBytes ?? 256 * 1024 * 1024,
      // A tensor nobody was given is ours to dispose (tfjs frees tensor memory only on dispose).
      dispose: (entry) => {
        if (!entry.given) (entry.value as { dispose?: () => void })?.dispose?.();
      },
    });
  }

  /** Answers other processes about our objects, and serves bytes we hold in memory. */
  serve(): void {
    const { bus, procId } = this.o;
    bus.serve(subjects.obj.procLocate(procId), async (body: unknown) => {
      const req = checkObjectMessage('one', body);
      const p = this.owned.whenSealed(req.id);
      if (!p)
        throw new ObjectLostError(
          `object ${req.id} is not known to its owner ${procId} (freed, or the owner restarted)`,
        );
      // Answered within callProbeMs either way (the asker asks again): nothing waits here for an asker whose request
      // or answer the bus lost.
      let timer: NodeJS.Timeout | undefined;
      const notYet = new Promise<LocateAnswer>((r) => {
        timer = setTimeout(() => r({ pending: true }), defaults.callProbeMs);
      });
      const answer = await Promise.race([p, notYet]);
      clearTimeout(timer);
      if ('pending' in answer) return answer;
      const { refs: _inner, ...loc } = answer; // the reader takes the refs inside from the value itself
      return loc;
    });
    bus.serve(subjects.obj.procRead(procId), (body: unknown) => {
      const heldBytes = (id: string) => {
        const b = this.held.get(id);
        if (!b) throw new ObjectLostError(`object ${id} is not held by ${procId}`);
        return b;
      };
      const req = checkRange(body, (id) => heldBytes(id).length);
      return makeChunk(heldBytes(req.id).subarray(req.offset, req.offset + req.length), req.size);
    });
    // Events have nobody to answer: a malformed one is dropped. A borrower may ask for a confirmation, or send it on
    // the lane of our call (see announceBorrow).
    bus.on(
      subjects.obj.procBorrow(procId),
      (m: unknown) => {
        const b = parseObjectMessage('borrow', m);
        if (b) this.onBorrow(b);
      },
      { fromLanes: true, confirm: true },
    );
    bus.on(subjects.obj.procCopied(procId), (m: unknown) => {
      const c = parseObjectMessage('copied', m);
      if (c) this.onCopied(c.id, c.node);
    });
    bus.on(subjects.evtProcExited, (m: { procId: string }) => {
      if (typeof m?.procId !== 'string') return;
      this.exited.set(m.procId, true);
      this.dropBorrowers((proc) => proc === m.procId);
    });
    bus.on(subjects.evtNodeDied, (m: { nodeId: string; cause: string }) => {
      if (typeof m?.nodeId === 'string') this.onNodeDied(m.nodeId, m.cause);
    });
  }

  /** Serializes a value into a location. `forProc` will own the location: refs inside are registered for it, so they
   * stay alive from the moment we reply (while we still hold them) until it lets go. */
  async store(id: string, value: unknown, forProc?: string): Promise<ObjectLocation> {
    if (isPlainValue(value)) return { value };
    const [parts, refs] = collectRefs(() => encodeParts(value));
    if (forProc) for (const r of refs) this.registerBorrower(r, forProc);
    const loc = await this.storeParts(id, parts, forProc);
    return refs.length ? { ...loc, refs } : loc;
  }

  /** Stores encoded parts (see encodeParts): inline when small, else a file in our node's store, else our memory.
   * `owner`: the process whose object it is (a task's result belongs to its caller, not to the worker). */
  async storeParts(id: string, parts: Uint8Array[], owner = this.o.procId): Promise<ObjectLocation> {
    const { store, nodeId, bus, procId } = this.o;
    const size = byteLength(parts);
    if (size <= this.o.inlineThreshold) return { inline: parts.length === 1 ? parts[0] : Buffer.concat(parts) };
    if (store && nodeId) {
      await store.writeTmp(id, parts);
      await bus.request(subjects.obj.nodeSeal(nodeId), { id, size, owner });
      return { node: nodeId, size };
    }
    this.held.set(id, parts.length === 1 ? parts[0] : Buffer.concat(parts));
    return { proc: procId, size };
  }

  /** The value a put() just stored, for gets in this process (only immutable values: tensors, shared not copied). */
  remember(id: string, value: unknown, size: number): void {
    this.decoded.set(id, { value, given: false }, { size });
  }

  /** Where the ref's value is, waiting until it exists. */
  locate(ref: ObjectRef): Promise<ObjectLocation> {
    const mine = this.owned.whenSealed(ref.id);
    if (mine) return mine;
    if (ref.owner === this.o.procId) return Promise.reject(new ObjectLostError(`object ${ref.id} was freed`));
    const known = this.located.get(ref.id);
    if (known) return Promise.resolve(known);
    let p = this.locating.get(ref.id);
    if (!p) {
      p = this.askOwner(ref).finally(() => this.locating.delete(ref.id));
      this.locating.set(ref.id, p);
    }
    return p;
  }

  /** Asks the ref's owner where its object is until it says. The owner answers within its callProbeMs, `pending`
   * when the object is not made yet; an ask with no answer in time (lost on the bus, or an owner busy in synchronous
   * code) is asked again. An owner nobody serves is gone once its node said it exited, or after clientTimeoutMs (it
   * may be reconnecting meanwhile). */
  private async askOwner(ref: ObjectRef): Promise<ObjectLocation> {
    let unreachableSince: number | undefined;
    for (;;) {
      let answer: LocateAnswer;
      try {
        answer = checked(
          checkLocateAnswer,
          await this.o.bus.request(
            subjects.obj.procLocate(ref.owner),
            { id: ref.id },
            // Held by get() and wait() while they wait (Core.blocking), not by itself: a wait() that timed out, or a
            // task nobody awaits waiting for its input, must not keep a finished script running.
            { timeoutMs: defaults.callProbeMs + defaults.requestTimeoutMs, hold: false },
          ),
        );
      } catch (e) {
        if (e instanceof NoRespondersError) {
          unreachableSince ??= Date.now();
          if (this.exited.has(ref.owner) || Date.now() - unreachableSince >= defaults.clientTimeoutMs)
            throw new ObjectLostError(`object ${ref.id} is lost: its owner ${ref.owner} is gone`, { cause: e });
          await new Promise((r) => setTimeout(r, 500));
          continue;
        }
        if (e instanceof RequestTimeoutError) continue;
        throw e;
      }
      unreachableSince = undefined;
      if ('pending' in answer) continue;
      if (!('error' in answer)) this.located.set(ref.id, answer);
      return answer;
    }
  }

  /** Calls back once the ref's value exists (or failed, or is lost). Returns a remover for callers that stop
   * waiting. */
  whenReady(ref: ObjectRef, cb: () => void): () => void {
    const remove = this.owned.onSealed(ref.id, cb);
    if (remove) return remove;
    if (this.located.has(ref.id)) {
      cb();
      return () => undefined;
    }
    let waiters = this.readyWaiters.get(ref.id);
    if (!waiters) {
      const set = (waiters = new Set());
      this.readyWaiters.set(ref.id, set);
      const done = () => {
        this.readyWaiters.delete(ref.id);
        for (const f of set) f();
      };
      this.locate(ref).then(done, done);
    }
    const set = waiters;
    set.add(cb);
    return () => set.delete(cb);
  }

  /** The value a location points to. Throws the producing task's error for a failed object. */
  async load<T>(id: string, loc: ObjectLocation): Promise<T> {
    if ('error' in loc) throw loc.error;
    if ('inline' in loc) return decode<T>(loc.inline);
    if ('value' in loc) return loc.value as T;
    const hit = this.decoded.get(id);
    if (hit && !(hit.value as { isDisposed?: boolean })?.isDisposed) {
      hit.given = true;
      return hit.value as T;
    }
    const bytes = await this.loadBytes(id, loc);
    const value = decode<T>(bytes);
    // Only tensors are shared between gets: they cannot change. Arrays and objects are decoded afresh each time.
    if (isTensor(value)) this.decoded.set(id, { value, given: true }, { size: bytes.length });
    return value;
  }

  private async loadBytes(
    id: string,
    loc: { node: string; size: number; copies?: string[] } | { proc: string; size: number },
  ): Promise<Uint8Array> {
    const { store, nodeId, bus } = this.o;
    const where = 'node' in loc ? holders(loc) : [];
    try {
      if (store && nodeId && where.length) {
        if (where.includes(nodeId)) return await this.readLocal(id);
        // Our node fetches it and keeps the copy: the next reader here, in any process, reads it locally. A large one
        // may take minutes: asked again while the answer is late (a repeat joins the fetch under way).
        await bus.requestUntilAnswered(
          subjects.obj.nodeFetch(nodeId),
          { id, size: loc.size, owner: this.ownerOf(id), from: where },
          { wanted: () => true },
        );
        this.tellOwnerOfCopy(id, nodeId);
        // The copy may already have been pushed out again by a full store: then read it from a holder directly.
        return await this.readLocal(id).catch(() => fetchToMemory(bus, where.map(subjects.obj.nodeRead), id, loc.size));
      }
      const sources = 'node' in loc ? where.map(subjects.obj.nodeRead) : [subjects.obj.procRead(loc.proc)];
      return await fetchToMemory(bus, sources, id, loc.size);
    } catch (e) {
      if (!(e instanceof ObjectLostError || e instanceof NoRespondersError)) throw e;
      this.located.delete(id); // the next get asks the owner again: it may know of another copy by then
      const o = this.owned.get(id);
      const what = o
        ? `object ${id} (made by ${o.createdBy})`
        : `object ${id} (owned by ${this.located.get(id) ? this.ownerOf(id) : 'another process'})`;
      throw new ObjectLostError(
        `${what} is lost: ${
          'node' in loc
            ? `no node that held it (${where.join(', ')}) has it`
            : `process ${loc.proc} that held it is gone`
        }`,
        { cause: e },
      );
    }
  }

  /** Reads a sealed object from our node's store, asking the node to bring it back first if it was spilled. */
  private async readLocal(id: string): Promise<Uint8Array> {
    const { store, nodeId, bus } = this.o;
    for (let attempt = 1; ; attempt++) {
      try {
        const bytes = await store!.read(id);
        bus.publish(subjects.obj.nodeTouch(nodeId!), { id });
        return bytes;
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'ENOENT' || attempt === 3)
          throw new ObjectLostError(`object ${id} is missing from the store of node ${nodeId}`, { cause: e });
      }
      await bus.request(subjects.obj.nodeRestore(nodeId!), { id }); // spilled: read it back into memory
    }
  }

  private readonly ownerById = new LRUCache<string, string>({ max: 10_000 });
  private ownerOf(id: string): string {
    return this.owned.get(id) ? this.o.procId : (this.ownerById.get(id) ?? 'unknown');
  }

  private tellOwnerOfCopy(id: string, node: string): void {
    const owner = this.ownerOf(id);
    if (owner === this.o.procId) this.onCopied(id, node);
    else if (owner !== 'unknown') this.o.bus.publish(subjects.obj.procCopied(owner), { id, node });
  }

  private onCopied(id: string, node: string): void {
    const loc = this.owned.get(id)?.location;
    if (loc && 'node' in loc && !holders(loc).includes(node)) (loc.copies ??= []).push(node);
  }

  get<T>(ref: ObjectRef<T>): Promise<T> {
    // A small value is decoded in the same step it is located in: no further promise for most results.
    return this.locate(ref).then((loc) =>
      'inline' in loc ? decode<T>(loc.inline) : 'value' in loc ? (loc.value as T) : this.load<T>(ref.id, loc),
    );
  }

  /** A call's arguments when they came as a few plain values (see isPlain), else undefined: then resolveArgs() does
   * the work. No promise: a busy actor's plain calls go through here thousands of times a second. */
  plainArgs(bytes: CallArgs): unknown[] | undefined {
    return !(bytes instanceof Uint8Array) && Array.isArray(bytes) && isPlain(bytes) ? bytes : undefined;
  }

  /** Where a plain value (see isPlainValue) is stored: in the answer itself. Undefined for any other value, which
   * store() keeps. No promise, as plainArgs(). */
  plainStored(value: unknown): ObjectLocation | undefined {
    return isPlainValue(value) ? { value } : undefined;
  }

  /** Decodes a call's arguments, replacing each top-level ref by its value. The caller located them already (deps),
   * so values come straight from their holder; refs nested deeper stay refs, as in Ray. */
  async resolveArgs(
    bytes: CallArgs,
    deps: Record<string, ObjectLocation> | undefined,
    from: CallFrom = {},
  ): Promise<unknown[]> {
    if (!(bytes instanceof Uint8Array)) {
      if (!Array.isArray(bytes) || !isPlain(bytes))
        throw new ProtocolError('arguments must be encoded, or a short array of plain values');
      return bytes;
    }
    // Top-level refs are replaced below and their caller holds them until we are done: only nested ones are borrowed.
    const [args, made] = withUntrackedRefs(() => decode<unknown[]>(bytes));
    if (!Array.isArray(args)) throw new ProtocolError('arguments must be an array');
    const asked: Promise<void>[] = [];
    this.decodingFor = from;
    try {
      for (const r of made) {
        if (args.includes(r)) {
          if (r.owner !== this.o.procId) this.ownerById.set(r.id, r.owner); // told of copies our node makes
          continue;
        }
        this.track(r);
        const p = this.announcing.get(r.id); // just now, or for an earlier call
        if (p) asked.push(p);
      }
    } finally {
      this.decodingFor = undefined;
    }
    if (asked.length) from.confirmed = Promise.all(asked);
    for (let i = 0; i < args.length; i++) {
      const a = args[i];
      if (!(a instanceof ObjectRef)) continue;
      // The location the caller sent may be gone by now (its node died): then the owner knows where it went.
      const at = deps?.[a.id];
      args[i] = at
        ? await this.load(a.id, at).catch((e) => {
            if (e instanceof ObjectLostError) return this.get(a);
            throw e;
          })
        : await this.get(a);
    }
    return args;
  }

  // --- reference counting: the owner's half --------------------------------------------------------

  /** Called for every ref made in this process. */
  track(ref: ObjectRef): void {
    if (ref.owner !== this.o.procId) this.ownerById.set(ref.id, ref.owner);
    this.refs.track(ref);
  }

  /** Tells the owner that this process now holds its object. A borrower that got the ref in a call must not answer
   * before the owner knows: the caller stops holding the object for the call when the answer comes, and the owner
   * would free it. (Over NATS, an answer on a lane overtook the borrow in most calls.) A call from the owner itself
   * gets it ahead of the answer, on the way the answer goes; any other owner is asked to confirm, and the answer
   * waits for that (CallFrom.confirmed). Our later borrow messages about it may go another way: their numbers say
   * which came last. */
  private announceBorrow(id: string, owner: string): void {
    const { bus, procId, nodeId } = this.o;
    if (bus.isClosed) return;
    const m = { id, proc: procId, node: nodeId, add: true, seq: ++this.borrowSeq };
    const from = this.decodingFor;
    // `caller` is the call's word: on a lane, its event reaches the lane's process only, which must be the owner.
    // Over NATS it goes to the owner's subject, so a caller naming the owner falsely only loses the ordering.
    if (from?.asker && from.caller === owner && (from.asker.laneProc ?? owner) === owner) {
      from.asker.tellFirst(subjects.obj.procBorrow(owner), m);
      return;
    }
    const announced: Promise<void> = bus
      .request(subjects.obj.procBorrow(owner), m, { hold: false })
      // An owner that is gone or does not answer has nothing left to free: answers need not wait for it longer.
      .then(
        () => undefined,
        () => undefined,
      )
      .finally(() => {
        if (this.announcing.get(id) === announced) this.announcing.delete(id);
      });
    this.announcing.set(id, announced);
  }

  private sendBorrow(owner: string, m: BorrowMsg): void {
    if (owner === this.o.procId) this.onBorrow(m);
    else if (!this.o.bus.isClosed) this.o.bus.publish(subjects.obj.procBorrow(owner), m);
  }

  /** Registers `proc` as holding `ref` (sent by a process that holds it itself, so the object cannot go meanwhile). */
  private registerBorrower(ref: ObjectRef, proc: string): void {
    if (ref.owner !== proc) this.sendBorrow(ref.owner, { id: ref.id, proc, add: true });
  }

  private onBorrow(m: BorrowMsg): void {
    if (typeof m?.id !== 'string' || typeof m.proc !== 'string') return;
    const o = this.owned.get(m.id);
    if (!o) return;
    (o.borrowers ??= new Borrowers()).hear(m.proc, m.add, m.node, m.seq);
    if (!m.add) this.maybeFree(m.id);
  }

  private dropBorrowers(pred: (proc: string, node: string | undefined) => boolean): void {
    for (const o of [...this.owned.values()]) if (o.borrowers?.drop(pred)) this.maybeFree(o.id);
  }

  /** Its copies there are gone; an object with no copy left is lost, and says what made it. */
  private onNodeDied(nodeId: string, cause: string): void {
    this.dropBorrowers((_p, node) => node === nodeId);
    for (const o of this.owned.values()) {
      const loc = o.location;
      if (!loc || !('node' in loc) || !holders(loc).includes(nodeId)) continue;
      const left = holders(loc).filter((n) => n !== nodeId);
      if (left.length) {
        o.location = { node: left[0], size: loc.size, copies: left.slice(1), refs: loc.refs };
        continue;
      }
      const why =
        `object ${o.id} (made by ${o.createdBy}) is lost: node ${nodeId}, the only one holding it, died ` +
        `(${cause})`;
      if (o.rebuild?.(why)) this.owned.unseal(o.id);
      else o.location = { error: new ObjectLostError(why) };
    }
  }

  /** Frees an owned object once no ref to it is left here or anywhere else. */
  private maybeFree(id: string): void {
    const o = this.owned.get(id);
    if (!o || (o.borrowers?.size ?? 0) > 0 || this.refs.count(id) > 0) return;
    if (!o.location) {
      this.owned.onSealed(id, () => this.maybeFree(id));
      return;
    } // freed once it exists
    this.free(o);
  }

  private free(o: OwnedObject): void {
    this.owned.delete(o.id);
    this.held.delete(o.id);
    this.decoded.delete(o.id);
    for (const node of o.location ? holders(o.location) : []) {
      const ids = this.freeBatch.get(node);
      if (ids) ids.push(o.id);
      else this.freeBatch.set(node, [o.id]);
      this.freeTimer ??= setTimeout(() => void this.flushFrees(), 100);
      this.freeTimer.unref?.();
    }
  }

  /** Tells each node what to delete, one message per node for all the frees of the last 100 ms. */
  private flushFrees(): Promise<unknown> {
    clearTimeout(this.freeTimer);
    this.freeTimer = undefined;
    const batch = this.freeBatch;
    this.freeBatch = new Map();
    if (this.o.bus.isClosed) return Promise.resolve();
    return Promise.all(
      [...batch].map(([node, ids]) =>
        this.o.bus.request(subjects.obj.nodeFree(node), { ids }, { timeoutMs: 2000 }).catch(() => undefined),
      ),
    );
  }

  /** On shutdown: what we own goes with us (as in Ray, objects share their owner's fate). */
  async freeAll(): Promise<void> {
    for (const o of [...this.owned.values()]) this.free(o);
    await this.flushFrees();
  }
}
