// Starts the cluster's nats-server (JetStream on, operator mode with a credential per role, TLS when asked) as a child
// or detached process.
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, openSync, closeSync, readFileSync, renameSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { findNatsServer, missingNatsMessage } from './nats-binary.mjs';
import { writePrivateFile } from '../base/config.ts';
import { freePort, isAlive, sleep, terminate } from '../base/processes.ts';
import { UsageError } from '../base/errors.ts';
import { watchChild, startError, logTail, type DaemonChild } from './daemon-process.ts';
import { defaultAddress } from './node-address.ts';
import { natsTlsBlock, type ClusterTls } from './tls.ts';
import { AUTH_CONF } from './identities.ts';
import type { BusCluster } from './bus-servers.ts';
import { randomBytes } from 'node:crypto';

export interface NatsServerOptions {
  /** Session dir: config, JetStream data and log go under it. */
  dir: string;
  /** Bind address; 0.0.0.0 lets other machines join (the identities still guard it). */
  host: string;
  /** Serve TLS only, with these files (local-cluster.ts decides: whenever the bind is beyond loopback). */
  tls?: ClusterTls;
  /** One core server of a NATS cluster: routes to the others, over TLS with the same files, each end showing a
   * certificate of the cluster's CA. Needs `tls`. */
  cluster?: BusCluster;
  /** Fixed port, or a free one. */
  port?: number;
  /** Outlive this process (troupe start) or die with it (embedded clusters). */
  detached: boolean;
  /** Not detached: whether the server keeps this process running (default true; see StartOptions). */
  holdProcess?: boolean;
  /** The cluster's account (`A…`), under whose name JetStream keeps its data: a lone server's data from an earlier
   * troupe (config mode, kept as `$G`) is moved there. */
  account?: string;
}

/** The port routes listen on, as NATS's own examples use. */
export const ROUTE_PORT = 6222;

/** A NATS cluster's name from its CA's fingerprint: every machine that trusts the CA derives the same one, and a head
 * started again on its data dir keeps it. */
export function busClusterName(caSha256: string): string {
  return `troupe-${caSha256.replace(/^sha256:/, '').slice(0, 16)}`;
}

export interface NatsServerHandle {
  pid: number;
  /** Watched, so that a start fails at once if it dies. */
  process: DaemonChild;
  port: number;
  /** Address for clients on this machine. */
  localAddress: string;
  /** Address other machines should use. */
  publicAddress: string;
  stop(): Promise<void>;
}

export async function startNatsServer(opts: NatsServerOptions): Promise<NatsServerHandle> {
  const bin = findNatsServer();
  if (!bin) throw new UsageError(missingNatsMessage());
  mkdirSync(join(opts.dir, 'logs'), { recursive: true });
  // A dir used again (a data dir) keeps its port, so that clients find the server where it was, and its server name,
  // which names JetStream's data in it.
  const bus = join(opts.dir, 'bus.json');
  let saved: { port: number; serverName: string; cluster?: string } | undefined;
  try {
    if (existsSync(bus)) saved = JSON.parse(readFileSync(bus, 'utf8'));
  } catch (e) {
    throw new UsageError(`${bus} is not valid JSON (${(e as Error).message}): remove it to pick a new port`);
  }
  // JetStream's data is a lone server's or a cluster member's: nats-server 2.9 does not turn one into the other.
  if (saved && saved.cluster !== opts.cluster?.name && existsSync(join(opts.dir, 'jetstream')))
    throw new UsageError(
      saved.cluster
        ? `${opts.dir} holds a server of the NATS cluster ${saved.cluster}: start it with the same --bus-peers (and ` +
            'join line), or with --fresh for a new cluster'
        : `${opts.dir} holds a lone nats-server's data (a cluster started without --bus-peers): start a bus of ` +
            'several servers with --fresh, or another --data-dir',
    );
  // The machines that joined it know it at that port.
  if (opts.port !== undefined && saved && opts.port !== saved.port)
    throw new UsageError(
      `${opts.dir} holds a cluster whose bus listens on port ${saved.port}: start it on that port, or start a new ` +
        'cluster (--fresh, or another --data-dir)',
    );
  adoptConfigModeData(opts);
  const fixedPort = opts.port ?? saved?.port;
  const serverName = saved?.serverName ?? `troupe-${randomBytes(6).toString('hex')}`;
  // A free port can be taken between our probe and the server's bind: try a few.
  for (let attempt = 0; ; attempt++) {
    const port = fixedPort ?? (await freePort(opts.host === '0.0.0.0' ? '127.0.0.1' : opts.host));
    const conf = join(opts.dir, 'nats-server.conf');
    // The operator and accounts are in auth.conf (identities.ts writes it, and rewrites it on `troupe token create`).
    writePrivateFile(
      conf,
      [
        `listen: "${opts.host}:${port}"`,
        `jetstream { store_dir: ${JSON.stringify(join(opts.dir, 'jetstream'))} }`,
        `server_name: ${JSON.stringify(serverName)}`,
        `include ${JSON.stringify(AUTH_CONF)}`,
        ...(opts.tls ? [natsTlsBlock(opts.tls)] : []),
        ...(opts.cluster ? [clusterBlock(opts.cluster, opts.host, opts.tls)] : []),
        '',
      ].join('\n'),
    );
    const logPath = join(opts.dir, 'logs', 'nats-server.log');
    // A data dir's log holds an earlier server's "Server is ready": only what this one writes counts.
    const from = existsSync(logPath) ? statSync(logPath).size : 0;
    const log = openSync(logPath, 'a');
    const child = spawn(bin, ['-c', conf], { detached: opts.detached, stdio: ['ignore', log, log] });
    closeSync(log);
    if (opts.detached || opts.holdProcess === false) child.unref();
    const nats = await watchChild(child, { daemon: 'nats-server', what: 'nats-server', logPath });
    let exited: string | undefined;
    void nats.exited.then((how) => {
      exited = how;
    });
    const localHost = opts.host === '0.0.0.0' ? '127.0.0.1' : opts.host;
    try {
      await waitUntilReady(logPath, 10_000, () => exited === undefined && isAlive(nats.pid), from);
    } catch {
      // isAlive() takes an exited child for gone a moment before its exit event says how it ended.
      if (exited === undefined && !isAlive(nats.pid)) await Promise.race([nats.exited, sleep(1000)]);
      const how = exited ? `${exited} during start` : 'was not ready within 10 s';
      await terminate(nats.pid, 1000).catch(() => undefined);
      if (fixedPort === undefined && attempt < 3 && /address already in use/i.test(logTail(logPath, 6))) continue;
      throw startError(nats, how);
    }
    writePrivateFile(bus, `${JSON.stringify({ port, serverName, cluster: opts.cluster?.name })}\n`);
    const pid = nats.pid;
    return {
      pid,
      process: nats,
      port,
      localAddress: `${localHost}:${port}`,
      publicAddress: `${opts.host === '0.0.0.0' ? defaultAddress() : opts.host}:${port}`,
      stop: () => terminate(pid),
    };
  }
}

