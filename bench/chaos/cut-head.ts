// Run (j) of `npm run chaos`: the head's machine cut off, on simulated hosts (test/helpers/hosts.ts) whose bus troupe
// runs as a NATS cluster of three servers, one per host (`--bus-peers`). A runs the head, B a standby head and a
// node, C a node and a driver calling an actor on B every 100 ms. A's link goes down for CUT_MS. Counted: how long
// until the standby holds the lease and until it answers `status` (read from C), and the calls between B and C.
// Needs root and `ip netns`.
import type { HeadStatus } from '../../runtime/protocol/cluster.ts';
import {
  defaultTimingsEnv,
  hostsUnavailable,
  makeHosts,
  busServerName,
  clusterTokenOn,
  startBusOnHosts,
  startFixture,
  troupeOn,
  type Host,
} from '../../test/helpers/hosts.ts';

const CUT_MS = 60_000;

interface Watched {
  lease: Array<{ at: number; headId: string; term: number }>;
  answered: Array<{ at: number; headId: string }>;
  leaseLeader?: string;
}

export async function cutHeadMachine(): Promise<Record<string, number | string | boolean>> {
  const why = hostsUnavailable();
  if (why) return { skipped: why };
  const net = await makeHosts(['host-a', 'host-b', 'host-c']);
  const [a, b, c] = net.hosts;
  const env = defaultTimingsEnv;
  const must = async (what: string, h: Host, args: string[], more: NodeJS.ProcessEnv = {}) => {
    const r = await troupeOn(h, args, { ...env, ...more });
    if (r.code !== 0) throw new Error(`${what}: ${r.stdout}${r.stderr}`);
    return r.stdout;
  };
  try {
    // The bus troupe runs on the three hosts, a node on each; the actor's node is B's.
    const { address, caSha256 } = await startBusOnHosts(net.hosts, env, [
      ['--num-cpus', '1'],
      ['--num-cpus', '1', '--resources', '{"w": 1}'],
      ['--num-cpus', '1'],
    ]);
    const headToken = (await must('a head credential', a, ['token', 'create', '--role', 'head'])).trim();
    await must('a standby head on B', b, ['start', '--head', '--address', address, '--ca-sha256', caSha256], {
      TROUPE_TOKEN: headToken,
    });
    // A new credential reaches B's server within 2 s: until then the standby talks through another server, and moves
    // back to B's within 5 s more (bus/home-server.ts). The cut waits for that, as for the leaders (head-watch.ts).
    const settled = Date.now() + 8000;
    // C's drivers use C's current-cluster file (the address of the three servers, the driver credential).
    const onC = { ...env, TROUPE_ADDRESS: address, TROUPE_TOKEN: clusterTokenOn(c) };
    let first: HeadStatus | undefined;
    for (const until = Date.now() + 60_000; Date.now() < until; await new Promise((r) => setTimeout(r, 500))) {
      first = JSON.parse(await must('status', c, ['status', '--json'])) as HeadStatus;
      if (first.bus?.stateReplicas === 3 && first.standbys?.length) break;
    }
    if (first?.bus?.stateReplicas !== 3) throw new Error(`no R3 state: ${JSON.stringify(first?.bus)}`);
    const driver = startFixture(c, 'partition-driver.ts', { ...onC, STREAM_MS: String(CUT_MS + 5000) }, 'made ');
    const aServer = busServerName(a);
    const watch = startFixture(
      c,
      'head-watch.ts',
      { ...onC, WATCH_MS: String(CUT_MS + 5000), AVOID_SERVER: aServer },
      'watching',
    );
    let cutAt = 0;
    try {
      if ((await driver.ready) !== 'ready') throw new Error(`the driver on C: ${driver.output()}`);
      if ((await watch.ready) !== 'ready') throw new Error(`the watcher on C: ${watch.output()}`);
      await new Promise((r) => setTimeout(r, Math.max(0, settled - Date.now())));
      ({ cutAt } = await a.cutOff(CUT_MS));
      if ((await driver.exited) !== 0) throw new Error(`the driver on C: ${driver.output()}`);
      if ((await watch.exited) !== 0) throw new Error(`the watcher on C: ${watch.output()}`);
    } finally {
      driver.stop();
      watch.stop();
    }
    const seen = JSON.parse(driver.lastLine()) as { instances: Array<{ host: string; calls: number }>; failed: [] };
    const watched = JSON.parse(watch.lastLine()) as Watched;
    const old = first.lease?.headId;
    // Just after the heal the routes to A come back and JetStream catches up: the head may miss a status or two.
    let after: HeadStatus | undefined;
    for (const until = Date.now() + 30_000; Date.now() < until && !after; await new Promise((r) => setTimeout(r, 500)))
      after = await troupeOn(c, ['status', '--json'], env).then((r) =>
        r.code === 0 ? (JSON.parse(r.stdout) as HeadStatus) : undefined,
      );
    if (!after) throw new Error('no head answered status within 30 s of the heal');
    const leased = watched.lease.find((l) => l.headId !== old && l.at >= cutAt);
    const answered = watched.answered.find((l) => l.headId !== old && l.at >= cutAt);
    return {
      cut_s: CUT_MS / 1000,
      lease_to_standby_ms: leased ? leased.at - cutAt : -1,
      standby_answering_ms: answered ? answered.at - cutAt : -1,
      new_term: leased?.term ?? -1,
      calls_b_from_c: seen.instances.reduce((n, i) => n + i.calls, 0),
      calls_failed: seen.failed.length,
      actor_stayed_on_b: seen.instances.every((i) => i.host === 'host-b'),
      lease_leader_on_a: watched.leaseLeader === aServer,
      state_replicas_after: after.bus?.stateReplicas ?? -1,
      nodes_alive_after: after.nodes.filter((n) => n.alive).length,
    };
  } finally {
    for (const h of [c, b, a]) await troupeOn(h, ['stop'], defaultTimingsEnv).catch(() => undefined);
    await net.remove();
  }
}
