// Starts daemons on this machine: a whole cluster (nats-server + head + node daemon) for `troupe start --head`
// and for init() with nothing to join, or one node daemon for `troupe start --address`.
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync } from 'node:fs';
import { join, resolve, sep } from 'node:path';
import { tmpdir } from 'node:os';
import { randomBytes } from 'node:crypto';
import {
  hostOf,
  isLoopback,
  nodeStoreName,
  ownAddresses,
  saveCa,
  serverUrls,
  troupeHome,
  troupeState,
  trustPlain,
  writeClusterFile,
} from '../base/config.ts';
import { UsageError } from '../base/errors.ts';
import { busClusterName, ROUTE_PORT, startNatsServer, type NatsServerHandle } from './nats-server.ts';
import type { BusCluster } from './bus-servers.ts';
import { ownServer, startBusServer } from './own-bus-server.ts';
import { writeRunFile, removeRunFile, readRunFiles } from './run-files.ts';
import { isAlive, terminate, sleep } from '../base/processes.ts';
import { spawnDaemon, startError, StartWatch, type DaemonChild } from './daemon-process.ts';
import { resolveWorkerUser } from '../base/worker-user.ts';
import { detectResources, defaultObjectStoreMemory, gpuDevices, type ResourceFlags } from './machine-resources.ts';
import { defaultAddress, externalAddresses, routedAddress } from './node-address.ts';
import { createClusterTls, userClusterTls, type ClusterTls } from './tls.ts';
import { Bus } from '../bus/bus.ts';
import { subjects } from '../protocol/subjects.ts';
import type { HeadStatus } from '../protocol/cluster.ts';
import { checkHeadVersions } from '../protocol/versions.ts';
import { checkCredentials, CREDENTIALS_SUBJECT, type Credentials } from '../protocol/permissions.ts';
import {
  accountOf,
  builtinIdentity,
  createIdentities,
  hasIdentities,
  readIdentities,
  serverAuth,
} from './identities.ts';
import { privateDirProblem } from '../base/private-dir.mjs';

export interface StartOptions extends ResourceFlags {
  /** Outlive this process (troupe start) or die with it (init()). */
  detached: boolean;
  /** Not detached: whether the processes started keep this one running (default true: `troupe start --block`
   * waits on them). init() says false: its script ends when its work does, and then stops them. */
  holdProcess?: boolean;
  /** nats-server bind address. */
  host?: string;
  port?: number;
  /** Use this nats-server (JetStream on) instead of starting one. */
  nats?: string;
  token?: string;
  /** Parent of the object store's dir (default /dev/shm). */
  objectStoreDir?: string;
  /** Bytes the object store may hold in memory (default: 30% of RAM, within what objectStoreDir has free). */
  objectStoreMemory?: number;
  /** Parent of the dir objects spill to when the store is full (default: the session dir); false: never spill. */
  spillDir?: string | false;
  nodeTimeoutMs?: number;
  /** The IP other machines reach this node at (default: the local address routed to the head; for the head, the
   * address of the interface with the default route). Names the head in the join line too. */
  nodeIp?: string;
  /** The head's bus serves TLS whenever it listens beyond loopback, with a CA made here; these are the user's own
   * certificate, key and CA instead (TLS then even on loopback). */
  tlsFiles?: { cert: string; key: string; ca: string };
  /** Idle CPU workers each node daemon keeps started, so that a new task or actor (or one restarting) does not wait for
   * a process to start (default 1). 0: workers start only on demand, which costs the least CPU (test clusters). */
  prestartWorkers?: number;
  /** Plain text even beyond loopback (a trusted network): the token and all data travel in clear. Clients on this
   * machine then connect to the bus (or to --nats) without TLS; elsewhere they need --no-tls or TROUPE_NO_TLS=1. */
  noTls?: boolean;
  /** The Unix user this machine's workers run as (`--worker-user`), not the node daemon's own: jobs' code then cannot
   * read the daemon's memory, environment or files (its credentials). Needs the daemon to run as root. */
  workerUser?: string;
  /** The head's session dir, kept and used again (rather than a new one under TROUPE_HOME): a head started again on it
   * is the same cluster, with its credentials, CA, port and JetStream data (cluster state, checkpoints). On a machine
   * that runs one of the bus's core servers, that server's dir (its JetStream data). */
  dataDir?: string;
  /** A new cluster in `dataDir`: the one kept there is moved aside (`<dir>.old-<time>`), not reused. */
  fresh?: boolean;
  /** The head's bus is a NATS cluster: the other machines (IPs or names) that run one of its core servers, each
   * started there by `troupe start --address` with the join line (bus-servers.ts). Needs TLS. */
  busPeers?: string[];
  /** Called once the head's bus is up, before the start waits for the rest: a bus with peers has no JetStream, and so
   * no head, until one of them joins, so the join line must be shown first. */
  onBusUp?: (c: JoinInfo) => void;
}

