// Paths, defaults and the current-cluster file: what lets `troupe status`, `troupe stop` and `init()` find a cluster
// without flags.
import { mkdirSync, readFileSync, writeFileSync, renameSync, rmSync, chmodSync } from 'node:fs';
import { join } from 'node:path';
import { homedir, networkInterfaces, tmpdir } from 'node:os';
import { UsageError } from './errors.ts';
import { privateDirProblem } from './private-dir.mjs';

const checkedDirs = new Set<string>();
/** `dir`, once privateDirProblem() finds nothing wrong with it (checked once per process); else a UsageError. */
function privateDir(dir: string, refusal: (problem: string) => string): string {
  if (!checkedDirs.has(dir)) {
    const problem = privateDirProblem(dir);
    if (problem) throw new UsageError(refusal(problem));
    checkedDirs.add(dir);
  }
  return dir;
}

/** Where troupe keeps the current-cluster file (credentials), the daemons' run files, session dirs and shipped code:
 * `TROUPE_HOME`, or `troupe-<uid>` in the temp dir. Either way it must be this user's alone (created 0700 if
 * missing): in /tmp another user could create it first and hand us a cluster file or code. */
export function troupeHome(): string {
  const home = process.env.TROUPE_HOME || join(tmpdir(), `troupe-${process.geteuid?.() ?? 'user'}`);
  return privateDir(
    home,
    (problem) =>
      `troupe's home ${home} is not private: ${problem}. Remove it, or set TROUPE_HOME to a directory of yours ` +
      'that only you can write to',
  );
}

/** Where troupe keeps what lasts across reboots and is costly to make again (the native TensorFlow build):
 * `TROUPE_CACHE_DIR`, else `$XDG_CACHE_HOME/troupe`, else `~/.cache/troupe`. Code is loaded from it, so it must be
 * this user's alone, like troupeHome(). */
export function troupeCache(): string {
  const dir = process.env.TROUPE_CACHE_DIR || join(process.env.XDG_CACHE_HOME || join(homedir(), '.cache'), 'troupe');
  return privateDir(
    dir,
    (problem) => `troupe's cache ${dir} is not private: ${problem}. Remove it, or set TROUPE_CACHE_DIR`,
  );
}

/** Where a machine keeps what must outlive a reboot and is no cache: the cluster state of a head started from the
 * CLI, and the data of this machine's server of a bus of several (either unless `--data-dir`). `$TROUPE_HOME/state`
 * when TROUPE_HOME is set (one place for all of one installation's files), else `$XDG_STATE_HOME/troupe`, else
 * `~/.local/state/troupe`: not the temp dir, which a reboot may clear. This user's alone, like troupeHome(). */
export function troupeState(): string {
  const dir = process.env.TROUPE_HOME
    ? join(troupeHome(), 'state')
    : join(process.env.XDG_STATE_HOME || join(homedir(), '.local', 'state'), 'troupe');
  return privateDir(
    dir,
    (problem) =>
      `troupe's state dir ${dir} is not private: ${problem}. Remove it, set TROUPE_HOME, or give --data-dir DIR`,
  );
}

/** The name of a node's object-store dir (and of its spill dir): the node daemon makes it, and whoever started the
 * daemon hands it to drivers on the same machine, so both must name it the same. */
export function nodeStoreName(sessionDir: string, nodeId: string): string {
  return `troupe-${sessionDir.split('/').filter(Boolean).pop() ?? 'session'}-${nodeId}`;
}

