// Lanes: a Unix socket straight from a caller to a worker process on the same machine, for batched requests
// (actor calls). Over NATS a call crosses the server twice and wakes three processes; on a lane it wakes two. The bus
// decides what goes on a lane (see Bus.route); this module only moves frames and says what became of them.
//
// Frame: u32 length (of the rest), u8 kind, then by kind:
//   CHALLENGE  a fresh nonce (the server's first frame)
//   HELLO      u16 proof length, proof over the nonce (see lane-auth.ts), the caller's process id (the client's first
//              frame, sent once the nonce came; anything else first closes the connection, as does a process id other
//              than the one the proof's identity is bound to)
//   ACCEPT     nothing (the server took the proof: the caller sends its requests only after it, so requests on a lane
//              whose proof was refused went nowhere, and go over NATS instead)
//   REQUEST    u8 id length, id, u16 subject length, subject, message
//   REPLY      u8 id length, id, message
//   NOBODY     u8 id length, id (nothing serves that subject here: as NATS's "no responders")
//   EVENT      u8 0, u16 subject length, subject, message (for the caller alone, in order with its answers)
//
// A lane server is reachable by any process of the user running the node, and the user code in it may be another
// job's: it reads no frame longer than it may be (before buffering it), closes a connection that does not prove
// itself in time or stays idle, takes a bounded number of connections, and stops reading from a caller that does
// not read its answers.
import net from 'node:net';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { type LaneAuth, MAX_PROOF_BYTES, NONCE_BYTES, newNonce } from './lane-auth.ts';

const HELLO = 0,
  REQUEST = 1,
  REPLY = 2,
  NOBODY = 3,
  EVENT = 4,
  CHALLENGE = 5,
  ACCEPT = 6;

/** Longest socket path Linux takes (sun_path is 108 bytes, with its NUL). */
export const MAX_LANE_PATH = 107;

/** Where a worker process listens: in its node's object directory (private to the user running the node). */
export function lanePath(objectDir: string, pid: number): string {
  return join(objectDir, `lane-${pid}`);
}

/** What a lane server allows its callers. */
export interface LaneLimits {
  /** Longest frame either end reads once the caller proved itself; a longer declared length closes the lane. */
  maxFrame: number;
  /** A connection that has not proved itself this long after it opened is closed. */
  handshakeMs: number;
  /** A connection with nothing to answer, or whose caller reads nothing we write, is closed after this long. */
  idleMs: number;
  /** Connections open at once; more are refused. */
  maxConnections: number;
  /** Of those, connections still to prove themselves: more are refused (so a flood of silent ones locks out nobody
   * for longer than handshakeMs). */
  maxHandshakes: number;
  /** Answer bytes waiting for a caller that does not read: past this, its connection is closed. */
  maxBuffered: number;
}

/** The limits for a bus whose server takes messages of up to `maxPayload` bytes: the bus splits every batch and every
 * answer under that (Bus.fitting), so a frame is that and its header (id, subject) at most; the rest is headroom. */
export function laneLimits(maxPayload: number): LaneLimits {
  const maxFrame = maxPayload + 128 * 1024;
  return {
    maxFrame,
    handshakeMs: 5000,
    idleMs: 10 * 60_000,
    maxConnections: 1024,
    maxHandshakes: 64,
    maxBuffered: Math.max(64 * 1024 * 1024, 4 * maxFrame),
  };
}

/** The client's first frame can be no longer than this: kind, proof length, proof, process id. */
const MAX_HELLO_FRAME = 3 + MAX_PROOF_BYTES + 255;

function hello(proof: Uint8Array, proc: string): Buffer {
  const b = Buffer.allocUnsafe(7 + proof.length + Buffer.byteLength(proc, 'latin1'));
  b.writeUInt32BE(b.length - 4, 0);
  b[4] = HELLO;
  b.writeUInt16BE(proof.length, 5);
  b.set(proof, 7);
  b.write(proc, 7 + proof.length, 'latin1');
  return b;
}

