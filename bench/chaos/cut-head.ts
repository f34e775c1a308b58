// Run (j) of `npm run chaos`: the head's machine cut off, on simulated hosts (test/helpers/hosts.ts) running a user's
// NATS cluster of three nats-servers, one per host. A runs the head, B a standby head and a node, C a node and a
// driver calling an actor on B every 100 ms. A's link goes down for CUT_MS. Counted: how long until the standby holds
// the lease and until it answers `status` (read from C), and the calls between B and C. Needs root and `ip netns`.
import { mkdirSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import {
  defaultTimingsEnv,
  hostsUnavailable,
  makeHosts,
  startFixture,
  troupeOn,
  type Host,
} from '../../test/helpers/hosts.ts';

const CUT_MS = 60_000;

interface Watched {
  lease: Array<{ at: number; headId: string; term: number }>;
  answered: Array<{ at: number; headId: string }>;
}

export async function cutHeadMachine(): Promise<Record<string, number | string | boolean>> {
  const why = hostsUnavailable();
  if (why) return { skipped: why };
  const net = await makeHosts(['host-a', 'host-b', 'host-c']);
  const [a, b, c] = net.hosts;
  const token = randomBytes(16).toString('hex');
  const address = net.hosts.map((h) => `${h.ip}:4222`).join(',');
  const env = { ...defaultTimingsEnv, TROUPE_TOKEN: token, TROUPE_NO_TLS: '1', TROUPE_ADDRESS: address };
  const must = async (what: string, h: Host, args: string[]) => {
    const r = await troupeOn(h, args, env);
    if (r.code !== 0) throw new Error(`${what}: ${r.stdout}${r.stderr}`);
    return r.stdout;
  };
  try {
    // The user's NATS cluster: nats-server 2.9 with its defaults, routes between the three hosts.
    const routes = net.hosts.map((h) => `nats-route://${h.ip}:6222`).join(', ');
    for (const h of net.hosts) {
      mkdirSync(h.path('/tmp/nats'), { recursive: true });
      writeFileSync(
        h.path('/tmp/nats/nats.conf'),
        [
          `server_name: ${h.name}`,
          `listen: ${h.ip}:4222`,
          `authorization { token: "${token}" }`,
          'jetstream { store_dir: /tmp/nats/js }',
          `cluster { name: users-nats, listen: ${h.ip}:6222, routes: [${routes}] }`,
          '',
        ].join('\n'),
      );
      h.spawn('nats-server', ['-c', '/tmp/nats/nats.conf', '-l', '/tmp/nats/log']);
    }
    // The head retries JetStream while the servers elect their first meta leader.
    await must('start --head on A', a, ['start', '--head', '--nats', address, '--num-cpus', '1']);
    await must('a standby head on B', b, ['start', '--head', '--address', address]);
    await must('a node on B', b, ['start', '--address', address, '--num-cpus', '1', '--resources', '{"w": 1}']);
    await must('a node on C', c, ['start', '--address', address, '--num-cpus', '1']);
    const first = JSON.parse(await must('status', c, ['status', '--json'])) as { lease?: { headId: string } };
    const driver = startFixture(c, 'partition-driver.ts', { ...env, STREAM_MS: String(CUT_MS + 5000) }, 'made ');
    const watch = startFixture(c, 'head-watch.ts', { ...env, WATCH_MS: String(CUT_MS + 5000) }, 'watching');
    let cutAt = 0;
    try {
      if ((await driver.ready) !== 'ready') throw new Error(`the driver on C: ${driver.output()}`);
      if ((await watch.ready) !== 'ready') throw new Error(`the watcher on C: ${watch.output()}`);
      a.setLink(false);
      cutAt = Date.now();
      try {
        await new Promise((r) => setTimeout(r, CUT_MS));
      } finally {
        a.setLink(true);
      }
      if ((await driver.exited) !== 0) throw new Error(`the driver on C: ${driver.output()}`);
      if ((await watch.exited) !== 0) throw new Error(`the watcher on C: ${watch.output()}`);
    } finally {
      driver.stop();
      watch.stop();
    }
    const seen = JSON.parse(driver.lastLine()) as { instances: Array<{ host: string; calls: number }>; failed: [] };
    const watched = JSON.parse(watch.lastLine()) as Watched;
    const old = first.lease?.headId;
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
    };
  } finally {
    for (const h of [c, b, a]) await troupeOn(h, ['stop'], defaultTimingsEnv).catch(() => undefined);
    await net.remove();
  }
}