/** What another machine needs to join. */
export type JoinInfo = Pick<StartedCluster, 'publicAddress' | 'otherAddresses' | 'caSha256'> & { joinToken: string };

export interface StartedCluster {
  /** For clients on this machine. */
  address: string;
  /** For other machines. */
  publicAddress: string;
  /** Head started with the bus on every interface: the same port on this machine's other addresses, for machines on
   * other networks. */
  otherAddresses: string[];
  /** What other machines reach this node at. */
  nodeIp: string;
  /** The head's bus uses TLS: `sha256:<hex>` of its CA, for the join line's --ca-sha256. */
  caSha256?: string;
  /** The driver credential: what `init()` and the CLI on this machine use (current-cluster.json's `token`). */
  token: string;
  /** The node credential other machines join with (the join line). */
  joinToken?: string;
  sessionDir: string;
  nodeId: string;
  objectDir: string;
  objectStoreMemory: number;
  pids: number[];
  /** Stops every process this call started (embedded clusters). */
  stop(): Promise<void>;
}

/** Makes this the machine's current cluster: `init()` with no address, `troupe status` and `troupe stop` find it, and
 * drivers here use its node's store. */
export function recordCurrentCluster(c: StartedCluster): void {
  writeClusterFile({
    address: c.address,
    token: c.token,
    sessionDir: c.sessionDir,
    localNode: { nodeId: c.nodeId, objectDir: c.objectDir, objectStoreMemory: c.objectStoreMemory },
    startedAt: new Date().toISOString(),
  });
}

export function newSessionDir(): string {
  const stamp = new Date().toISOString().replace(/[-:]/g, '').replace(/\..*/, '').replace('T', '_');
  const dir = join(troupeHome(), `session_${stamp}_${process.pid}_${randomBytes(2).toString('hex')}`);
  mkdirSync(join(dir, 'logs'), { recursive: true, mode: 0o700 });
  return dir;
}

/** A data dir (StartOptions.dataDir), made private if new; one that others may write to is refused. `fresh`: what it
 * holds is moved aside first (kept, for whoever still wants it: it has the old cluster's checkpoints). */
function useDataDir(dir: string, fresh = false): string {
  const path = resolve(dir);
  const running = readRunFiles().find((r) => r.sessionDir === path && isAlive(r.pid));
  if (running)
    throw new UsageError(`a ${running.role} (pid ${running.pid}) already runs on ${path}: 'troupe stop' first`);
  const problem = privateDirProblem(path);
  if (problem) throw new UsageError(`${path} (a data dir) is not private: ${problem}`);
  if (fresh && readdirSync(path).some((f) => f !== 'logs')) {
    const aside = `${path}.old-${new Date().toISOString().replace(/[-:]/g, '')}`;
    renameSync(path, aside);
    mkdirSync(path, { mode: 0o700 });
    console.error(
      `troupe: --fresh: the cluster kept in ${path} is now in ${aside} (remove it once you need it no more)`,
    );
  }
  mkdirSync(join(path, 'logs'), { recursive: true, mode: 0o700 });
  return path;
}

/** Flags that would break a cluster kept in `dir` for the machines that joined it: plain text where they trust its
 * CA. (Another port is refused where the port is read: startNatsServer.) */
function checkSameCluster(dir: string, o: StartOptions, host: string): void {
  if (o.noTls && !isLoopback(host) && existsSync(join(dir, 'tls-ca.pem')))
    throw new UsageError(
      `the cluster kept in ${dir} uses TLS: the machines that joined it trust its CA and refuse plain text. Start ` +
        'it without --no-tls, or start a new cluster (--fresh, or another --data-dir)',
    );
}

