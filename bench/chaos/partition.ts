// Run (h) of `npm run chaos`: a worker machine cut off for 10 s, then healed, on simulated hosts
// (test/helpers/hosts.ts, as in test/cluster/link-loss.test.ts): A runs the head and a driver calling an actor on B
// every 100 ms; C joins. B's link goes down past a 4 s node timeout. The actor must be restarted on C once and never
// answer from both; healed, B must join again. Needs root and `ip netns`; says why it was skipped otherwise.
import {
  defaultTimingsEnv,
  hostsUnavailable,
  makeHosts,
  startFixture,
  troupeOn,
  type Host,
} from '../../test/helpers/hosts.ts';

const CUT_MS = 10_000;
const NODE_TIMEOUT_MS = 4000;
const env = defaultTimingsEnv;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface Seen {
  instances: Array<{ host: string; pid: number; calls: number; from: number; to: number }>;
  failed: string[];
}

export async function partitionWorker(): Promise<Record<string, number | string | boolean>> {
  const why = hostsUnavailable();
  if (why) return { skipped: why };
  const net = await makeHosts(['host-a', 'host-b', 'host-c']);
  const [a, b, c] = net.hosts;
  const troupe = (h: Host, args: string[], more: NodeJS.ProcessEnv = {}) => troupeOn(h, args, { ...env, ...more });
  const must = async (what: string, run: Promise<{ code: number | null; stdout: string; stderr: string }>) => {
    const r = await run;
    if (r.code !== 0) throw new Error(`${what}: ${r.stdout}${r.stderr}`);
    return r.stdout;
  };
  try {
    const head = await must(
      'start --head on A',
      troupe(a, ['start', '--head', '--host', a.ip, '--num-cpus', '1', '--node-timeout-ms', String(NODE_TIMEOUT_MS)]),
    );
    const [, token, address, ca] = /TROUPE_TOKEN=(\S+) .*start --address (\S+) --ca-sha256 (\S+)/.exec(head) ?? [];
    const join = (h: Host) =>
      must(
        `start --address on ${h.name}`,
        troupe(h, ['start', '--address', address, '--ca-sha256', ca, '--num-cpus', '1', '--resources', '{"w": 1}'], {
          TROUPE_TOKEN: token,
        }),
      );
    await join(b);
    const driver = startFixture(a, 'partition-driver.ts', { ...env, STREAM_MS: '22000' }, 'made ');
    let cutAt = 0;
    try {
      if ((await driver.ready) !== 'ready') throw new Error(`the driver on A: ${driver.output()}`);
      await join(c);
      ({ cutAt } = await b.cutOff(CUT_MS));
      if ((await driver.exited) !== 0) throw new Error(`the driver on A: ${driver.output()}`);
    } finally {
      driver.stop();
    }
    const seen = JSON.parse(driver.lastLine()) as Seen;
    const onB = seen.instances.filter((i) => i.host === 'host-b');
    const onC = seen.instances.filter((i) => i.host === 'host-c');
    // Healed: B is told it was fenced and joins again; its old instance is gone.
    let rejoinedMs = -1;
    for (const until = Date.now() + 30_000; Date.now() < until; await sleep(200)) {
      const s = JSON.parse((await troupe(a, ['status', '--json'])).stdout) as { nodes: Array<{ state: string }> };
      if (s.nodes.filter((n) => n.state === 'ALIVE').length === 3) {
        rejoinedMs = Date.now() - (cutAt + CUT_MS);
        break;
      }
    }
    const oldGone = (await b.run('kill', ['-0', String(onB[0]?.pid)])).code !== 0;
    return {
      cut_s: CUT_MS / 1000,
      node_timeout_ms: NODE_TIMEOUT_MS,
      calls: seen.instances.reduce((n, i) => n + i.calls, 0),
      calls_failed: seen.failed.length,
      instances: seen.instances.map((i) => i.host).join(' then '),
      answered_on_b_after_c_started: onB.some((i) => onC.some((j) => i.to > j.from)),
      served_on_c_after_cut_ms: onC.length ? onC[0].from - cutAt : -1,
      old_instance_on_b_stopped: oldGone,
      b_alive_again_after_heal_ms: rejoinedMs,
    };
  } finally {
    for (const h of [c, b, a]) await troupe(h, ['stop']).catch(() => undefined);
    await net.remove();
  }
}
