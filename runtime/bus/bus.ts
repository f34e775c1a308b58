// The bus: one NATS connection per process, one wildcard reply inbox with a correlation map
// (no per-call subscription, no per-call timer), and servers that never die of a bad message.
import {
  connect,
  type ConnectionOptions,
  type NatsConnection,
  type Msg,
  type Subscription,
} from '@nats-io/transport-node';
import { AuthorizationError, nuid, PermissionViolationError } from '@nats-io/nats-core';
import {
  type IssuedUser,
  isCredential,
  parseCredential,
  type SignedUser,
  signUser,
  takeIssuedUser,
  userAuthenticator,
} from './credential.ts';
import { existsSync } from 'node:fs';
import { checkServerIdentity, type PeerCertificate } from 'node:tls';
import { randomFillSync } from 'node:crypto';
import { encode, decode } from '../base/codec.ts';
import { nearestServersFirst, defaults, clusterCa, hostsOf, pingIntervalFor, plainAllowed } from '../base/config.ts';
import {
  AuthenticationError,
  CallLostError,
  ConnectionError,
  NoRespondersError,
  PermissionDeniedError,
  RequestTimeoutError,
  TlsTrustError,
  UsageError,
  ProtocolError,
  asError,
} from '../base/errors.ts';
import { holdUntil } from '../base/keep-alive.ts';
import { sleep } from '../base/processes.ts';
import { Lane, LaneServer, laneLimits, type LaneEnd, type LaneRequest, type Outgoing } from './lane.ts';
import { userLaneAuth, tokenLaneAuth, type LaneAuth } from './lane-auth.ts';
import { unrefConnection } from './unref-connection.ts';
import { KeptAnswers } from './kept-answers.ts';
import { HomeServer } from './home-server.ts';

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
/** What a handler returns (or its promise resolves to) to leave a request unanswered. */
export const NO_REPLY = Symbol('troupe.noReply');

/** How long a process keeps the answers it sent over NATS (kept-answers.ts; in how many bytes at most:
 * defaults.keptAnswerBytes). */
const KEPT_ANSWER_MS = 60_000;

/** Requests of one batch that go as a message of their own, without waiting for the end of the turn. */
const BATCH_PART = 256;
/** How soon requestUntilAnswered asks again where nobody serves the subject (a process between connections). */
const ABSENT_RETRY_MS = 500;

/** A request sent with requestBatched. It is its own entry in the batch (no promise, no closures: a busy caller
 * makes thousands a second) and hears of its answer, once, by one of its methods. */
export interface BatchedRequest<T = any> {
  readonly body: unknown;
  /** The reply subject of the batch it last went in over NATS (set by the bus): a probe names it, for the worker to
   * send the answers it kept for that batch again (Bus.answerAgain). */
  sentOn?: string;
  answered(value: T): void;
  failed(error: Error): void;
}

/** The reply subjects of the batches these requests last went in over NATS: what a probe names (answerAgain). */
export function batchesOf(requests: Iterable<BatchedRequest>): string[] {
  const replies = new Set<string>();
  for (const r of requests) if (r.sentOn) replies.add(r.sentOn);
  return [...replies];
}

/** Tells a request its answer. A handler that throws is a bug: it surfaces as an uncaught error, as a throwing
 * promise handler would, without keeping the other requests of its batch from hearing theirs. */