/** A bus of several servers is there to outlive the loss of a machine: its state should outlive a reboot too. */
function warnIfTemporary(dir: string): void {
  const tmp = resolve(tmpdir());
  if (!resolve(dir).startsWith(tmp + sep)) return;
  console.error(
    `troupe: this machine keeps the cluster's state in ${dir}, under ${tmp}: a reboot may clear it. For a bus that ` +
      'outlives reboots, start each of its machines with --data-dir DIR elsewhere (/var/lib/troupe, say), or leave ' +
      'TROUPE_HOME unset',
  );
}

export async function startHead(o: StartOptions): Promise<StartedCluster> {
  checkBusPeers(o);
  const sessionDir = o.dataDir ? useDataDir(o.dataDir, o.fresh) : newSessionDir();
  checkSameCluster(sessionDir, o, o.host ?? '127.0.0.1');
  if (o.busPeers?.length) warnIfTemporary(sessionDir);
  const started: number[] = [];
  const runs: Array<{ role: 'nats' | 'head' | 'node'; pid: number }> = [];
  // Every daemon of this start: one that exits before the node is up fails the start at once, with its log.
  const watched: DaemonChild[] = [];
  try {
    let address: string, publicAddress: string, natsPid: number | undefined;
    let otherAddresses: string[] = [];
    let nodeIp: string;
    let tls: ClusterTls | undefined;
    let plan: BusCluster | undefined;
    // One credential per role; a nats-server of the user's (--nats) has its own auth: every role uses its token.
    let tokens: Record<'head' | 'node' | 'localNode' | 'driver', string> & { credentials: Credentials };
    if (o.nats) {
      if (!o.token)
        throw new UsageError('--nats needs the token that server requires: pass --token-file or set TROUPE_TOKEN');
      address = publicAddress = o.nats;
      if (o.noTls) trustPlain([address]);
      const t = o.token;
      tokens = { head: t, node: t, localNode: t, driver: t, credentials: { worker: t, driver: t } };
      nodeIp = o.nodeIp ?? (await routedAddress(hostOf(o.nats)));
    } else {
      // A data dir used again: the same credentials, so nodes and drivers that had them join again.
      const ids = o.dataDir && hasIdentities(sessionDir) ? readIdentities(sessionDir) : createIdentities(sessionDir);
      const credential = (r: Parameters<typeof builtinIdentity>[1]) => builtinIdentity(ids, r).credential;
      tokens = {
        head: credential('head'),
        node: credential('node'),
        localNode: credential('local-node'),
        driver: credential('driver'),
        credentials: { worker: credential('worker'), driver: credential('driver') },
      };
      tls = serverTls(o, sessionDir, o.host ?? '127.0.0.1');
      // The cluster's name comes from its CA, so a head started again on its data dir keeps it.
      plan = o.busPeers && tls && { name: busClusterName(tls.caSha256), routePort: ROUTE_PORT, peers: o.busPeers };
      const nats = await startNatsServer({
        dir: sessionDir,
        tls,
        host: o.host ?? '127.0.0.1',
        port: o.port,
        cluster: plan,
        account: accountOf(serverAuth(sessionDir)),
        detached: o.detached,
        holdProcess: o.holdProcess,
      });
      ({ localAddress: address, publicAddress } = nats);
      if (o.host === '0.0.0.0') {
        // Listening everywhere: name the address asked for, else the default route's, and list the others.
        const ip = o.nodeIp ?? defaultAddress();
        publicAddress = `${hostForUrl(ip)}:${nats.port}`;
        otherAddresses = externalAddresses()
          .filter((a) => a !== ip)
          .map((a) => `${a}:${nats.port}`);
        nodeIp = ip;
      } else {
        nodeIp = o.nodeIp ?? o.host ?? '127.0.0.1';
        if (o.nodeIp) publicAddress = `${hostForUrl(o.nodeIp)}:${nats.port}`; // e.g. the bind address seen through NAT
      }
      // The cluster's address lists every core server: clients go to their machine's first and fail over.
      const peers = plan?.peers.map((p) => `${hostForUrl(p)}:${nats.port}`) ?? [];
      const single = [address, publicAddress];
      address = [address, ...peers].join(',');
      publicAddress = [publicAddress, ...peers].join(',');
      // Every client on this machine (daemons, workers, drivers, the CLI) finds the CA by the address it dials.
      const addresses = [...new Set([...single, address, publicAddress, ...otherAddresses])];
      // Plain: a stale CA of an earlier cluster at this port would refuse us, and beyond loopback (--no-tls) clients
      // here connect without one only because this says so.
      if (tls) saveCa(addresses, tls.caPem);
      else trustPlain(addresses);
      natsPid = nats.pid;
      started.push(nats.pid);
      watched.push(nats.process);
      if (o.detached) {
        writeRunFile({ role: 'nats', pid: nats.pid, address, sessionDir });
        runs.push({ role: 'nats', pid: nats.pid });
      }
    }
    const head = await spawnDaemon(
      {
        role: 'head',
        sessionDir,
        parentPid: o.detached ? undefined : process.pid,
        natsPid: o.detached ? undefined : natsPid,
        credentials: tokens.credentials,
        bus: plan,
        options: { address, token: tokens.head, nodeTimeoutMs: o.nodeTimeoutMs, busPeers: plan?.peers },
      },
      { sessionDir, logName: 'head', what: 'the head daemon', detached: o.detached, holdProcess: o.holdProcess },
    );
    started.push(head.pid);
    watched.push(head);
    o.onBusUp?.({ publicAddress, otherAddresses, caSha256: tls?.caSha256, joinToken: tokens.node });
    const node = await runNode(
      { ...o, nodeIp, address, token: tokens.localNode, sessionDir, isHead: true },
      watched,
      plan ? BUS_FORMING_MS : undefined,
    );
    started.push(...node.pids);
    return {
      address,
      publicAddress,
      otherAddresses,
      nodeIp,
      caSha256: tls?.caSha256,
      token: tokens.driver,
      joinToken: tokens.node,
      sessionDir,
      nodeId: node.nodeId,
      objectDir: node.objectDir,
      objectStoreMemory: node.objectStoreMemory,
      pids: started,
      stop: async () => {
        for (const pid of [...started].reverse()) await terminate(pid);
        if (!o.detached && !o.dataDir) rmSync(sessionDir, { recursive: true, force: true });
      },
    };
  } catch (e) {
    for (const pid of started.reverse()) await terminate(pid, 2000);
    for (const r of runs) removeRunFile(r);
    throw e;
  }
}

