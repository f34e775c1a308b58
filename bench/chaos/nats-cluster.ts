// Run (i) of `npm run chaos`: troupe on a NATS cluster of three servers (a user's own, `--nats A,B,C`), on this
// machine. A driver calls an actor through NATS (no lanes, as between machines) from 4 loops, with maxTaskRetries -1;
// 3 s in, the server the actor's worker is connected to is killed (SIGKILL). Counted: calls failed, the longest wait
// between two answers, calls that ran twice (their answer was lost, so they were sent again; the actor found again by
// name says how often it ran), and whether the same head still leads, with three copies of the state.
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startHead, startNode, type StartedCluster } from '../../runtime/cluster/local-cluster.ts';
import { Bus } from '../../runtime/bus/bus.ts';
import { subjects } from '../../runtime/protocol/subjects.ts';
import type { HeadStatus } from '../../runtime/protocol/cluster.ts';
import { startNatsCluster } from '../../test/helpers/nats-cluster.ts';
import { startFixture } from '../../test/helpers/hosts.ts';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
/** startFixture()'s host: this machine. */
const here = {
  spawn: (cmd: string, args: string[], o: { env?: NodeJS.ProcessEnv; cwd?: string } = {}) =>
    spawn(cmd, args, { ...o, stdio: ['ignore', 'pipe', 'pipe'] }),
};

export async function killOneOfThreeNats(): Promise<Record<string, number | string | boolean>> {
  const dir = mkdtempSync(join(tmpdir(), 'troupe-chaos-nats-'));
  const started: StartedCluster[] = [];
  const nats = await startNatsCluster(dir);
  const { address, token } = nats;
  const status = async () => {
    const bus = await Bus.connect({ address, token, name: 'chaos-nats-cluster' });
    try {
      return await bus.request<HeadStatus>(subjects.headStatus, {}, { timeoutMs: 5000 });
    } finally {
      await bus.close();
    }
  };
  // The daemons, and the workers they start, read TROUPE_LANES=0 from the environment they are started with.
  const lanes = process.env.TROUPE_LANES;
  process.env.TROUPE_LANES = '0';
  try {
    const common = { detached: false, numGpus: 0, prestartWorkers: 0, objectStoreDir: dir } as const;
    const head = await startHead({ ...common, nats: address, token, numCpus: 1 });
    started.push(head);
    const node = { ...common, address, token, sessionDir: head.sessionDir, numCpus: 1, resources: { w: 1 } };
    started.push(await startNode(node));
    const before = await status();
    const env = { ...process.env, TROUPE_ADDRESS: address, TROUPE_TOKEN: token, STREAM_MS: '12000', W: '1' };
    const driver = startFixture(here, 'calls-driver.ts', env, 'made ');
    try {
      if ((await driver.ready) !== 'ready') throw new Error(`the driver: ${driver.output()}`);
      await sleep(3000);
      // The server the actor's worker is connected to: the calls on their way to it and its answers die with it.
      const made = JSON.parse(/made (\{.*\})/.exec(driver.output())![1]!) as { pid: number };
      const victim = await nats.serverOf(`troupe-worker-${made.pid}`);
      if (!victim) throw new Error("no server holds the actor's worker's connection");
      await nats.kill(victim);
      if ((await driver.exited) !== 0) throw new Error(`the driver: ${driver.output()}`);
    } finally {
      driver.stop();
    }
    const seen = JSON.parse(driver.lastLine()) as {
      sent: number;
      answered: number;
      failed: number;
      errors: string[];
      longestWaitMs: number;
      total: number;
    };
    const after = await status();
    return {
      servers: before.bus?.servers ?? 0,
      state_replicas: before.bus?.stateReplicas ?? 0,
      killed: "the actor's worker's server",
      calls_sent: seen.sent,
      calls_failed: seen.failed,
      errors: seen.errors.join('; ') || 'none',
      longest_wait_ms: seen.longestWaitMs,
      calls_ran_twice: seen.total - seen.answered,
      same_head_leads: after.lease?.headId === before.lease?.headId && after.lease?.term === before.lease?.term,
      nodes_alive_after: after.nodes.filter((n) => n.alive).length,
    };
  } finally {
    if (lanes === undefined) delete process.env.TROUPE_LANES;
    else process.env.TROUPE_LANES = lanes;
    for (const s of started.reverse()) await s.stop();
    await nats.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}
