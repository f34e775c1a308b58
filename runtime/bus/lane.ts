// Lanes: a Unix socket straight from a caller to a worker process on the same machine, for batched requests
// (actor calls). Over NATS a call crosses the server twice and wakes three processes; on a lane it wakes two. The bus
// decides what goes on a lane (see Bus.route); this module only moves frames and says what became of them.
//
// Frame: u32 length (of the rest), u8 kind, then by kind:
//   HELLO    sha-256 of the cluster token, the caller's process id (the first frame; anything else first closes it)
//   REQUEST  u8 id length, id, u16 subject length, subject, message
//   REPLY    u8 id length, id, message
//   NOBODY   u8 id length, id (nothing serves that subject here: as NATS's "no responders")
//   EVENT    u8 0, u16 subject length, subject, message (for the caller alone, in order with its answers)
import net from 'node:net';
import { createHash, timingSafeEqual } from 'node:crypto';
import { rmSync } from 'node:fs';
import { join } from 'node:path';

const HELLO = 0,
  REQUEST = 1,
  REPLY = 2,
  NOBODY = 3,
  EVENT = 4;

/** Longest socket path Linux takes (sun_path is 108 bytes, with its NUL). */
export const MAX_LANE_PATH = 107;

/** Where a worker process listens: in its node's object directory (private to the user running the node). */
export function lanePath(objectDir: string, pid: number): string {
  return join(objectDir, `lane-${pid}`);
}

function digest(token: string): Buffer {
  return createHash('sha256').update(token).digest();
}

function hello(token: string, proc: string): Buffer {
  const d = digest(token);
  const b = Buffer.allocUnsafe(5 + d.length + Buffer.byteLength(proc, 'latin1'));
  b.writeUInt32BE(b.length - 4, 0);
  b[4] = HELLO;
  b.set(d, 5);
  b.write(proc, 5 + d.length, 'latin1');
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

/** Cuts a byte stream into frames. A large frame's chunks are joined once, when it is whole. */
class Frames {
  private parts: Buffer[] = [];
  private size = 0;
  /** Bytes needed before the next frame can be read. */
  private need = 4;

  constructor(private readonly onFrame: (f: Buffer) => void) {}

  push(chunk: Buffer): void {
    this.parts.push(chunk);
    this.size += chunk.length;
    if (this.size < this.need) return;
    const b = this.parts.length === 1 ? this.parts[0] : Buffer.concat(this.parts, this.size);
    let at = 0;
    while (b.length - at >= 4) {
      const len = b.readUInt32BE(at);
      if (b.length - at - 4 < len) break;
      this.onFrame(b.subarray(at + 4, at + 4 + len));
      at += 4 + len;
    }
    const rest = b.length - at;
    this.parts = rest ? [b.subarray(at)] : [];
    this.size = rest;
    this.need = rest >= 4 ? 4 + b.readUInt32BE(at) : 4;
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
    if (!q.length) return;
    this.queued = [];
    if (this.socket.destroyed) return;
    if (q.length === 1) {
      this.socket.write(q[0]);
      return;
    }
    this.socket.cork();
    for (const f of q) this.socket.write(f);
    this.socket.uncork();
  }
}

/** What a lane server hands up: a request, and how to answer it (later, from any turn). A class, not closures: one
 * is made for every batch a busy actor gets. */
export class LaneRequest {
  constructor(
    readonly subject: string,
    readonly data: Uint8Array,
    private readonly out: Outgoing,
    private readonly id: string,
  ) {}

  reply(data: Uint8Array): void {
    this.out.queue(REPLY, this.id, undefined, data);
  }

  /** Nothing serves this subject here. */
  nobody(): void {
    this.out.queue(NOBODY, this.id, undefined, undefined);
  }
}

/** The worker's end: listens on `path`, takes connections that say the cluster token first. */
export class LaneServer {
  private readonly server: net.Server;
  private readonly conns = new Set<net.Socket>();
  /** The connection each caller process came on: events for it go there, after its answers. */
  private readonly byProc = new Map<string, Outgoing>();

  private constructor(
    readonly path: string,
    token: string,
    onRequest: (r: LaneRequest) => void,
    wake: (o: Outgoing) => void,
  ) {
    const want = digest(token);
    this.server = net.createServer((socket) => {
      this.conns.add(socket);
      socket.on('close', () => this.conns.delete(socket));
      socket.on('error', () => socket.destroy());
      const out = new Outgoing(socket, wake);
      let trusted = false;
      const frames = new Frames((f) => {
        if (!trusted) {
          // Anything but the right token first, and the connection goes: a lane runs code, as the bus does.
          trusted = f[0] === HELLO && f.length > want.length && timingSafeEqual(f.subarray(1, 1 + want.length), want);
          if (!trusted) {
            socket.destroy();
            return;
          }
          const proc = f.toString('latin1', 1 + want.length);
          this.byProc.set(proc, out);
          socket.on('close', () => {
            if (this.byProc.get(proc) === out) this.byProc.delete(proc);
          });
          return;
        }
        if (f[0] !== REQUEST) {
          socket.destroy();
          return;
        }
        const [id, at] = readId(f, 1);
        const subjLen = f.readUInt16BE(at);
        const subject = f.toString('latin1', at + 2, at + 2 + subjLen);
        onRequest(new LaneRequest(subject, f.subarray(at + 2 + subjLen), out, id));
      });
      socket.on('data', (chunk: Buffer) => {
        try {
          frames.push(chunk);
        } catch {
          socket.destroy();
        } // a malformed frame: that connection goes, we stay
      });
    });
  }

  /** Queues an event for process `proc` on its connection; false when it has none. */
  event(proc: string, subject: string, data: Uint8Array): boolean {
    const out = this.byProc.get(proc);
    if (!out || out.socket.destroyed) return false;
    out.queue(EVENT, '', subject, data);
    return true;
  }

  /** Listens on `path` (a stale socket file left there is replaced); undefined when the path is too long. */
  static async listen(
    path: string,
    token: string,
    onRequest: (r: LaneRequest) => void,
    wake: (o: Outgoing) => void,
  ): Promise<LaneServer | undefined> {
    if (Buffer.byteLength(path) > MAX_LANE_PATH) return undefined;
    rmSync(path, { force: true });
    const s = new LaneServer(path, token, onRequest, wake);
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
    this.server.close();
    for (const c of this.conns) c.destroy();
    rmSync(this.path, { force: true });
  }
}

/** What became of the requests on a lane that ended. */
export interface LaneEnd {
  /** Whether it was ever connected. */
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
    token: string,
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
  ) {
    this.socket = net.connect(path);
    this.out = new Outgoing(this.socket, wake);
    this.socket.write(hello(token, proc));
    this.socket.once('connect', () => {
      this.connected = true;
    });
    this.socket.on('error', () => this.socket.destroy());
    this.socket.on('close', () => this.end());
    const frames = new Frames((f) => {
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
    });
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