const ACCEPTED = Buffer.from([0, 0, 0, 1, ACCEPT]);

function challenge(nonce: Uint8Array): Buffer {
  const b = Buffer.allocUnsafe(5 + nonce.length);
  b.writeUInt32BE(1 + nonce.length, 0);
  b[4] = CHALLENGE;
  b.set(nonce, 5);
  return b;
}

/** Messages up to this size are copied in behind their frame's header (one buffer to write is cheaper than two);
 * larger ones are written after it as they are. */
const COPY_BELOW = 16 * 1024;

/** A frame's header, and its message too when that is small (then the second buffer is undefined). */
function frame(
  kind: number,
  id: string,
  subject: string | undefined,
  data: Uint8Array | undefined,
): [Buffer, Uint8Array | undefined] {
  const idLen = Buffer.byteLength(id);
  const subjLen = subject === undefined ? 0 : Buffer.byteLength(subject);
  const size = data?.length ?? 0;
  const head = 6 + idLen + (subject === undefined ? 0 : 2 + subjLen);
  const b = Buffer.allocUnsafe(head + (size < COPY_BELOW ? size : 0));
  b.writeUInt32BE(head - 4 + size, 0);
  b[4] = kind;
  b[5] = idLen;
  const at = 6 + b.write(id, 6, 'latin1');
  if (subject !== undefined) {
    b.writeUInt16BE(subjLen, at);
    b.write(subject, at + 2, 'latin1');
  }
  if (size >= COPY_BELOW) return [b, data];
  if (size) b.set(data!, head);
  return [b, undefined];
}

/** A frame declared longer than its reader takes: the connection goes before any of it is buffered. */
class FrameTooLong extends Error {}

/** Cuts a byte stream into frames. A large frame's chunks are joined once, when it is whole. */
class Frames {
  private parts: Buffer[] = [];
  private size = 0;
  /** Bytes needed before the next frame can be read. */
  private need = 4;

  constructor(
    private readonly onFrame: (f: Buffer) => void,
    /** Longest frame taken now (the caller raises it once the other end proved itself). */
    public max: number,
  ) {}

  push(chunk: Buffer): void {
    this.parts.push(chunk);
    this.size += chunk.length;
    if (this.size < this.need) return;
    const b = this.parts.length === 1 ? this.parts[0] : Buffer.concat(this.parts, this.size);
    let at = 0;
    while (b.length - at >= 4) {
      const len = this.length(b, at);
      if (b.length - at - 4 < len) break;
      this.onFrame(b.subarray(at + 4, at + 4 + len));
      at += 4 + len;
    }
    const rest = b.length - at;
    this.parts = rest ? [b.subarray(at)] : [];
    this.size = rest;
    this.need = rest >= 4 ? 4 + this.length(b, at) : 4;
  }

  private length(b: Buffer, at: number): number {
    const len = b.readUInt32BE(at);
    if (len > this.max) throw new FrameTooLong(`a frame of ${len} bytes; at most ${this.max} are taken`);
    return len;
  }
}

/** Reads "u8 length, latin1 text" at `at`; returns the text and where the rest starts. */
function readId(f: Buffer, at: number): [string, number] {
  const n = f[at];
  return [f.toString('latin1', at + 1, at + 1 + n), at + 1 + n];
}

/** Writes queued frames in one go when asked: callers answer and send in bursts. */
export class Outgoing {
  private queued: Uint8Array[] = [];
  /** Frames wait in the queue until the lane is open (a client's, until it has proved itself). */
  held = false;
  /** Called when the socket takes no more for now (write() said false): a server then stops reading. */
  onFull: (() => void) | undefined;
  constructor(
    readonly socket: net.Socket,
    private readonly wake: (o: Outgoing) => void,
  ) {}

