// Real clusters for tests: a nats-server, a head and node daemons as child processes, always torn down.
import { builtinIdentity, createIdentities, readIdentities } from '../../runtime/cluster/identities.ts';
import { mkdtempSync, rmSync, readdirSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawn } from 'node:child_process';
import type { ExecutionContext, TestFn } from 'ava';
import { init, shutdown } from '../../runtime/api/session.ts';
import {
  startHead,
  startNode,
  recordCurrentCluster,
  type StartedCluster,
  type StartOptions,
} from '../../runtime/cluster/local-cluster.ts';
import type { ResourceFlags } from '../../runtime/cluster/machine-resources.ts';
import { terminate, isAlive } from '../../runtime/base/processes.ts';
import { startNatsServer, startNatsServerAgain } from '../../runtime/cluster/nats-server.ts';
import { Bus } from '../../runtime/bus/bus.ts';
import { CheckpointStore } from '../../runtime/state/checkpoints.ts';
import { subjects } from '../../runtime/protocol/subjects.ts';
import type { HeadStatus } from '../../runtime/protocol/cluster.ts';

// The suite's models are tiny: on them wasm is quicker than TensorFlow, whose every op costs more and whose library
// takes 0.9 s of CPU to load in each worker. So the clusters the tests start (their daemons and workers inherit this)
// and their drivers compute on wasm; backends.test.ts trains, serves and searches on tensorflow where it is set up,
// and the demo's test runs on whatever is best.
process.env.TROUPE_TENSOR_BACKEND ??= 'wasm';

const everyPid = new Set<number>();
// Last line of defence if a test process dies before its teardown ran.
process.on('exit', () => {
  for (const pid of everyPid)
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      /* gone */
    }
});

export function tempDir(t: ExecutionContext, prefix = 'troupe-test-'): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

export interface TestCluster {
  address: string;
  /** The driver credential (what `init()` on the head's machine uses). */
  token: string;
  /** The node (join) credential. */
  joinToken: string;
  /** The head's credential: may publish every troupe subject (probes of the daemons' handlers use it). */
  headToken: string;
  /** TROUPE_HOME of this cluster (a temp dir, removed by stop()). */
  home: string;
  head: StartedCluster;
  nodes: StartedCluster[];
  /** Node ids: [head node, extra nodes...]. */
  nodeIds: string[];
  status(): Promise<HeadStatus>;
  /** Kills the cluster's nats-server (SIGKILL: what it had on its way is lost) and starts it again from its config:
   * the same port and JetStream dir. Resolves once it is ready. */
  restartNats(): Promise<void>;
  /** Stops every process and removes the temp dir. Register it: t.teardown(c.stop) or test.after.always(c.stop). */
  stop(): Promise<void>;
}

/** A head (with its node) plus extra node daemons, owned by this test process. Cleans up after itself if start
 * fails. */
/** Per node: resources and object store settings. */
export type NodeFlags = ResourceFlags &
  Pick<StartOptions, 'objectStoreMemory' | 'spillDir' | 'prestartWorkers' | 'workerUser'>;

export async function startCluster(
  o: { head?: NodeFlags; nodes?: NodeFlags[]; nodeTimeoutMs?: number } = {},
): Promise<TestCluster> {
  const home = mkdtempSync(join(tmpdir(), 'troupe-test-'));
  process.env.TROUPE_HOME = home;
  const started: StartedCluster[] = [];
  /** A nats-server restartNats() started: stopped after every daemon. */
  let restarted: number | undefined;
  const stop = async () => {
    for (const s of [...started].reverse()) {
      await s.stop();
      s.pids.forEach((p) => everyPid.delete(p));
    }
    started.length = 0;
    if (restarted) await terminate(restarted);
    rmSync(home, { recursive: true, force: true });
  };
  try {
    const head = await startHead({
      detached: false,
      numCpus: 2,
      numGpus: 0,
      // Workers start when a test needs one: a spare kept idle per node is CPU the other test files could use.
      prestartWorkers: 0,
      ...o.head,
      objectStoreDir: home,
      nodeTimeoutMs: o.nodeTimeoutMs,
    });
    started.push(head);
    head.pids.forEach((p) => everyPid.add(p));
    // As `troupe start --head` does: init() with no arguments finds this cluster and the local node's store.
    recordCurrentCluster(head);
    const nodes: StartedCluster[] = [];
    for (const flags of o.nodes ?? []) {
      const n = await startNode({
        detached: false,
        numGpus: 0,
        prestartWorkers: 0,
        ...flags,
        objectStoreDir: home,
        address: head.address,
        token: head.joinToken!,
        sessionDir: head.sessionDir,
      });
      n.pids.forEach((p) => everyPid.add(p));
      started.push(n);
      nodes.push(n);
    }
    return {
      address: head.address,
      token: head.token,
      joinToken: head.joinToken!,
      headToken: builtinIdentity(readIdentities(head.sessionDir), 'head').credential,
      home,
      head,
      nodes,
      nodeIds: [head.nodeId, ...nodes.map((n) => n.nodeId)],
      status: async () => {
        const bus = await Bus.connect({ address: head.address, token: head.token, name: 'test' });
        try {
          return await bus.request<HeadStatus>(subjects.headStatus, {});
        } finally {
          await bus.close();
        }
      },
      restartNats: async () => {
        const pid = restarted ?? head.pids[0]; // startHead's pids: [nats-server, head, node]
        process.kill(pid, 'SIGKILL');
        await eventually('nats-server to exit', async () => !isAlive(pid));
        everyPid.delete(pid);
        restarted = (await startNatsServerAgain(head.sessionDir)).pid;
        everyPid.add(restarted);
      },
      stop,
    };
  } catch (e) {
    await stop();
    throw e;
  }
}

