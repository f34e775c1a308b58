// A real network hiccup on simulated hosts (test/helpers/hosts.ts): head and driver on A, a node on B hosting an actor
// and running tasks. During a stream of calls B's link goes down for 3 s. With the default timings the node is only
// SUSPECT for a while: nothing is declared dead, the actor is not restarted, and every call completes right. Then a
// partition: B cut off for 10 s, past a 4 s node timeout. Its actor restarts on host C and never answers from B again;
// healed, B learns it was fenced, stops the old instance and joins again as a new incarnation.
import test from 'ava';
import { eventually } from '../helpers/cluster.ts';
import {
  defaultTimingsEnv,
  hostsUnavailable,
  makeHosts,
  startFixture,
  type Host,
  type Hosts,
  troupeOn,
} from '../helpers/hosts.ts';

const why = hostsUnavailable();
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const env = defaultTimingsEnv;

if (why) {
  console.warn(`troupe: the simulated-hosts tests cannot run here: ${why}`);
} else {
  let net: Hosts | undefined;
  test.after.always(() => net?.remove());

  const troupe = (h: Host, args: string[], more: NodeJS.ProcessEnv = {}) => troupeOn(h, args, { ...env, ...more });

  test.serial('B loses its link for 3 s mid-stream: only suspect; the actor keeps state; calls answer', async (t) => {
    t.timeout(240_000);
    net = await makeHosts(['host-a', 'host-b']);
    const [a, b] = net.hosts;

    const head = await troupe(a, ['start', '--head', '--host', a.ip, '--num-cpus', '2']);
    t.is(head.code, 0, head.stdout + head.stderr);
    const [, token, address, ca] =
      /TROUPE_TOKEN=(\S+) .*start --address (\S+) --ca-sha256 (\S+)/.exec(head.stdout) ?? [];
    const node = await troupe(
      b,
      ['start', '--address', address, '--ca-sha256', ca, '--num-cpus', '2', '--resources', '{"b": 4}'],
      {
        TROUPE_TOKEN: token,
      },
    );
    t.is(node.code, 0, node.stdout + node.stderr);

    const driver = startFixture(a, 'link-loss-driver.ts', { ...env, STREAM_MS: '14000' }, 'streaming\n');
    try {
      t.is(await driver.ready, 'ready', driver.output());
      await sleep(1000); // calls in flight
      await b.cutOff(3000);
      t.is(await driver.exited, 0, driver.output());
    } finally {
      driver.stop();
    }

    const r = JSON.parse(driver.lastLine());
    t.deepEqual(r.wrong, []);
    t.true(r.rounds > 10, `only ${r.rounds} rounds`);
    t.true(r.slowestMs >= 2000, `no call waited for the link (slowest ${r.slowestMs} ms): was it down mid-stream?`);
    t.is(r.first.host, 'host-b');
    t.is(r.last.pid, r.first.pid, 'the actor was not restarted');
    t.is(r.last.total, r.adds, 'the actor kept its state');

    const status = await troupe(a, ['status', '--json']);
    t.is(status.code, 0, status.stderr);
    const nodes = (JSON.parse(status.stdout) as { nodes: { state: string; hostname: string }[] }).nodes;
    t.deepEqual(nodes.map((n) => n.state).sort(), ['ALIVE', 'ALIVE'], status.stdout);
    // The head saw the silence: B went SUSPECT and came back, and nothing was declared dead.
    const log = await a.run('sh', ['-c', 'cat /tmp/troupe-home/state/head/logs/head.log']);
    t.regex(log.stdout, /node \w+ is SUSPECT: no heartbeat for \d+ ms/);
    t.regex(log.stdout, /node \w+ is heard again: ALIVE/);
    t.notRegex(log.stdout, /is dead/);

    for (const h of [b, a]) {
      const stop = await troupe(h, ['stop']);
      t.is(stop.code, 0, stop.stdout + stop.stderr);
    }
  });

  test.serial('B cut off past the node timeout: its actor moves to C, never runs on both; B joins again', async (t) => {
    t.timeout(240_000);
    await net?.remove();
    net = await makeHosts(['host-a', 'host-b', 'host-c']);
    const [a, b, c] = net.hosts;
    const head = await troupe(a, ['start', '--head', '--host', a.ip, '--num-cpus', '1', '--node-timeout-ms', '4000']);
    t.is(head.code, 0, head.stdout + head.stderr);
    const [, token, address, ca] =
      /TROUPE_TOKEN=(\S+) .*start --address (\S+) --ca-sha256 (\S+)/.exec(head.stdout) ?? [];
    const joinCluster = (h: Host) =>
      troupe(h, ['start', '--address', address, '--ca-sha256', ca, '--num-cpus', '1', '--resources', '{"w": 1}'], {
        TROUPE_TOKEN: token,
      });
    const onB = await joinCluster(b);
    t.is(onB.code, 0, onB.stdout + onB.stderr);
    const driver = startFixture(a, 'partition-driver.ts', { ...env, STREAM_MS: '22000' }, 'made ');
    try {
      t.is(await driver.ready, 'ready', driver.output());
      const onC = await joinCluster(c); // somewhere to go
      t.is(onC.code, 0, onC.stdout + onC.stderr);
      const before = JSON.parse((await troupe(a, ['status', '--json'])).stdout) as { nodes: NodeRow[] };
      await b.cutOff(10_000); // declared dead after 4 s: the actor restarts on C
      t.is(await driver.exited, 0, driver.output());
      const r = JSON.parse(driver.lastLine()) as {
        first: { host: string; pid: number };
        instances: Array<{ host: string; pid: number; calls: number }>;
        failed: string[];
      };
      t.is(r.first.host, 'host-b');
      t.deepEqual(r.failed, []);
      // One instance, then the other: the calls moved to C once, and no call was answered on B after that.
      t.deepEqual(
        r.instances.map((i) => i.host),
        ['host-b', 'host-c'],
        JSON.stringify(r.instances),
      );
      // Healed, B heard that it was fenced: its old instance was stopped, and it joined again as a new incarnation.
      const old = await b.run('kill', ['-0', String(r.first.pid)]);
      t.not(old.code, 0, 'the instance on B is gone');
      const after = await eventually('B ALIVE again', async () => {
        const s = JSON.parse((await troupe(a, ['status', '--json'])).stdout) as { nodes: NodeRow[] };
        return s.nodes.filter((n) => n.state === 'ALIVE').length === 3 && s;
      });
      const bBefore = before.nodes.find((n) => n.hostname === 'host-b')!;
      const bAfter = after.nodes.find((n) => n.hostname === 'host-b')!;
      t.is(bAfter.nodeId, bBefore.nodeId);
      t.not(bAfter.startedAt, bBefore.startedAt, 'a new incarnation');
    } finally {
      driver.stop();
    }
    for (const h of [c, b, a]) {
      const stop = await troupe(h, ['stop']);
      t.is(stop.code, 0, stop.stdout + stop.stderr);
    }
  });
}

interface NodeRow {
  nodeId: string;
  hostname: string;
  state: string;
  startedAt: string;
}