/** How long `start --head` with bus peers waits for the first of them to join (the user starts it by hand). */
const BUS_FORMING_MS = 15 * 60_000;

/** Refuses `--bus-peers` that cannot work, before anything is made. The bus then needs the TLS troupe sets up (its CA
 * signs the other servers' certificates, and routes verify them) and names other machines, 2 or 4 of them. */
function checkBusPeers(o: StartOptions): void {
  if (!o.busPeers) return;
  if (o.nats !== undefined) throw new UsageError('--bus-peers and --nats contradict each other: pass one');
  if (o.noTls || o.tlsFiles || isLoopback(o.host ?? '127.0.0.1'))
    throw new UsageError(
      "--bus-peers needs the TLS troupe sets up itself: its CA signs the other servers' certificates, and routes " +
        'verify them (not with --no-tls or --tls-cert, and not on loopback only: pass --host)',
    );
  const own = ownAddresses();
  for (const p of o.busPeers)
    if (own.has(p) || isLoopback(p)) throw new UsageError(`--bus-peers names other machines; ${p} is this one`);
  if (new Set(o.busPeers).size !== o.busPeers.length) throw new UsageError('--bus-peers names a machine twice');
  // JetStream keeps working while a majority of its servers does: an odd number of them, so that one more counts.
  if (o.busPeers.length !== 2 && o.busPeers.length !== 4)
    throw new UsageError(
      '--bus-peers names 2 or 4 other machines (a bus of 3 or 5 servers survives the loss of 1 or 2), ' +
        `got ${o.busPeers.length}`,
    );
}

/** TLS whenever the bus listens beyond loopback, or the user brings certificates; undefined: plain. The server's
 * certificate names every address it listens on (and the node IP the join line names, which may be a NAT's). */
function serverTls(o: StartOptions, sessionDir: string, host: string): ClusterTls | undefined {
  if (o.tlsFiles) return userClusterTls(sessionDir, o.tlsFiles);
  if (o.noTls || isLoopback(host)) return undefined;
  const listens = host === '0.0.0.0' || host === '::' ? externalAddresses() : [host];
  return createClusterTls(sessionDir, [...listens, ...(o.nodeIp ? [o.nodeIp] : [])]);
}

/** A standby head for the cluster at `address` (`troupe start --head --address`): a head daemon that serves nothing
 * until the leading head stops renewing its lease (head/leadership.ts), and then leads. `token` is a head credential
 * (`troupe token create --role head`). Resolves once the daemon stands by (or leads: the leader was gone). */