export const defaults = {
  /** Node daemons heartbeat this often. */
  heartbeatMs: envInt('TROUPE_HEARTBEAT_MS', 500),
  /** A node silent this long is SUSPECT: nothing new is placed on it, nothing is restarted; a heartbeat clears it. */
  nodeSuspectMs: envInt('TROUPE_NODE_SUSPECT_MS', 1500),
  /** A node silent this long is declared dead and fenced: its actors restart elsewhere, its objects are lost. Ray waits
   * 30 s. On a real network a link that drops for 3 s stays silent longer than that (TCP backs off its retransmits:
   * 0.2, 0.6, 1.4, 3, 6.2 s), a busy machine may pause for seconds, and fencing cannot be undone; 15 s is twice the
   * worst of those, and still fails over in seconds where Ray takes half a minute. Tests that kill nodes shorten it. */
  nodeTimeoutMs: envInt('TROUPE_NODE_TIMEOUT_MS', 15_000),
  /** A head that has not renewed its lease for this long is taken over by a standby head (`troupe start --head
   * --address`); the leader renews every third of it, a standby reads it every tenth. A takeover takes this, up to
   * two tenths more, and the new head's start: about 3.5 s, within the 5 s the cluster aims for. Shorter would take
   * over from a head merely stalled (a long GC, a loaded machine) more often. */
  headLeaseMs: envInt('TROUPE_HEAD_LEASE_MS', 3000),
  /** A joiner (a driver's `init()`, `troupe start --address`, a node daemon) asks the head for its versions until
   * this long before it fails with HeadUnavailableError: a standby leads about 4 s after its head is lost, and when a
   * bus server's machine comes back, JetStream may elect its leaders again, pausing the head for several seconds more
   * (docs/limitations.md). */
  headWaitMs: envInt('TROUPE_HEAD_WAIT_MS', 30_000),
  /** Values up to this size travel inside messages; larger ones go through the object store. */
  inlineThreshold: envInt('TROUPE_INLINE_THRESHOLD', 100 * 1024),
  /** A driver or worker silent this long is taken for dead: its leases go back, and a driver's actors end. A link lost
   * for 3 s silences a process for at most about 7 s (TCP's retransmit backoff), well under this. */
  clientTimeoutMs: envInt('TROUPE_CLIENT_TIMEOUT_MS', 10_000),
  /** Control-plane requests (head, node daemons) give up after this long. */
  requestTimeoutMs: envInt('TROUPE_REQUEST_TIMEOUT_MS', 10_000),
  /** A caller that has heard nothing from a worker or actor for this long while tasks or calls are in flight there
   * asks it which it still holds; one it does not hold lost its request or its answer (core NATS delivers at most
   * once: a reconnect or a slow-consumer cut drops messages), and is retried under its retry options or fails with
   * CallLostError instead of waiting for ever. Only an answer settles anything, so asking early costs one message per
   * silent worker and no wrong verdict: 3 s is how long a nats-server lost from a NATS cluster holds up calls. */
  callProbeMs: envInt('TROUPE_CALL_PROBE_MS', 3_000),
  /** Bytes of the answers a worker sent over NATS that it keeps (for 60 s at most), so that a caller whose answer was
   * lost gets it again when it probes, and the call runs once. A small answer costs about 200 bytes: the default
   * keeps the last few hundred thousand. 0: none (a lost answer fails its call with CallLostError, or runs it again
   * under its retries). */
  keptAnswerBytes: envInt('TROUPE_KEPT_ANSWER_BYTES', 64 * 1024 * 1024),
  /** A task lease unused this long goes back to its node. */
  leaseIdleMs: envInt('TROUPE_LEASE_IDLE_MS', 1000),
  /** Most tasks queued on one leased worker. Only functions seen to run quickly are queued, up to 10 ms of expected
   * work; any other task goes to an idle worker, so a burst of long tasks spreads over all leases. */
  tasksInFlightPerLease: envInt('TROUPE_TASKS_IN_FLIGHT_PER_LEASE', 1000),
  /** Worker processes one node daemon may run at once (0: four per CPU of the node, at least 32). A lease that would
   * need one more is refused with WorkerLimitError. */
  maxWorkersPerNode: envInt('TROUPE_MAX_WORKERS_PER_NODE', 0),
  /** How long the head keeps a DEAD actor's record (its cause, for `troupe list actors` and its callers) before it
   * forgets it: the state of a long-lived cluster stays bounded. A call on a forgotten actor fails with ActorDiedError
   * (no such actor). */
  deadActorRetentionMs: envInt('TROUPE_DEAD_ACTOR_RETENTION_MS', 3_600_000),
  /** How long the head keeps a DEAD node's record (`troupe list nodes`, its cause) before it forgets it. */
  deadNodeRetentionMs: envInt('TROUPE_DEAD_NODE_RETENTION_MS', 3_600_000),
  /** How long the head keeps an ended job (its driver gone, none of its actors alive): its registration and its
   * record in `troupe list jobs`. A driver found silent with its record still RUNNING is marked FAILED first. */
  jobRetentionMs: envInt('TROUPE_JOB_RETENTION_MS', 86_400_000),
  /** Bytes the cluster's checkpoint store (`troupe-checkpoints`, in JetStream) may hold; 0: no bound. Read by the
   * head, which makes the store and applies a new value when it starts. A save past it fails with
   * ClusterStoreFullError, and nothing saved is dropped: without a bound, one job's checkpoints could fill JetStream's
   * disk and stop every write of the cluster's state (the head's lease among them). */
  checkpointStoreBytes: envInt('TROUPE_CHECKPOINT_STORE_BYTES', 8 * 1024 ** 3),
  /** The most bytes one job's checkpoints (its actors' and its own) may hold in that store, so that one job cannot
   * fill it for every other; 0: no share per job. Unset: half the store's bound. Read by node daemons, which keep
   * their workers' checkpoints. */
  checkpointJobBytes: process.env.TROUPE_CHECKPOINT_JOB_BYTES ? envInt('TROUPE_CHECKPOINT_JOB_BYTES', 0) : undefined,
  /** The same for shipped code (`troupe-runtime-envs`: projects and packages of `runtimeEnv`). */
  runtimeEnvStoreBytes: envInt('TROUPE_RUNTIME_ENV_STORE_BYTES', 4 * 1024 ** 3),
  /** How often the head deletes the shipped code that no job it knows uses, and how old an object must be first
   * (`troupe job submit` uploads before its job is registered). */
  envSweepMs: envInt('TROUPE_RUNTIME_ENV_SWEEP_MS', 10 * 60_000),
  envSweepGraceMs: envInt('TROUPE_RUNTIME_ENV_GRACE_MS', 60 * 60_000),
  /** Calls one caller may queue for an actor that is starting or restarting (the actor option maxPendingCalls). */
  maxPendingCalls: 10_000,
  /** Actor calls to a process on this machine go on its lane (a Unix socket) rather than through nats-server.
   * TROUPE_LANES=0 sends them through nats-server too, as between machines (to measure or test that path). */
  lanes: process.env.TROUPE_LANES !== '0',
};

