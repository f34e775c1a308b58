// Run (k) of `npm run chaos`: a bus of five servers (`--bus-peers B,C,D,E`) on simulated hosts (test/helpers/hosts.ts)
// loses two machines at once. A runs the head and the actor, C a driver calling it every 100 ms. Once the state is in
// five copies, the two machines cut off for CUT_MS are two of B, D and E that hold copies of the head lease's stream,
// its leader first: with three copies, as troupe kept before, such a cut stopped that stream, and the head with it.
// Counted: the calls from C, and how often the head answered `status` (asked from C every second) during the cut.
// Needs root and `ip netns`.
import { join } from 'node:path';
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

const CUT_MS = 15_000;

export async function cutTwoOfFive(): Promise<Record<string, number | string | boolean>> {
  const why = hostsUnavailable();
  if (why) return { skipped: why };
  const net = await makeHosts(['five-a', 'five-b', 'five-c', 'five-d', 'five-e']);
  const [a, b, c, d, e] = net.hosts;
  const env = defaultTimingsEnv;
  const status = async (): Promise<(HeadStatus & { headReachable?: boolean }) | undefined> => {
    const r = await troupeOn(c, ['status', '--json'], env);
    return r.code === 0 ? JSON.parse(r.stdout) : undefined;
  };
  try {
    const formedFrom = Date.now();
    const { address } = await startBusOnHosts(
      net.hosts,
      env,
      net.hosts.map((h) => ['--num-cpus', '1', ...(h === a ? ['--resources', '{"w": 1}'] : [])]),
    );
    let formed: HeadStatus | undefined;
    for (const until = Date.now() + 90_000; Date.now() < until; await new Promise((r) => setTimeout(r, 1000))) {
      formed = await status();
      if (formed?.bus?.stateReplicas === 5 && formed.nodes.filter((n) => n.alive).length === 5) break;
    }
    if (formed?.bus?.stateReplicas !== 5) throw new Error(`no R5 state: ${JSON.stringify(formed?.bus)}`);
    const formedMs = Date.now() - formedFrom;

    // Which machines hold the lease's stream, asked from C with its driver credential (it may read the KV streams).
    const onC = { ...env, TROUPE_ADDRESS: address, TROUPE_TOKEN: clusterTokenOn(c) };
    const asked = await c.run(
      process.execPath,
      ['--import', 'tsx', '--conditions=troupe-source', join(c.troupeRoot, 'test', 'fixtures', 'lease-holders.ts')],
      { cwd: c.troupeRoot, env: onC },
    );
    if (asked.code !== 0) throw new Error(`the lease stream's holders: ${asked.stderr}`);
    const holders = JSON.parse(asked.stdout.trim().split('\n').pop()!) as string[]; // leader first
    const hostOf = new Map(net.hosts.map((h) => [busServerName(h), h]));
    const victims = holders
      .map((s) => hostOf.get(s))
      .filter((h): h is Host => h === b || h === d || h === e)
      .slice(0, 2);
    if (victims.length < 2) throw new Error(`fewer than two of B, D, E hold the lease's stream: ${holders}`);

    const driver = startFixture(c, 'partition-driver.ts', { ...onC, STREAM_MS: String(CUT_MS + 5000) }, 'made ');
    let polls = 0;
    let answered = 0;
    try {
      if ((await driver.ready) !== 'ready') throw new Error(`the driver on C: ${driver.output()}`);
      const cuts = Promise.all(victims.map((h) => h.cutOff(CUT_MS)));
      let cutting = true;
      const done = () => {
        cutting = false;
      };
      void cuts.then(done, done);
      while (cutting) {
        const asked = Date.now();
        const s = await status();
        if (!cutting) break;
        polls++;
        if (s?.headReachable) answered++;
        await new Promise((r) => setTimeout(r, Math.max(0, 1000 - (Date.now() - asked))));
      }
      await cuts;
      if ((await driver.exited) !== 0) throw new Error(`the driver on C: ${driver.output()}`);
    } finally {
      driver.stop();
    }
    const seen = JSON.parse(driver.lastLine()) as { instances: Array<{ host: string; calls: number }>; failed: [] };
    let after: HeadStatus | undefined;
    for (const until = Date.now() + 60_000; Date.now() < until; await new Promise((r) => setTimeout(r, 1000))) {
      after = await status();
      if (after?.bus?.servers === 5 && after.nodes.filter((n) => n.alive).length === 5) break;
    }
    return {
      formed_ms: formedMs,
      state_replicas: formed.bus.stateReplicas,
      cut: victims.map((h) => h.name).join('+'),
      cut_s: CUT_MS / 1000,
      cut_lease_leader: hostOf.get(holders[0]) === victims[0],
      calls_a_from_c: seen.instances.reduce((n, i) => n + i.calls, 0),
      calls_failed: seen.failed.length,
      status_asked_during_cut: polls,
      head_answered_during_cut: answered,
      servers_after: after?.bus?.servers ?? -1,
      nodes_alive_after: after?.nodes.filter((n) => n.alive).length ?? -1,
    };
  } finally {
    for (const h of [e, d, c, b, a]) await troupeOn(h, ['stop'], defaultTimingsEnv).catch(() => undefined);
    await net.remove();
  }
}