  queue(kind: number, id: string, subject: string | undefined, data: Uint8Array | undefined): void {
    const [head, large] = frame(kind, id, subject, data);
    if (this.queued.push(head) === 1) this.wake(this);
    if (large) this.queued.push(large);
  }

  flush(): void {
    const q = this.queued;
    if (!q.length || this.held) return;
    this.queued = [];
    if (this.socket.destroyed) return;
    let more = true;
    if (q.length === 1) more = this.socket.write(q[0]);
    else {
      this.socket.cork();
      for (const f of q) more = this.socket.write(f) && more;
      this.socket.uncork();
    }
    if (!more) this.onFull?.();
  }
}

/** What a lane server hands up: a request, and how to answer it (later, from any turn). A class, not closures: one
 * is made for every batch a busy actor gets. */
export class LaneRequest {
  constructor(
    readonly subject: string,
    readonly data: Uint8Array,
    private readonly conn: ServerConnection,
    private readonly id: string,
  ) {
    conn.unanswered++;
  }

  /** last: false while more parts of the answer are to come (a batch is answered as its calls finish). */
  reply(data: Uint8Array, last = true): void {
    if (last) this.conn.unanswered--;
    this.conn.lastActive = Date.now();
    this.conn.out.queue(REPLY, this.id, undefined, data);
  }

  /** The process that asked, as its lane's hello named it. */
  get proc(): string | undefined {
    return this.conn.proc;
  }

  /** An event for the process that asked: it arrives before the answer. */
  event(subject: string, data: Uint8Array): void {
    this.conn.out.queue(EVENT, '', subject, data);
  }

  /** Nothing to answer (a batch of no requests). */
  drop(): void {
    this.conn.unanswered--;
  }

  /** Nothing serves this subject here. */
  nobody(): void {
    this.conn.unanswered--;
    this.conn.out.queue(NOBODY, this.id, undefined, undefined);
  }
}

/** One caller's connection to a lane server. */
class ServerConnection {
  readonly out: Outgoing;
  /** Requests read and not yet wholly answered: a connection waiting for them is not idle. */
  unanswered = 0;
  /** Last time bytes went either way. */
  lastActive = Date.now();
  proc: string | undefined;
  /** The proof it opened with: who it is, for recheck(). */
  proof: Uint8Array | undefined;

  constructor(
    readonly socket: net.Socket,
    wake: (o: Outgoing) => void,
  ) {
    this.out = new Outgoing(socket, wake);
  }

  /** Idle: nothing to answer and nothing heard for a while, or answers the caller has not read for a while. */
  idle(now: number, idleMs: number): boolean {
    return now - this.lastActive > idleMs && (this.unanswered <= 0 || this.socket.writableLength > 0);
  }
}

/** The worker's end: listens on `path`, takes connections that prove themselves over a fresh nonce first. */
export class LaneServer {
  private readonly server: net.Server;
  private readonly conns = new Set<ServerConnection>();
  private handshakes = 0;
  /** The connection each caller process came on: events for it go there, after its answers. */
  private readonly byProc = new Map<string, Outgoing>();
  private readonly idleTimer: NodeJS.Timeout;

  private constructor(
    readonly path: string,
    private readonly auth: LaneAuth,
    private readonly onRequest: (r: LaneRequest) => void,
    private readonly wake: (o: Outgoing) => void,
    private readonly limits: LaneLimits,
  ) {
    this.server = net.createServer((socket) => this.accept(socket));
    this.server.maxConnections = limits.maxConnections;
    this.idleTimer = setInterval(
      () => {
        const now = Date.now();
        for (const c of this.conns) if (c.idle(now, limits.idleMs)) c.socket.destroy();
      },
      Math.max(10, Math.min(limits.idleMs / 4, 30_000)),
    );
    this.idleTimer.unref();
  }