export async function startStandbyHead(
  o: Pick<StartOptions, 'detached' | 'holdProcess' | 'nodeTimeoutMs'> & { address: string; token: string },
): Promise<{ sessionDir: string; pids: number[]; stop(): Promise<void> }> {
  // The credentials the leader gives node daemons: this head gives the same ones once it leads.
  const credentials = await checkVersions(o.address, o.token);
  const sessionDir = newSessionDir();
  const head = await spawnDaemon(
    {
      role: 'head',
      sessionDir,
      parentPid: o.detached ? undefined : process.pid,
      credentials,
      options: { address: o.address, token: o.token, nodeTimeoutMs: o.nodeTimeoutMs },
    },
    { sessionDir, logName: 'head', what: 'the standby head daemon', detached: o.detached, holdProcess: o.holdProcess },
  );
  try {
    const up = await new StartWatch([head]).step(logged(head.logPath, /standby head:|leading with term/, 60_000));
    if (!up) throw startError(head, 'neither stood by nor led within 60 s');
  } catch (e) {
    await terminate(head.pid, 2000);
    throw e;
  }
  return { sessionDir, pids: [head.pid], stop: () => terminate(head.pid) };
}

/** Whether the log says `line` within timeoutMs. */
async function logged(path: string, line: RegExp, timeoutMs: number): Promise<boolean> {
  for (const until = Date.now() + timeoutMs; Date.now() < until; await sleep(50))
    if (line.test(readFileSync(path, 'utf8'))) return true;
  return false;
}

type NodeStartOptions = StartOptions & { address: string; token: string; sessionDir?: string; isHead?: boolean };

/** Starts a node daemon and waits until the head counts it alive; fails at once if the daemon exits first. */
export function startNode(o: NodeStartOptions): Promise<StartedCluster> {
  return runNode(o, []);
}

/** startNode(), also failing at once if one of `others` (the rest of this start's daemons) exits first. A machine
 * in the address's server list starts its core server of the bus first. `waitMs`: for the head to count the node. */
async function runNode(o: NodeStartOptions, others: DaemonChild[], waitMs = 60_000): Promise<StartedCluster> {
  const self = o.isHead || serverUrls(o.address).length < 2 ? undefined : ownServer(o.address);
  for (const [given, flag] of [
    [o.dataDir, '--data-dir'],
    [o.fresh, '--fresh'],
  ] as const)
    if (given && !o.isHead && !self)
      throw new UsageError(
        `${flag} on a joining machine is for one of the bus's servers, and ${o.address} does not list this one`,
      );
  const bus = self && (await startOwnBusServer(o, self));
  try {
    return await runNodeDaemon(o, bus ? [...others, bus.process] : others, waitMs, bus);
  } catch (e) {
    if (bus) {
      await bus.stop();
      removeRunFile({ role: 'nats', pid: bus.pid });
    }
    throw e;
  }
}

/** This machine's core server of the bus, in `--data-dir` or a dir of its own in troupeState() kept from one start
 * to the next (its JetStream data, its server name: the cluster knows it as the same server). */
async function startOwnBusServer(o: NodeStartOptions, self: { host: string; port: number }) {
  const dir = useDataDir(
    o.dataDir ?? join(troupeState(), `bus-server-${self.host.replace(/[^0-9A-Za-z.-]/g, '_')}-${self.port}`),
    o.fresh,
  );
  warnIfTemporary(dir);
  const nats = await startBusServer({ ...o, self, dir });
  if (o.detached) writeRunFile({ role: 'nats', pid: nats.pid, address: o.address, sessionDir: dir });
  return Object.assign(nats, { dir });
}