/** JetStream's data of a server in config mode (troupe before operator mode) is its global account's, `$G`; in
 * operator mode it is the cluster account's. A lone server's is moved; a cluster member's cannot be (the meta
 * group's state names the account), so such a dir is refused. */
function adoptConfigModeData(opts: NatsServerOptions): void {
  const data = join(opts.dir, 'jetstream', 'jetstream');
  const global = join(data, '$G');
  if (!existsSync(global)) return;
  if (opts.cluster || !opts.account)
    throw new UsageError(
      `${opts.dir} holds a bus server's data from an earlier troupe, which this one cannot read: start a new ` +
        'cluster (--fresh, or another --data-dir)',
    );
  if (existsSync(join(data, opts.account)))
    throw new UsageError(`${opts.dir} holds JetStream data of two troupe versions: remove ${global}, or use --fresh`);
  renameSync(global, join(data, opts.account));
}

/** nats-server's `cluster {}` block. JetStream on 2.9 needs configured routes in it (one that learns its peers only
 * from their routes refuses to start), and elects its meta leader once a second server is up. */
function clusterBlock(c: BusCluster, host: string, tls: ClusterTls | undefined): string {
  if (!tls) throw new UsageError('the core servers of a bus route to each other over TLS only');
  const url = (h: string) => `nats-route://${h.includes(':') ? `[${h}]` : h}:${c.routePort}`;
  return [
    'cluster {',
    `  name: ${JSON.stringify(c.name)}`,
    `  listen: ${JSON.stringify(`${host}:${c.routePort}`)}`,
    `  routes: ${JSON.stringify(c.peers.map(url))}`,
    natsTlsBlock(tls, { verifyPeers: true }).replace(/^/gm, '  '),
    '}',
  ].join('\n');
}

/** Starts the nats-server of session dir `dir` again from its config (the same port, identities and JetStream data),
 * after it died: clients reconnect by themselves, and what it held when it died is lost. A plain child of this
 * process, stopped with stop(). For chaos runs and tests; a supervisor would do the same. */
export async function startNatsServerAgain(dir: string): Promise<{ pid: number; stop(): Promise<void> }> {
  const bin = findNatsServer();
  if (!bin) throw new UsageError(missingNatsMessage());
  const logPath = join(dir, 'logs', 'nats-server.log');
  const from = statSync(logPath).size; // "Server is ready" from before does not count
  const log = openSync(logPath, 'a');
  const child = spawn(bin, ['-c', join(dir, 'nats-server.conf')], { stdio: ['ignore', log, log] });
  closeSync(log);
  const pid = child.pid!;
  try {
    await waitUntilReady(logPath, 10_000, () => child.exitCode === null, from);
  } catch (e) {
    await terminate(pid, 1000).catch(() => undefined);
    throw new Error(`nats-server did not start again (${(e as Error).message}): ${logTail(logPath, 6)}`);
  }
  return { pid, stop: () => terminate(pid) };
}

/** nats-server logs "Server is ready" once it listens (every version since 2.2). Its port accepting connections is not
 * enough: with a fixed port taken, the server there answers while ours exits. */
async function waitUntilReady(logPath: string, timeoutMs: number, running: () => boolean, from = 0): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (Date.now() < until) {
    if (!running()) throw new Error('exited');
    if (readFileSync(logPath).subarray(from).includes('Server is ready')) return;
    await sleep(30);
  }
  throw new Error('not ready in time');
}