  private accept(socket: net.Socket): void {
    const { limits } = this;
    socket.on('error', () => socket.destroy());
    if (this.handshakes >= limits.maxHandshakes) {
      socket.destroy();
      return;
    }
    const conn = new ServerConnection(socket, this.wake);
    this.conns.add(conn);
    this.handshakes++;
    let trusted = false;
    const nonce = newNonce();
    const timer = setTimeout(() => socket.destroy(), limits.handshakeMs);
    timer.unref();
    socket.on('close', () => {
      clearTimeout(timer);
      if (!trusted) this.handshakes--;
      this.conns.delete(conn);
      if (conn.proc !== undefined && this.byProc.get(conn.proc) === conn.out) this.byProc.delete(conn.proc);
    });
    // A caller that does not read its answers: stop reading its requests until it does (it then makes no more
    // answers); one that still lets answers pile up past the bound (calls read before it stopped) goes.
    conn.out.onFull = () => {
      if (socket.writableLength > limits.maxBuffered) {
        socket.destroy();
        return;
      }
      // A frame's worth may wait (a large answer on its way to a caller that reads); past that, wait for the caller.
      if (socket.writableLength < limits.maxFrame || socket.isPaused()) return;
      socket.pause();
      socket.once('drain', () => {
        conn.lastActive = Date.now();
        socket.resume();
      });
    };
    const frames = new Frames((f) => {
      if (socket.destroyed) return;
      if (!trusted) {
        // Anything but a proof over our nonce first, and the connection goes: a lane runs code, as the bus does.
        const proofLen = f[0] === HELLO && f.length >= 3 ? f.readUInt16BE(1) : -1;
        if (proofLen < 0 || 3 + proofLen > f.length || !this.auth.verify(nonce, f.subarray(3, 3 + proofLen))) {
          socket.destroy();
          return;
        }
        const proof = Buffer.from(f.subarray(3, 3 + proofLen));
        const proc = f.toString('latin1', 3 + proofLen);
        const bound = this.auth.processOf?.(proof);
        if (bound !== undefined && bound !== proc) {
          socket.destroy(); // a worker naming another process, to be sent that one's events
          return;
        }
        trusted = true;
        this.handshakes--;
        clearTimeout(timer);
        frames.max = limits.maxFrame;
        conn.proof = proof;
        conn.proc = proc;
        this.byProc.set(conn.proc, conn.out);
        socket.write(ACCEPTED);
        return;
      }
      if (f[0] !== REQUEST) {
        socket.destroy();
        return;
      }
      const [id, at] = readId(f, 1);
      const subjLen = f.readUInt16BE(at);
      const subject = f.toString('latin1', at + 2, at + 2 + subjLen);
      this.onRequest(new LaneRequest(subject, f.subarray(at + 2 + subjLen), conn, id));
    }, MAX_HELLO_FRAME);
    socket.on('data', (chunk: Buffer) => {
      conn.lastActive = Date.now();
      try {
        frames.push(chunk);
      } catch {
        socket.destroy();
      } // a malformed or overlong frame: that connection goes, we stay
    });
    socket.write(challenge(nonce));
  }

  /** Queues an event for process `proc` on its connection; false when it has none. */
  event(proc: string, subject: string, data: Uint8Array): boolean {
    const out = this.byProc.get(proc);
    if (!out || out.socket.destroyed) return false;
    out.queue(EVENT, '', subject, data);
    return true;
  }

  /** Closes the lanes of callers no longer allowed (a credential revoked since they opened them). */
  recheck(): void {
    const { admits } = this.auth;
    if (!admits) return;
    for (const c of this.conns) if (c.proof && !admits(c.proof)) c.socket.destroy();
  }

  /** Connections open now (to see the limits at work). */
  get connections(): number {
    return this.conns.size;
  }

  /** Listens on `path` (a stale socket file left there is replaced); undefined when the path is too long. */
  static async listen(
    path: string,
    auth: LaneAuth,
    onRequest: (r: LaneRequest) => void,
    wake: (o: Outgoing) => void,
    limits: LaneLimits,
  ): Promise<LaneServer | undefined> {
    if (Buffer.byteLength(path) > MAX_LANE_PATH) return undefined;
    rmSync(path, { force: true });
    const s = new LaneServer(path, auth, onRequest, wake, limits);
    await new Promise<void>((resolve, reject) => {
      s.server.once('error', reject);
      s.server.listen(path, () => {
        s.server.off('error', reject);
        resolve();
      });
    });
    return s;
  }