function settle(req: BatchedRequest, failed: boolean, value: unknown): void {
  try {
    if (failed) req.failed(asError(value));
    else req.answered(value);
  } catch (e) {
    queueMicrotask(() => {
      throw e;
    });
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
  constructor(
    readonly subject: string,
    private readonly items: Array<BatchedRequest | undefined>,
  ) {}

  resolve(): void {}

  /** Each request hears once: it leaves `items` when answered. True once all have. A malformed part (from the bus:
   * untrusted) throws before any request hears of it. */
  part(answers: BatchPart): boolean {
    if (!isBatchPart(answers, this.items.length))
      throw new ProtocolError(`malformed answer to a batch on ${this.subject}`);
    for (const [i, failed, value] of answers) {
      const x = this.items[i];
      if (!x) continue; // answered already: a worker may send its answers again (answerAgain)
      this.items[i] = undefined;
      this.answered++;
      settle(x, failed === 1, value);
    }
    return this.answered >= this.items.length;
  }

  /** The requests not answered yet. */
  unanswered(): BatchedRequest[] {
    return this.items.filter((x): x is BatchedRequest => x !== undefined);
  }

  reject(e: Error): void {
    for (let i = 0; i < this.items.length; i++) {
      const x = this.items[i];
      this.items[i] = undefined;
      if (x) settle(x, true, e);
    }
  }
}

/** The process a batched request came from, as its handler can reach it. */
export interface Asker {
  /** Its process id when the request came on a lane (named by the lane's hello); undefined over NATS. */
  readonly laneProc: string | undefined;
  /** Sends an event that reaches the asker before the request's answer: on the lane the request came by, or else on
   * our NATS connection, which the answer takes after it. */
  tellFirst(subject: string, body: unknown): void;
}

/** Serves one request of a batch (see serveBatched). */
type BatchHandler = (body: any, asker: Asker) => unknown;

/** The answers of one received batch that finished in this turn of the event loop, and where they go: a NATS reply
 * subject, or back down the lane the batch came on. */
class BatchAnswers implements Asker {
  done: BatchPart = [];
  /** Requests of the batch not yet finished (a lane counts the batch answered once none is left). */
  left = 0;
  constructor(
    readonly reply: string | undefined,
    readonly lane?: LaneRequest,
    /** Its answers sent over NATS are kept a while, for answerAgain(). */
    readonly keep = false,
    private readonly publish?: (subject: string, body: unknown) => void,
  ) {}

  get laneProc(): string | undefined {
    return this.lane?.proc;
  }

  tellFirst(subject: string, body: unknown): void {
    if (this.lane) this.lane.event(subject, encode(body));
    else this.publish?.(subject, body);
  }
}

export interface ConnectOptions {
  address: string;
  /** A role's credential (a signing key of the cluster's account, `SA….A…`: bus/credential.ts), a user its node
   * issued to this process (a worker's), or a plain token for a nats-server that wants one (--nats). */
  token: string | IssuedUser;
  /** Shown by the server (connz) and in logs. */
  name: string;
  /** Daemons reconnect forever; drivers give up after a while. */
  daemon?: boolean;
  /** The process's id in the cluster, when it has one: workers it opens lanes to send its events (publishTo) on
   * them. */
  procId?: string;
  /** False (drivers): the connection and its lanes do not keep the process running; only replies and values awaited
   * do (base/keep-alive.ts), so a script ends when its work does. Default true. */
  holdsProcess?: boolean;
  /** The cluster CA (PEM) to verify the server with. Default: TROUPE_TLS_CA, else the CA this machine saved for the
   * address (base/config.ts clusterCa). None: plain text where the user allowed it (base/config.ts plainAllowed:
   * loopback, --no-tls, TROUPE_NO_TLS=1), else the connect is refused before anything is sent. */
  tlsCa?: string;
}

/** nats.js TLS options that trust only `ca` and check that the server's certificate names the host we dialled (an IP
 * against its IP SANs: nats.js would otherwise check "localhost" for an IP address). */
export function tlsOptions(
  ca: string,
  address: string,
): { ca: string; checkServerIdentity: typeof checkServerIdentity } {
  // Of several servers, the certificate must name one of them: nats.js does not pass the host it dialled.
  const hosts = hostsOf(address);
  return {
    ca,
    checkServerIdentity: (_name: string, cert: PeerCertificate) => {
      const errors = hosts.map((host) => checkServerIdentity(host, cert));
      return errors.includes(undefined) ? undefined : errors[0];
    },
  };
}

/** TLS errors whose cause is trust (the certificate chain or the name), not the network. */
const TRUST_CODES = /CERT|SELF_SIGNED|UNABLE_TO_(GET|VERIFY)|ERR_TLS_CERT_ALTNAME|SIGNATURE/;

function tlsFailure(e: unknown, address: string, ca: string | undefined): TlsTrustError | undefined {
  const chain: string[] = [];
  for (let c = e as { code?: unknown; message?: unknown; cause?: unknown } | undefined; c && chain.length < 5; ) {
    chain.push(`${String(c.code ?? '')} ${String(c.message ?? '')}`);
    c = c.cause as typeof c;
  }
  const text = chain.join(' ');
  const line = `troupe start --address ${address} --ca-sha256 sha256:…`;
  const join = `join with the head's join line (${line}), or pass the CA`;
  if (/tls.*(not available|does not support)|does not support 'tls'/i.test(text))
    return new TlsTrustError(
      `the cluster at ${address} does not use TLS, but this machine trusts a CA for it (TROUPE_TLS_CA or a saved ` +
        'one): refusing a plain connection',
      { cause: e },
    );
  if (!TRUST_CODES.test(text)) return undefined;
  return new TlsTrustError(
    ca
      ? `the cluster at ${address} shows a certificate that the CA this machine trusts for it did not sign or that ` +
          `does not name that address (${text.trim()}): ${join} again`
      : `the cluster at ${address} uses TLS and this machine has no CA for it: ${join} as --tls-ca FILE / ` +
          'TROUPE_TLS_CA / init({ tlsCa })',
    { cause: e },
  );
}

export type Handler = (body: any, msg: Msg) => unknown;

/** Where the replies to a connection's user go: only it may subscribe there (runtime/protocol/permissions.ts grants
 * it). */
export function inboxOf(publicKey: string): string {
  return `_INBOX.${publicKey}`;
}

export class Bus {
  /** This process's one wildcard reply inbox, under its identity's prefix. */
  readonly inbox: string;
  /** Denied publishes and subscriptions, by subject (logged once each). */
  readonly denied = new Map<string, number>();
  /** How often this connection was lost: a request that failed while this stayed the same failed on a live
   * connection (in a NATS cluster, one routed to a server that is gone), not because this process lost the bus. */
  disconnects = 0;
  private readonly pending = new Map<string, Pending>();
  private seq = 0;
  /** Random bytes for reply ids, drawn 4 KiB at a time. */
  private random = Buffer.alloc(4096);
  private randomAt = this.random.length;
  private sweeper: NodeJS.Timeout | undefined;
  private closed = false;
  /** Brings the connection back to this machine's server when it is elsewhere (undefined: no server here). */
  private home: HomeServer | undefined;
  /** The CA this connection verifies the server with (undefined: plain): other connections of this process (the
   * heartbeat thread) use the same. */
  tlsCa: string | undefined;

  private constructor(
    readonly nc: NatsConnection,
    readonly address: string,
    /** The user this connection is (each signs a user of its own from a credential; a worker's is issued by its
     * node): lanes prove it. Undefined with a plain token, which lanes prove by HMAC. */
    readonly user: SignedUser | undefined,
    token: string,
    private readonly procId: string,
    private readonly holdsProcess: boolean,
    inboxPrefix: string,
  ) {
    this.inbox = `${inboxPrefix}.${nuid.next()}`;
    this.laneAuth = user ? userLaneAuth({ user, allowed: [] }) : tokenLaneAuth(token);
    void this.watchStatus();
    nc.subscribe(`${this.inbox}.*`, { callback: (err, msg) => total(err, msg, 'a reply', (m) => this.onReply(m)) });
    // The server is gone for good (reconnects exhausted, or it refused us): nothing pending will ever be answered.
    // Said once on stderr too, since later calls into nats.js only say "closed connection".
    nc.closed().then((err) => {
      const lost = new ConnectionError(`lost the cluster at ${address}${err ? `: ${err.message}` : ''}`, {
        cause: err,
      });
      if (!this.closed) console.error(`troupe: ${lost.message}`);
      this.failPending(lost);
    });
  }

  static async connect(opts: ConnectOptions): Promise<Bus> {
    const { servers, inOrder, local } = nearestServersFirst(opts.address);
    const ca = opts.tlsCa ?? clusterCa(opts.address);
    // Without a CA, whoever answers at an address beyond loopback could just ask for no TLS and read everything.
    if (!ca && !plainAllowed(opts.address))
      throw new TlsTrustError(
        `this machine has no CA for the cluster at ${opts.address}, which is beyond loopback: join with the head's ` +
          `join line (troupe start --address ${opts.address} --ca-sha256 sha256:…), or pass the CA as --tls-ca ` +
          'FILE / TROUPE_TLS_CA / init({ tlsCa }). A cluster started with --no-tls: join with --no-tls, or set ' +
          'TROUPE_NO_TLS=1',
      );
    // A credential signs a user of this connection's own, who signs the server's nonce (no seed leaves this
    // process); its replies come to that user's inbox, which no other connection may read.
    const token = typeof opts.token === 'string' ? opts.token : '';
    const user =
      typeof opts.token !== 'string'
        ? takeIssuedUser(opts.token)
        : isCredential(token)
          ? signUser(parseCredential(token), opts.name)
          : undefined;
    const inboxPrefix = user ? inboxOf(user.user.publicKey) : '_INBOX';
    const credential = {
      ...(user ? { authenticator: userAuthenticator(user), inboxPrefix } : { token }),
      // TLS with the cluster's own CA only; without one, nats.js still upgrades when the server requires it, and
      // fails on its certificate (tlsFailure() says what to pass).
      ...(ca ? { tls: tlsOptions(ca, opts.address) } : {}),
    };
    const home = inOrder ? new HomeServer(local) : undefined;
    const options = {
      servers,
      noRandomize: inOrder,
      ...credential,
      name: opts.name,
      maxReconnectAttempts: opts.daemon ? -1 : 60,
      reconnectTimeWait: 500,
      pingInterval: pingIntervalFor(servers),
      ...(home ? { reconnectToServer: home.pick } : {}),
    };
    let nc: NatsConnection;
    try {
      nc = await connectRetrying(options, user !== undefined);
    } catch (e) {
      const tls = tlsFailure(e, opts.address, ca);
      if (tls) throw tls;
      if (isAuthorizationError(e)) {
        throw new AuthenticationError(
          `the cluster at ${opts.address} refused the token: check TROUPE_TOKEN, --token-file or the ` +
            'current-cluster file (a revoked credential is refused too)',
          { cause: e },
        );
      }
      throw new ConnectionError(`cannot reach a troupe cluster at ${opts.address}: ${(e as Error).message}`, {
        cause: e,
      });
    }
    if (opts.holdsProcess === false && !unrefConnection(nc))
      warnOnce('this nats.js keeps the connection open: the process will not end until shutdown()');
    const bus = new Bus(
      nc,
      opts.address,
      user,
      token,
      opts.procId ?? nuid.next(),
      opts.holdsProcess !== false,
      inboxPrefix,
    );
    bus.tlsCa = ca;
    if (home) {
      bus.home = home;
      const probe = (host: string) =>
        connect({ servers: host, ...credential, name: `${opts.name}-home`, reconnect: false, timeout: 2000 }).then(
          (p) => p.close(),
        );
      home.keep(nc, probe, (host) => {
        if (opts.daemon) console.error(`troupe: ${opts.name} moves back to this machine's NATS server ${host}`);
      });
    }
    return bus;
  }

  /** nats.js reports a denied publish or subscription asynchronously, as a status: say so once per subject, and fail
   * at once the requests sent there (they would otherwise wait for their timeout, or for ever). Counts disconnects. */
  private async watchStatus(): Promise<void> {
    for await (const s of this.nc.status()) {
      if (s.type === 'disconnect') this.disconnects++;
      if (s.type !== 'error' || !(s.error instanceof PermissionViolationError)) continue;
      const { operation, subject } = s.error;
      const n = (this.denied.get(subject) ?? 0) + 1;
      this.denied.set(subject, n);
      if (n === 1) console.error(`troupe: the cluster denied this process's ${operation} on ${subject}`);
      if (operation !== 'publish') continue;
      for (const [id, p] of this.pending) {
        if (p.subject !== subject || p.gathered) continue;
        this.pending.delete(id);
        p.reject(new PermissionDeniedError(`this credential may not send to ${subject}`));
      }
    }
  }

  /** A request's reply subject is `<inbox>.<id>`. Every role may publish to inboxes (replies go there), so an id must
   * not be guessable from another: whoever saw one request can answer that one only, not this process's others. */
  private replyId(): string {
    if (this.randomAt + 8 > this.random.length) {
      randomFillSync(this.random);
      this.randomAt = 0;
    }
    const r = this.random.toString('base64url', this.randomAt, (this.randomAt += 8));
    return `${(this.seq++).toString(36)}${r}`;
  }

  /** Request/response. timeoutMs 0 waits for ever (task calls: liveness comes from death events, not timers).
   * The process stays until the answer comes, unless `hold` is false: a caller that holds it only while it cares. */
  request<T = unknown>(subject: string, body: unknown, opts: { timeoutMs?: number; hold?: boolean } = {}): Promise<T> {
    const data = encode(body); // throws SerializationError here, at the caller
    const answered = new Promise<T>((resolve, reject) => {
      const id = this.replyId();
      const timeoutMs = opts.timeoutMs ?? defaults.requestTimeoutMs;
      this.pending.set(id, {
        resolve: resolve as (v: unknown) => void,
        reject,
        subject,
        deadline: timeoutMs ? Date.now() + timeoutMs : 0,
      });
      if (timeoutMs) this.armSweeper();
      this.send(subject, data, `${this.inbox}.${id}`, (e) => {
        this.pending.delete(id);
        reject(e);
      });
    });
    return opts.hold === false ? answered : holdUntil(answered);
  }

  /** A request with no deadline that fits (a constructor may run for minutes) that a lost message still cannot hang:
   * asked again every `everyMs` (default callProbeMs) while `wanted()`, until answered. Only for handlers that join a
   * repeat to the first (one result, done once). One nobody serves (between connections) is asked again shortly, for up
   * to clientTimeoutMs. The caller learns of a death otherwise (an exit, a failure event). */
  async requestUntilAnswered<T = unknown>(
    subject: string,
    body: unknown,
    opts: { wanted: () => boolean; everyMs?: number },
  ): Promise<T> {
    let absentSince: number | undefined;
    for (;;) {
      try {
        return await this.request<T>(subject, body, { timeoutMs: opts.everyMs ?? defaults.callProbeMs });
      } catch (e) {
        if (!opts.wanted()) throw e;
        if (e instanceof NoRespondersError) {
          absentSince ??= Date.now();
          if (Date.now() - absentSince > defaults.clientTimeoutMs) throw e;
          await new Promise((r) => setTimeout(r, ABSENT_RETRY_MS));
        } else if (e instanceof RequestTimeoutError) absentSince = undefined;
        else throw e;
      }
    }
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
      queueMicrotask(() => {
        for (const x of all) settle(x, true, e);
      }); // never inside the caller's call
      return;
    }
    for (const { data, items } of groups) {
      const id = this.replyId();
      const sent = new SentBatch(subject, items);
      this.pending.set(id, sent);
      const path = this.routes.get(subject);
      // One request too large for any message goes to NATS, which says so: on a lane it would be longer than the
      // worker reads, and its connection would go with every call on it.
      if (path && data.length <= this.maxPayload && this.lane(path)?.send(id, subject, data, now)) continue;
      const reply = `${this.inbox}.${id}`;
      for (const x of items) if (x) x.sentOn = reply;
      if (now) this.sendNow(subject, data, reply, (e) => this.unsent(id, sent, e));
      else this.send(subject, data, reply, (e) => this.unsent(id, sent, e));
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
   * in each turn of the event loop, so a quick call is not held up by a slow one. `keepAnswers`: the answers sent
   * over NATS are kept a while, for answerAgain(). */
  serveBatched(subject: string, handler: BatchHandler, o: { keepAnswers?: boolean } = {}): Subscription {
    const keep = !!o.keepAnswers && defaults.keptAnswerBytes > 0;
    const publish = (s: string, b: unknown) => this.publish(s, b);
    const sub = this.serve(subject, (body: { batch: unknown[] }, msg) => {
      this.runBatch(subject, body, new BatchAnswers(msg.reply, undefined, keep, publish), handler);
      return NO_REPLY;
    });
    this.batchServers.set(subject, { sub, handler });
    void sub.closed.then(() => {
      if (this.batchServers.get(subject)?.sub === sub) this.batchServers.delete(subject);
    });
    return sub;
  }

  /** What serveBatched serves, for requests that come on a lane, while its subscription lasts. */
  private readonly batchServers = new Map<string, { sub: Subscription; handler: BatchHandler }>();

  private runBatch(subject: string, body: { batch: unknown[] }, answers: BatchAnswers, handler: BatchHandler): void {
    if (!Array.isArray(body?.batch)) throw new ProtocolError(`requests on ${subject} come as { batch: [...] }`);
    answers.left = body.batch.length;
    if (!body.batch.length) answers.lane?.drop();
    body.batch.forEach((item, i) => {
      try {
        Promise.resolve(handler(item, answers)).then(
          (v) => this.finished(answers, i, 0, v),
          (e) => this.finished(answers, i, 1, asError(e)),
        );
      } catch (e) {
        this.finished(answers, i, 1, asError(e));
      }
    });
  }

  // --- lanes: batched requests to a worker process on this machine, over a Unix socket (see lane.ts) ----------

  private laneServer: LaneServer | undefined;
  /** How this process proves itself to lane servers, and checks who connects to its own. */
  private laneAuth: LaneAuth;

  /** Lanes prove and check identities this way from now on (before listenLanes and the first call). By default a
   * lane proves this connection's user, and a lane server admits nobody's (a worker names whose it admits: its node's
   * list); with a plain token (a user's own nats-server), an HMAC of it. */
  useLaneAuth(auth: LaneAuth): void {
    this.laneAuth = auth;
  }

  /** Lanes this process opened, by socket path, and the lane each routed subject goes on (opened at its first use). */
  private readonly lanes = new Map<string, Lane>();
  private readonly routes = new Map<string, string>();
  /** Lanes that could not be opened: not tried again (their subjects keep to NATS). */
  private readonly unreachable = new Set<string>();
  /** Lanes with frames to write at the end of this turn. */
  private writers = new Set<Outgoing>();
  private readonly wakeWriter = (o: Outgoing): void => {
    this.writers.add(o);
    this.flushSoon();
  };

  /** Serves what serveBatched serves on a Unix socket at `path` too. Resolves to the path, or undefined when this
   * process cannot listen there (too long a path, say): callers then keep to NATS. */
  async listenLanes(path: string): Promise<string | undefined> {
    try {
      this.laneServer = await LaneServer.listen(
        path,
        this.laneAuth,
        (r) => this.onLaneRequest(r),
        this.wakeWriter,
        laneLimits(this.maxPayload),
      );
    } catch (e) {
      console.error(`troupe: no direct calls to this process (cannot listen on ${path}: ${(e as Error).message})`);
    }
    return this.laneServer?.path;
  }

  /** Closes the lanes into this process of callers its lane auth no longer admits. */
  recheckLanes(): void {
    this.laneServer?.recheck();
  }

  /** The socket this process's lane server listens on, if it has one (workers do; drivers do not). */
  get ownLane(): string | undefined {
    return this.laneServer?.path;
  }

  /** Sends batched requests on `subject` over the lane at `path` from now on, when that socket is on this machine
   * (its path is in the worker's node's own directory: found here only there), or over NATS again when path is
   * undefined. Requests already sent keep their way. */
  route(subject: string, path: string | undefined): void {
    if (!path || this.closed || this.unreachable.has(path)) this.routes.delete(subject);
    else this.routes.set(subject, path);
  }

  /** The lane at `path`, opened at its first use; undefined when there is no such socket here. */
  private lane(path: string): Lane | undefined {
    let lane = this.lanes.get(path);
    if (!lane) {
      if (!existsSync(path)) {
        this.unreachable.add(path);
        this.unroute(path);
        return undefined;
      }
      lane = new Lane(
        path,
        this.laneAuth,
        this.procId,
        {
          reply: (id, data) => {
            this.onReplyData(id, data);
            return !this.pending.has(id);
          },
          nobody: (id) => this.noResponders(id),
          event: (subject, data) => this.events.get(subject)?.(data, subject),
          end: (l, what) => this.laneEnded(l, what),
        },
        this.wakeWriter,
        laneLimits(this.maxPayload),
      );
      if (!this.holdsProcess) lane.unref();
      this.lanes.set(path, lane);
    }
    return lane;
  }

  private unroute(path: string): void {
    for (const [subject, p] of this.routes) if (p === path) this.routes.delete(subject);
  }

  /** The lane batched requests on `subject` go on now, if any. */
  laneOf(subject: string): string | undefined {
    return this.routes.get(subject);
  }

  private onLaneRequest(r: LaneRequest): void {
    const s = this.batchServers.get(r.subject);
    if (!s || s.sub.isClosed()) {
      r.nobody();
      return;
    }
    const answers = new BatchAnswers(undefined, r);
    try {
      this.runBatch(r.subject, decode(r.data), answers, s.handler);
    } catch (e) {
      const error =
        e instanceof TypeError ? e : new UsageError(`malformed message on ${r.subject}: ${(e as Error).message}`);
      r.reply(encodeReply([1, error]));
    }
  }

  /** A lane closed: its routes go back to NATS; what it had not sent is retold as "no responders" (or, on a lane that
   * never opened, goes over NATS: its worker may be well, and refused only this caller's lane), what it had sent and
   * not heard back as CallLostError (it may have run: the caller decides, as for a death). */
  private laneEnded(lane: Lane, what: LaneEnd): void {
    if (this.lanes.get(lane.path) === lane) this.lanes.delete(lane.path);
    // Closed with nothing in flight (the worker's idle timeout, say): the next call opens a new lane, or finds the
    // worker gone and goes by NATS.
    if (what.opened && !what.lost.length) return;
    if (!what.opened) this.unreachable.add(lane.path);
    this.unroute(lane.path);
    for (const id of what.unsent) {
      const p = this.pending.get(id);
      if (what.opened || !(p instanceof SentBatch)) {
        this.noResponders(id);
        continue;
      }
      this.pending.delete(id);
      this.sendBatch(p.subject, p.unanswered()); // unrouted above: over NATS
    }
    for (const id of what.lost) {
      const p = this.pending.get(id);
      if (!p) continue;
      this.pending.delete(id);
      p.reject(new CallLostError(`the connection to the process serving ${p.subject} closed before it answered`));
    }
  }

  /** One request of a batch has finished: its answer goes with the others that finish in this turn. */
  private finished(answers: BatchAnswers, i: number, failed: 0 | 1, value: unknown): void {
    answers.left--;
    if (answers.done.push([i, failed, value]) === 1) {
      this.beforeFlush.push(answers);
      this.flushSoon();
    }
  }

  /** Publishes to every subscriber of `subject` and collects replies for windowMs (scatter-gather). */
  gather<T = unknown>(subject: string, body: unknown, windowMs: number): Promise<T[]> {
    const data = encode(body);
    const gathered = new Promise<T[]>((resolve, reject) => {
      const id = this.replyId();
      this.pending.set(id, {
        resolve: resolve as (v: unknown) => void,
        reject,
        subject,
        deadline: Date.now() + windowMs,
        gathered: [],
      });
      this.armSweeper();
      this.send(subject, data, `${this.inbox}.${id}`, reject);
    });
    return holdUntil(gathered);
  }

  /** Fire and forget. */
  publish(subject: string, body: unknown): void {
    this.send(subject, encode(body));
  }

  /** Publishes an event meant for process `proc` alone: on the lane it came to us by, if it did, so that it arrives
   * before the answers sent after it (as it would over NATS, on one connection). */
  publishTo(proc: string, subject: string, body: unknown): void {
    if (!this.laneServer?.event(proc, subject, encode(body))) this.publish(subject, body);
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
    if (this.publish1(subject, data, reply, onError))
      (this.nc as unknown as { protocol?: { flushPending?(): void } }).protocol?.flushPending?.();
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

  /** At the end of this turn of the event loop: batched answers, then batched requests, then every message, in one
   * write. */
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
      for (const a of parts) {
        const out = a.done;
        a.done = [];
        this.replyParts(a, out);
      }
      this.sendBatches();
      const batch = this.outbox;
      this.outbox = [];
      for (const [subject, data, reply, onError] of batch) this.publish1(subject, data, reply, onError);
      const writers = this.writers;
      this.writers = new Set();
      for (const w of writers) w.flush();
    } finally {
      this.flushing = false;
      if (this.outbox.length || this.beforeFlush.length || this.batches.size || this.writers.size) this.flushSoon();
    }
  }

  /** Answers requests on `subject`. A malformed message or a throwing handler gets an error reply; the process goes
   * on. */
  serve(subject: string, handler: Handler, opts: { queue?: string } = {}): Subscription {
    return this.nc.subscribe(subject, {
      queue: opts.queue,
      callback: (err, msg) => total(err, msg, subject, (m) => this.onRequest(m, handler)),
    });
  }

  private onRequest(msg: Msg, handler: Handler): void {
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
    if (out instanceof Promise)
      out.then(
        (v) => v !== NO_REPLY && this.respond(msg, [0, v]),
        (e) => this.respond(msg, [1, asError(e)]),
      );
    else if (out !== NO_REPLY) this.respond(msg, [0, out]);
  }

  /** Listens to events (no reply), from NATS and, for a subject without wildcards, from lanes (publishTo). Malformed
   * events are dropped with a warning. */
  /** `fromLanes`: the event may also come on a lane from a process this one called (a worker sends its output to its
   * caller that way). Only events that say so: a lane's other end is user code. `confirm`: one sent as a request is
   * answered (null) once handled, for a sender that must know it landed. */
  on(
    subject: string,
    handler: (body: any, subject: string) => void,
    o: { fromLanes?: boolean; confirm?: boolean } = {},
  ): Subscription {
    const deliver = (data: Uint8Array, at: string): void => {
      let body: unknown;
      try {
        body = decode(data);
      } catch {
        warnOnce(`dropped a malformed event on ${at}`);
        return;
      }
      try {
        handler(body, at);
      } catch (e) {
        console.error(`troupe: handler for ${at} failed:`, e);
      }
    };
    if (o.fromLanes && !/[*>]/.test(subject)) this.events.set(subject, deliver);
    return this.nc.subscribe(subject, {
      callback: (err, msg) =>
        total(err, msg, subject, (m) => {
          deliver(m.data, m.subject);
          if (o.confirm) this.respond(m, [0, null]);
        }),
    });
  }

  /** Event handlers by (exact) subject, for the events that may come on lanes (`on(…, { fromLanes })`). */
  private readonly events = new Map<string, (data: Uint8Array, subject: string) => void>();

  /** Sends answers to a batch (as several parts, if they are over the server's max_payload). */
  private replyParts({ reply, lane, left, keep }: BatchAnswers, part: BatchPart): void {
    if ((!reply && !lane) || this.closed) return;
    const groups = this.fitting(part, (answers) => encodeReply([0, answers]));
    for (const { data, items } of groups) {
      // One answer too large for any message: its caller hears why instead of waiting for ever.
      const tooLarge =
        data.length > this.maxPayload &&
        new ProtocolError(
          `the answer is ${data.length} bytes; the server takes at most ${this.maxPayload} in one message`,
        );
      const out = tooLarge ? encodeReply([0, [[items[0][0], 1, tooLarge]]]) : data;
      if (lane) lane.reply(out, left === 0 && items === groups[groups.length - 1].items);
      else {
        this.send(reply!, out);
        if (keep) {
          this.kept ??= new KeptAnswers({ ttlMs: KEPT_ANSWER_MS, maxBytes: defaults.keptAnswerBytes });
          this.kept.keep(reply!, out);
        }
      }
    }
  }

  /** Answers kept for answerAgain(), made at the first answer to keep. */
  private kept: KeptAnswers | undefined;

  /** Sends again the answers this process still keeps of those it sent to the batch with reply subject `reply`, to
   * the caller whose probe came with reply subject `asker` (KeptAnswers.find: only its own). How many messages went
   * again. */
  answerAgain(asker: string | undefined, reply: string): number {
    if (!asker || !this.kept || this.closed) return 0;
    const kept = this.kept.find(reply, asker);
    for (const data of kept) this.send(reply, data);
    return kept.length;
  }

  /** Answer a request out of band (when the reply comes later than the handler returns). */
  replyTo(reply: string | undefined, value: unknown, isError = false): void {
    if (!reply || this.closed) return;
    this.send(reply, encodeReply(isError ? [1, asError(value)] : [0, value]));
  }

  /** Round trip to the server: every subscription made before it is in effect once this resolves. */
  async flush(): Promise<void> {
    this.flushNow();
    await holdUntil(this.nc.flush());
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.home?.stop();
    this.flushNow(); // what we said last (replies, frees, goodbyes) still goes out
    this.failPending(new ConnectionError('connection closed'));
    this.laneServer?.close();
    for (const lane of this.lanes.values()) lane.close();
    this.routes.clear();
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
    if (msg.data.length === 0 && msg.headers?.code === 503) this.noResponders(id);
    else this.onReplyData(id, msg.data);
  }

  private noResponders(id: string): void {
    const p = this.pending.get(id);
    if (!p || p.gathered) return;
    this.pending.delete(id);
    p.reject(new NoRespondersError(`no one is listening on ${p.subject}`));
  }

  private onReplyData(id: string, data: Uint8Array): void {
    const p = this.pending.get(id);
    if (!p) return; // late reply after a timeout
    let reply: Reply;
    try {
      reply = decode<Reply>(data);
      // From the bus, so untrusted: anything but [0, value] or [1, error] (msgpack nil, say) fails this request
      // alone, at once, with a typed error.
      if (!isReply(reply)) throw new Error('not [0, value] or [1, error]');
    } catch (e) {
      if (p.gathered) return;
      this.pending.delete(id);
      p.reject(new ProtocolError(`malformed reply from ${p.subject}: ${(e as Error).message}`));
      return;
    }
    if (p.gathered) {
      if (reply[0] === 0) p.gathered.push(reply[1]);
      return;
    }
    if (p.part && reply[0] === 0) {
      let done: boolean;
      try {
        done = p.part(reply[1]);
      } catch (e) {
        done = true;
        this.pending.delete(id);
        p.reject(asError(e));
        return;
      }
      if (done) {
        this.pending.delete(id);
        p.resolve(undefined);
      }
      return;
    }
    this.pending.delete(id);
    if (reply[0] === 0) p.resolve(reply[1]);
    else p.reject(asError(reply[1]));
  }

  /** One timer for all deadlines, running only while some request has one. */
  private armSweeper(): void {
    if (this.sweeper) return;
    this.sweeper = setInterval(() => {
      const now = Date.now();
      let left = false;
      for (const [id, p] of this.pending) {
        if (!p.deadline) continue;
        if (p.deadline > now) {
          left = true;
          continue;
        }
        this.pending.delete(id);
        if (p.gathered) p.resolve(p.gathered);
        else p.reject(new RequestTimeoutError(`no reply from ${p.subject} in time`));
      }
      if (!left) {
        clearInterval(this.sweeper);
        this.sweeper = undefined;
      }
    }, 50);
    this.sweeper.unref();
  }
}

/** Runs a nats.js subscription callback so that it can never throw into nats.js: an exception there stops the
 * connection's reader (for 10-15 s, until the ping timer notices), and every request waits meanwhile. */
function total(err: Error | null, msg: Msg | undefined, what: string, run: (msg: Msg) => void): void {
  if (err || !msg) {
    if (err) warnEvery(what, `subscription to ${what} failed: ${err.message}`);
    return;
  }
  // A JetStream consumer may be told to deliver to any subject (its deliver_subject is not checked against the
  // creator's permissions), so a role that may read a stream could replay what it put there onto troupe's subjects.
  // troupe never has a stream deliver to its own subjects: such a delivery is dropped.
  if (msg.reply?.startsWith('$JS.ACK.') || msg.headers?.has('Nats-Stream')) {
    warnEvery(`${what} (JetStream)`, `dropped a JetStream delivery on ${msg.subject}: troupe takes none there`);
    return;
  }
  try {
    run(msg);
  } catch (e) {
    warnEvery(what, `a message on ${what} broke its handler: ${(e as Error)?.message ?? e}`);
  }
}

/** One line per key every 10 s at most: a flood of bad messages must not become a flood of log lines. */
const lastWarned = new Map<string, number>();
function warnEvery(key: string, text: string): void {
  const now = Date.now();
  if (now - (lastWarned.get(key) ?? 0) < 10_000) return;
  if (lastWarned.size > 1000) lastWarned.clear();
  lastWarned.set(key, now);
  console.warn(`troupe: ${text.slice(0, 500)}`);
}

function isReply(x: unknown): x is Reply {
  return Array.isArray(x) && x.length === 2 && (x[0] === 0 || x[0] === 1);
}

/** [index, 0 | 1, value] for requests of the batch, each index in range. */
function isBatchPart(x: unknown, n: number): x is BatchPart {
  if (!Array.isArray(x)) return false;
  for (const a of x)
    if (
      !Array.isArray(a) ||
      a.length !== 3 ||
      !Number.isInteger(a[0]) ||
      a[0] < 0 ||
      a[0] >= n ||
      (a[1] !== 0 && a[1] !== 1)
    )
      return false;
  return true;
}

function encodeReply(reply: Reply): Uint8Array {
  try {
    return encode(reply);
  } catch (e) {
    return encode([1, asError(e)]); // the handler's value could not be sent: say why instead of going silent
  }
}

const warned = new Set<string>();
function warnOnce(text: string): void {
  if (warned.has(text)) return;
  warned.add(text);
  console.warn(`troupe: ${text}`);
}

function isAuthorizationError(e: unknown): boolean {
  return e instanceof AuthorizationError || (e as Error)?.name === 'AuthorizationError';
}

/** nats.js's connect(), tried up to three times. A credential just made (`troupe token create`) reaches the bus's
 * other servers a moment after the one it was pushed to, and one that was down meanwhile catches up within seconds:
 * a credential refused is tried again. nats.js may also miss a refusal and wait out its whole timeout, so a first
 * try gets 5 s rather than 20 before it is tried again (which also moves on sooner from a server that does not
 * answer). */
async function connectRetrying(options: ConnectionOptions, signed: boolean): Promise<NatsConnection> {
  for (let attempt = 0; ; attempt++) {
    try {
      return await connect({ ...options, timeout: attempt === 0 ? 5000 : 15_000 });
    } catch (e) {
      const again =
        attempt < 2 &&
        ((signed && isAuthorizationError(e)) || (attempt === 0 && (e as Error)?.name === 'TimeoutError'));
      if (!again) throw e;
      await sleep(200 * (attempt + 1));
    }
  }
}