async function runNodeDaemon(
  o: NodeStartOptions,
  others: DaemonChild[],
  waitMs: number,
  bus: (NatsServerHandle & { dir: string }) | undefined,
): Promise<StartedCluster> {
  // A joining machine's drivers use the driver credential, which the head gives only to nodes. With a bus server just
  // started, the head may still be making the cluster state, once JetStream has a majority.
  const driverToken = o.isHead ? undefined : (await checkVersions(o.address, o.token, bus ? 60_000 : undefined)).driver;
  const nodeIp = o.nodeIp ?? (await routedAddress(hostOf(o.address)));
  const sessionDir = o.sessionDir ?? newSessionDir();
  const nodeId = randomBytes(6).toString('hex');
  const gpus = gpuDevices(o.numGpus);
  const resources = detectResources(o, gpus);
  // Checked here, so a wrong name fails the start with its reason; the daemon's own user needs nothing.
  const workerUser = o.workerUser === undefined ? undefined : resolveWorkerUser(o.workerUser);
  const objectStoreRoot = o.objectStoreDir ?? '/dev/shm';
  const objectStoreMemory = o.objectStoreMemory ?? defaultObjectStoreMemory(objectStoreRoot);
  const node = await spawnDaemon(
    {
      role: 'node',
      sessionDir,
      parentPid: o.detached ? undefined : process.pid,
      options: {
        nodeId,
        address: o.address,
        token: o.token,
        isHead: !!o.isHead,
        nodeIp,
        resources,
        gpuDevices: gpus,
        sessionDir,
        objectStoreRoot,
        objectStoreMemory,
        spillRoot: o.spillDir,
        prestartWorkers: o.prestartWorkers,
        workerUser: workerUser?.uid === process.geteuid?.() ? undefined : workerUser,
      },
      busServer: bus && { dir: bus.dir },
    },
    {
      sessionDir,
      logName: `node-${nodeId}`,
      what: `the node daemon ${nodeId}`,
      detached: o.detached,
      holdProcess: o.holdProcess,
    },
  );
  const pid = node.pid;
  try {
    await waitForNode(o.address, o.token, node, nodeId, new StartWatch([...others, node]), waitMs);
  } catch (e) {
    await terminate(pid, 2000);
    throw e;
  }
  const objectDir = join(objectStoreRoot, nodeStoreName(sessionDir, nodeId));
  return {
    address: o.address,
    publicAddress: o.address,
    otherAddresses: [],
    nodeIp,
    token: driverToken ?? o.token,
    sessionDir,
    nodeId,
    objectDir,
    objectStoreMemory,
    pids: bus ? [bus.pid, pid] : [pid],
    stop: async () => {
      await terminate(pid);
      await bus?.stop();
    },
  };
}

/** Polls the head's status until it counts the node alive. Every wait is a `watch.step()`: a daemon of this start that
 * exits ends it at once. */
async function waitForNode(
  address: string,
  token: string,
  node: DaemonChild,
  nodeId: string,
  watch: StartWatch,
  waitMs: number,
): Promise<void> {
  const connecting = Bus.connect({ address, token, name: 'troupe-start' });
  let bus: Bus;
  try {
    bus = await watch.step(connecting);
  } catch (e) {
    void connecting.then(
      (b) => b.close(),
      () => undefined,
    );
    throw e;
  }
  try {
    const until = Date.now() + waitMs;
    // What the head last said, for the error: a head that never answers, one that never saw the node's record, and one
    // that counts it dead are three different problems.
    let heard: HeadStatus | undefined;
    while (Date.now() < until) {
      const status = bus.request<HeadStatus>(subjects.headStatus, {}, { timeoutMs: 1000 }).catch(() => undefined);
      const s = await watch.step(status); // undefined: the head is not up yet
      heard = s ?? heard;
      if (s?.nodes.some((n) => n.nodeId === nodeId && n.alive)) return;
      await watch.step(sleep(50));
    }
    const listed = heard?.nodes.find((n) => n.nodeId === nodeId);
    const said = !heard
      ? 'no head answered status'
      : listed
        ? 'the head counts it dead'
        : `the head has not seen it register (it lists ${heard.nodes.length} nodes)`;
    throw startError(node, `did not come up within ${Math.round(waitMs / 1000)} s (${said})`);
  } finally {
    await bus.close();
  }
}

/** A joining machine checks its versions against the head's before it starts anything: a mismatch fails the start
 * with VersionMismatchError (the node daemon checks again, for those started otherwise). Then it asks for the
 * credentials the head gives nodes: a token that is not the join credential fails here, with PermissionDeniedError. */
async function checkVersions(address: string, token: string, waitMs?: number): Promise<Credentials> {
  const bus = await Bus.connect({ address, token, name: 'troupe-start' });
  try {
    await checkHeadVersions((hello) => bus.request(subjects.headHello, hello, { timeoutMs: 2000 }), {
      self: 'this node',
      role: 'start',
      address,
      waitMs,
    });
    return checkCredentials(await bus.request(CREDENTIALS_SUBJECT, {}, { timeoutMs: 5000 }));
  } finally {
    await bus.close();
  }
}

function hostForUrl(ip: string): string {
  return ip.includes(':') ? `[${ip}]` : ip;
}