  close(): void {
    clearInterval(this.idleTimer);
    this.server.close();
    for (const c of this.conns) c.socket.destroy();
    rmSync(this.path, { force: true });
  }
}

/** What became of the requests on a lane that ended. */
export interface LaneEnd {
  /** Whether it was ever open (connected, and past the handshake). */
  opened: boolean;
  /** Written before the lane was up, or after it went: nobody got them. */
  unsent: string[];
  /** Sent on a lane that then closed: they may have run. */
  lost: string[];
}

/** The caller's end of a lane to one worker process. */
export class Lane {
  private readonly socket: net.Socket;
  private readonly out: Outgoing;
  /** Requests sent and not answered, by id. */
  private readonly open = new Set<string>();
  private connected = false;
  closed = false;

  constructor(
    readonly path: string,
    auth: LaneAuth,
    /** The caller's process id, told to the worker: its events for us come on this lane. */
    proc: string,
    /** reply: told of each part of an answer; true once the request has its last. */
    private readonly on: {
      reply(id: string, data: Buffer): boolean;
      nobody(id: string): void;
      event(subject: string, data: Buffer): void;
      end(lane: Lane, what: LaneEnd): void;
    },
    wake: (o: Outgoing) => void,
    limits: LaneLimits,
  ) {
    this.socket = net.connect(path);
    this.out = new Outgoing(this.socket, wake);
    this.out.held = true; // until the server took our proof: requests before that would go nowhere
    this.socket.on('error', () => this.socket.destroy());
    this.socket.on('close', () => this.end());
    let proved = false;
    const frames = new Frames((f) => {
      if (!this.connected) {
        // The nonce, then (once our proof is in) the server's word that it took it; anything else ends the lane.
        if (!proved && f[0] === CHALLENGE && f.length === 1 + NONCE_BYTES) {
          this.socket.write(hello(auth.respond(f.subarray(1)), proc));
          proved = true;
        } else if (proved && f[0] === ACCEPT && f.length === 1) {
          this.connected = true;
          this.out.held = false;
          this.out.flush();
        } else this.socket.destroy();
        return;
      }
      const [id, at] = readId(f, 1);
      if (f[0] === EVENT) {
        const n = f.readUInt16BE(at);
        this.on.event(f.toString('latin1', at + 2, at + 2 + n), f.subarray(at + 2 + n));
        return;
      }
      if (!this.open.has(id)) return;
      if (f[0] === REPLY && !this.on.reply(id, f.subarray(2 + f[1]))) return;
      this.open.delete(id);
      if (f[0] !== REPLY) this.on.nobody(id);
    }, limits.maxFrame);
    this.socket.on('data', (chunk: Buffer) => {
      try {
        frames.push(chunk);
      } catch {
        this.socket.destroy();
      }
    });
  }

  /** False when the lane has closed: the request then goes another way. */
  send(id: string, subject: string, data: Uint8Array, now: boolean): boolean {
    if (this.closed) return false;
    this.open.add(id);
    this.out.queue(REQUEST, id, subject, data);
    if (now) this.out.flush();
    return true;
  }

  close(): void {
    this.socket.destroy();
  }

  /** The lane no longer keeps the process running (a driver's: see Bus's holdsProcess). */
  unref(): void {
    this.socket.unref();
  }

  private end(): void {
    if (this.closed) return;
    this.closed = true;
    const ids = [...this.open];
    this.open.clear();
    this.on.end(
      this,
      this.connected ? { opened: true, unsent: [], lost: ids } : { opened: false, unsent: ids, lost: [] },
    );
  }
}