function envInt(name: string, fallback: number): number {
  const v = process.env[name];
  if (v === undefined || v === '') return fallback;
  const n = Number(v);
  if (!Number.isFinite(n) || n < 0) throw new UsageError(`${name}=${JSON.stringify(v)} is not a non-negative number`);
  return n;
}

/** What `troupe start` writes so that others on this machine can join. Mode 0600: it holds the token. */
export interface ClusterFile {
  address: string;
  token: string;
  sessionDir: string;
  /** The node daemon on this machine, if one runs: drivers here put large objects into its store. */
  localNode?: { nodeId: string; objectDir: string; objectStoreMemory?: number };
  startedAt: string;
}

export function clusterFilePath(): string {
  return join(troupeHome(), 'current-cluster.json');
}

export function readClusterFile(): ClusterFile | undefined {
  let text: string;
  try {
    text = readFileSync(clusterFilePath(), 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new UsageError(`cannot read ${clusterFilePath()}: ${(e as Error).message}`);
  }
  try {
    return JSON.parse(text) as ClusterFile;
  } catch {
    throw new UsageError(`${clusterFilePath()} is not valid JSON; remove it or run 'troupe stop'`);
  }
}

export function writeClusterFile(info: ClusterFile): void {
  writePrivateFile(clusterFilePath(), `${JSON.stringify(info, null, 2)}\n`);
}

export function removeClusterFile(): void {
  rmSync(clusterFilePath(), { force: true });
}

/** Write atomically with mode 0600 from the first byte, so the token is never readable by others. */
export function writePrivateFile(path: string, text: string): void {
  mkdirSync(join(path, '..'), { recursive: true, mode: 0o700 });
  const tmp = `${path}.${process.pid}.tmp`;
  rmSync(tmp, { force: true }); // a leftover with wider permissions must not receive the token
  writeFileSync(tmp, text, { mode: 0o600, flag: 'wx' });
  chmodSync(tmp, 0o600);
  renameSync(tmp, path);
}

/** Accepts `host:port`, `nats://host:port`, `tls://host:port`, or several comma-separated (servers of one NATS
 * cluster: a client tries them all and fails over); returns them as nats URLs, comma-separated. */
export function parseAddress(address: string): string {
  return address.split(',').map(parseServer).join(',');
}

/** The nats URLs of `address`: one per server. */
export const serverUrls = (address: string): string[] => parseAddress(address).split(',');

/** The addresses of this machine's interfaces. */
export function ownAddresses(): Set<string> {
  return new Set(Object.values(networkInterfaces()).flatMap((as) => (as ?? []).map((a) => a.address)));
}

/** The servers of `address` to try, this machine's own (`local`) first when some are and some are not (`inOrder`: keep
 * the order): a process then talks through the server on its machine, so its traffic with the others there stays there,
 * and a server lost elsewhere does not touch it. Otherwise nats.js's random order spreads the clients. */
export function nearestServersFirst(address: string): { servers: string[]; inOrder: boolean; local: string[] } {
  const urls = serverUrls(address);
  const mine = ownAddresses();
  const hosts = hostsOf(address);
  const local = urls.filter((_, i) => mine.has(hosts[i]!) || isLoopback(hosts[i]!));
  if (local.length === 0 || local.length === urls.length) return { servers: urls, inOrder: false, local };
  return { servers: [...local, ...urls.filter((u) => !local.includes(u))], inOrder: true, local };
}

/** How often a connection to `servers` pings: nats.js takes it for lost after two to three intervals without a
 * pong. With one server, slowly (10-15 s): a link lost for a few seconds keeps its connection, and what the server
 * queued meanwhile flows when it is back. With several, in 2-3 s: a server cut off (no RST, so its connections look
 * alive for minutes) must not hold requests that another could answer; a standby head takes the lease in that time. */
export function pingIntervalFor(servers: readonly string[]): number {
  return servers.length > 1 ? 1000 : 5000;
}

function parseServer(address: string): string {
  const label = '[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?';
  const m = new RegExp(`^(?:(nats|tls)://)?(\\[[0-9a-fA-F:]+\\]|${label}(?:\\.${label})*):(\\d{1,5})$`).exec(
    address.trim(),
  );
  const port = m ? Number(m[3]) : 0;
  if (!m || port < 1 || port > 65535) {
    throw new UsageError(
      `invalid cluster address ${JSON.stringify(address)}: expected host:port, e.g. 127.0.0.1:4222 (the address ` +
        `'troupe start --head' printed), or several, comma-separated`,
    );
  }
  return `${m[1] ?? 'nats'}://${m[2]}:${port}`;
}

/** True for an address only this machine reaches: 127.0.0.0/8, ::1, localhost. */
export function isLoopback(host: string): boolean {
  const h = host.replace(/^\[(.*)\]$/, '$1').toLowerCase();
  return h === 'localhost' || h === '::1' || /^127\.\d+\.\d+\.\d+$/.test(h) || h === '::ffff:127.0.0.1';
}

/** `$TROUPE_HOME/tls/<host>_<port>` plus `ext`: where this machine keeps what it trusts for the cluster at `address`
 * (`.pem`: its CA, learnt when it joined or made by the head here; `.plain`: started or joined with --no-tls). */
function trustPath(address: string, ext: '.pem' | '.plain'): string {
  const url = parseAddress(address).replace(/^\w+:\/\//, '');
  return join(troupeHome(), 'tls', `${url.replace(/[^0-9A-Za-z.-]+/g, '_')}${ext}`);
}

/** Where this machine keeps the CA it trusts for the cluster at `address`. */
export const savedCaPath = (address: string) => trustPath(address, '.pem');

function writeTrust(path: string, text: string): void {
  mkdirSync(join(path, '..'), { recursive: true, mode: 0o700 });
  const tmp = `${path}.${process.pid}.tmp`;
  writeFileSync(tmp, text, { mode: 0o644 });
  renameSync(tmp, path);
}

/** Trusts `caPem` for the cluster at each of `addresses` from now on (0644: a certificate is public). */
export function saveCa(addresses: string[], caPem: string): void {
  for (const address of addresses) {
    rmSync(trustPath(address, '.plain'), { force: true });
    writeTrust(savedCaPath(address), caPem);
  }
}

/** The cluster at each of `addresses` speaks plain text, as this machine's user said (--no-tls): connect to it without
 * TLS from now on. Any CA saved for one of them before (a TLS cluster that had the port) is forgotten. */
export function trustPlain(addresses: string[]): void {
  for (const address of addresses) {
    rmSync(savedCaPath(address), { force: true });
    if (!hostsOf(address).every(isLoopback))
      writeTrust(trustPath(address, '.plain'), '# troupe: plain text, by --no-tls\n');
  }
}

/** The host of `host:port` or `nats://host:port` (of a list, the first), without IPv6 brackets. */
export function hostOf(address: string): string {
  return hostsOf(address)[0]!;
}

/** The host of each server of `address`. */
export function hostsOf(address: string): string[] {
  return serverUrls(address).map((url) =>
    url
      .replace(/^\w+:\/\//, '')
      .replace(/:\d+$/, '')
      .replace(/^\[(.*)\]$/, '$1'),
  );
}

/** Whether a connection to `address` without a CA is one the user asked for: loopback (nothing in between to trust),
 * TROUPE_NO_TLS=1, or an address this machine started or joined with --no-tls. Any other connection beyond loopback
 * needs the cluster's CA, so that whoever answers at the address cannot just ask for no TLS. */
export function plainAllowed(address: string): boolean {
  if (hostsOf(address).every(isLoopback) || process.env.TROUPE_NO_TLS === '1') return true;
  try {
    readFileSync(trustPath(address, '.plain'));
    return true;
  } catch {
    return false;
  }
}

/** The CA (PEM) to verify the cluster at `address` with: TROUPE_TLS_CA (a file) if set, else the one saved for the
 * address, else undefined (plain, or a TLS cluster this machine has not joined: the connect fails and says so). */
export function clusterCa(address: string): string | undefined {
  const file = process.env.TROUPE_TLS_CA || undefined;
  if (file) {
    try {
      return readFileSync(file, 'utf8');
    } catch (e) {
      throw new UsageError(`TROUPE_TLS_CA=${file}: ${(e as Error).message}`);
    }
  }
  try {
    return readFileSync(savedCaPath(address), 'utf8');
  } catch {
    return undefined;
  }
}
