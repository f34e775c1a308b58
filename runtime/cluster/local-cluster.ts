// Starts daemons on this machine: a whole cluster (nats-server + head + node daemon) for `troupe start --head`
// and for init() with nothing to join, or one node daemon for `troupe start --address`.
import { spawn } from 'node:child_process';
import { mkdirSync, openSync, closeSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { nodeStoreName, troupeHome, writeClusterFile } from '../base/config.ts';
import { UsageError } from '../base/errors.ts';
import { startNatsServer } from './nats-server.ts';
import { daemonCommand } from '../base/launch.ts';
import { writeRunFile, removeRunFile } from './run-files.ts';
import { terminate, isAlive, sleep } from '../base/processes.ts';
import { detectResources, defaultObjectStoreMemory, type ResourceFlags } from './machine-resources.ts';
import { Bus } from '../bus/bus.ts';
import { subjects } from '../protocol/subjects.ts';
import type { DaemonConfig } from './daemon.ts';
import type { HeadStatus } from '../protocol/cluster.ts';

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
}

export interface StartedCluster {
  /** For clients on this machine. */
  address: string;
  /** For other machines. */
  publicAddress: string;
  token: string;
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

export async function startHead(o: StartOptions): Promise<StartedCluster> {
  const sessionDir = newSessionDir();
  const started: number[] = [];
  const runs: Array<{ role: 'nats' | 'head' | 'node'; pid: number }> = [];
  try {
    let address: string, publicAddress: string, token: string, natsPid: number | undefined;
    if (o.nats) {
      if (!o.token)
        throw new UsageError('--nats needs the token that server requires: pass --token or set TROUPE_TOKEN');
      address = publicAddress = o.nats;
      token = o.token;
    } else {
      token = o.token ?? randomBytes(24).toString('hex');
      const nats = await startNatsServer({
        dir: sessionDir,
        token,
        host: o.host ?? '127.0.0.1',
        port: o.port,
        detached: o.detached,
        holdProcess: o.holdProcess,
      });
      ({ localAddress: address, publicAddress } = nats);
      natsPid = nats.pid;
      started.push(nats.pid);
      if (o.detached) {
        writeRunFile({ role: 'nats', pid: nats.pid, address, sessionDir });
        runs.push({ role: 'nats', pid: nats.pid });
      }
    }
    const headPid = spawnDaemon(
      {
        role: 'head',
        sessionDir,
        parentPid: o.detached ? undefined : process.pid,
        natsPid: o.detached ? undefined : natsPid,
        options: { address, token, nodeTimeoutMs: o.nodeTimeoutMs },
      },
      sessionDir,
      'head',
      o.detached,
      o.holdProcess,
    );
    started.push(headPid);
    const node = await startNode({ ...o, address, token, sessionDir, isHead: true });
    started.push(...node.pids);
    return {
      address,
      publicAddress,
      token,
      sessionDir,
      nodeId: node.nodeId,
      objectDir: node.objectDir,
      objectStoreMemory: node.objectStoreMemory,
      pids: started,
      stop: async () => {
        for (const pid of [...started].reverse()) await terminate(pid);
        if (!o.detached) rmSync(sessionDir, { recursive: true, force: true });
      },
    };
  } catch (e) {
    for (const pid of started.reverse()) await terminate(pid, 2000);
    for (const r of runs) removeRunFile(r);
    throw e;
  }
}

/** Starts a node daemon and waits until the head counts it alive. */
export async function startNode(
  o: StartOptions & { address: string; token: string; sessionDir?: string; isHead?: boolean },
): Promise<StartedCluster> {
  const sessionDir = o.sessionDir ?? newSessionDir();
  const nodeId = randomBytes(6).toString('hex');
  const resources = detectResources(o);
  const objectStoreRoot = o.objectStoreDir ?? '/dev/shm';
  const objectStoreMemory = o.objectStoreMemory ?? defaultObjectStoreMemory(objectStoreRoot);
  const pid = spawnDaemon(
    {
      role: 'node',
      sessionDir,
      parentPid: o.detached ? undefined : process.pid,
      options: {
        nodeId,
        address: o.address,
        token: o.token,
        isHead: !!o.isHead,
        resources,
        sessionDir,
        objectStoreRoot,
        objectStoreMemory,
        spillRoot: o.spillDir,
      },
    },
    sessionDir,
    `node-${nodeId}`,
    o.detached,
    o.holdProcess,
  );
  try {
    await waitForNode(o.address, o.token, nodeId, pid, join(sessionDir, 'logs', `node-${nodeId}.log`));
  } catch (e) {
    await terminate(pid, 2000);
    throw e;
  }
  const objectDir = join(objectStoreRoot, nodeStoreName(sessionDir, nodeId));
  return {
    address: o.address,
    publicAddress: o.address,
    token: o.token,
    sessionDir,
    nodeId,
    objectDir,
    objectStoreMemory,
    pids: [pid],
    stop: () => terminate(pid),
  };
}

function spawnDaemon(
  config: DaemonConfig,
  sessionDir: string,
  logName: string,
  detached: boolean,
  holdProcess = true,
): number {
  const log = openSync(join(sessionDir, 'logs', `${logName}.log`), 'a');
  const [cmd, args] = daemonCommand(config.role);
  const child = spawn(cmd, args, {
    detached,
    stdio: ['ignore', log, log],
    env: { ...process.env, TROUPE_DAEMON_CONFIG: JSON.stringify(config) },
  });
  closeSync(log);
  if (detached || !holdProcess) child.unref();
  return child.pid!;
}

async function waitForNode(address: string, token: string, nodeId: string, pid: number, log: string): Promise<void> {
  const bus = await Bus.connect({ address, token, name: 'troupe-start' });
  try {
    const until = Date.now() + 60_000;
    while (Date.now() < until) {
      if (!isAlive(pid)) throw new Error(`the node daemon exited during start; see ${log}`);
      try {
        const s = await bus.request<HeadStatus>(subjects.headStatus, {}, { timeoutMs: 1000 });
        if (s.nodes.some((n) => n.nodeId === nodeId && n.alive)) return;
      } catch {
        /* head not up yet */
      }
      await sleep(50);
    }
    throw new Error(`node ${nodeId} did not come up within 60 s; see ${log}`);
  } finally {
    await bus.close();
  }
}