export async function eventually<T>(
  what: string,
  fn: () => Promise<T | undefined | false>,
  timeoutMs = 15_000,
): Promise<T> {
  const until = Date.now() + timeoutMs;
  // What the last try threw, so that a timeout says what was seen instead of only what was awaited.
  let last = '';
  for (;;) {
    const v = await fn().catch((e: unknown) => {
      last = e instanceof Error ? e.message : String(e);
      return undefined;
    });
    if (v) return v;
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}${last ? ` (last: ${last})` : ''}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

export interface RunResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** Runs a command to completion (bounded by timeoutMs), collecting its output. */
export function runCommand(
  cmd: string,
  args: string[],
  // group: the command runs in a process group of its own, killed whole at the timeout: for wrappers (npm, npx)
  // whose children would otherwise outlive them and hold the pipes open.
  opts: { env?: NodeJS.ProcessEnv; timeoutMs?: number; cwd?: string; group?: boolean } = {},
): Promise<RunResult> {
  return new Promise((resolve) => {
    const child = spawn(cmd, args, {
      env: { ...process.env, ...opts.env },
      cwd: opts.cwd,
      stdio: ['ignore', 'pipe', 'pipe'],
      detached: opts.group,
    });
    everyPid.add(child.pid!);
    let stdout = '',
      stderr = '';
    child.stdout.on('data', (d) => {
      stdout += d;
    });
    child.stderr.on('data', (d) => {
      stderr += d;
    });
    const timer = setTimeout(() => {
      if (opts.group) process.kill(-child.pid!, 'SIGKILL');
      else child.kill('SIGKILL');
    }, opts.timeoutMs ?? 60_000);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      everyPid.delete(child.pid!);
      resolve({ code, signal, stdout, stderr });
    });
  });
}

export { terminate, isAlive };

/** Pids of live processes whose environment has TROUPE_HOME=home: everything a cluster under that home started. */
export function processesWithHome(home: string): number[] {
  const out: number[] = [];
  const needle = `TROUPE_HOME=${home}\0`;
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name) || Number(name) === process.pid) continue;
    try {
      if (`${readFileSync(`/proc/${name}/environ`, 'utf8')}\0`.includes(needle)) out.push(Number(name));
    } catch {
      /* gone, or not ours to read */
    }
  }
  return out;
}

/** A connection with the head's identity, closed when the test ends: it reads what a driver may not (the checkpoint
 * store, the list of shipped code). */
export async function headBusOf(t: ExecutionContext, c: TestCluster): Promise<Bus> {
  const bus = await Bus.connect({ address: c.address, token: c.headToken, name: 'test-as-head' });
  t.teardown(() => bus.close());
  return bus;
}

/** A lone nats-server (JetStream on, no daemons) in a temp dir, and a connection to it with the head's identity: both
 * end with the test. `dir` is the server's (startNatsServerAgain starts it again there). */
export async function loneServer(
  t: ExecutionContext,
  name: string,
): Promise<{ bus: Bus; dir: string; nats: { stop(): Promise<void> } }> {
  const dir = tempDir(t);
  const token = builtinIdentity(createIdentities(dir), 'head').credential;
  const nats = await startNatsServer({ dir, host: '127.0.0.1', detached: false });
  t.teardown(() => nats.stop());
  const bus = await Bus.connect({ address: nats.localAddress, token, name });
  t.teardown(() => bus.close());
  return { bus, dir, nats };
}

/** The cluster's checkpoint store, through the head's identity (a driver has no access to it:
 * core/driver-checkpoints.ts). */
export async function checkpointStoreOf(t: ExecutionContext, c: TestCluster): Promise<CheckpointStore> {
  return CheckpointStore.open(await headBusOf(t, c));
}

/** For a test file: a cluster started before its tests with this process as driver (init()), stopped after them. */
export function useCluster(test: TestFn, o: Parameters<typeof startCluster>[0] = {}): () => TestCluster {
  let c: TestCluster | undefined;
  test.serial.before(async () => {
    c = await startCluster(o);
    await init(); // finds it through the current-cluster file, as a user's script would
  });
  test.serial.after.always(async () => {
    await shutdown();
    await c?.stop();
  });
  return () => {
    if (!c) throw new Error('the cluster did not start (see the before hook)');
    return c;
  };
}
