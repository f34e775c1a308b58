// A real network hiccup on simulated hosts (test/helpers/hosts.ts): head and driver on A, a node on B hosting an actor
// and running tasks. During a stream of calls B's link goes down for 3 s. With the default timings the node is only
// SUSPECT for a while: nothing is declared dead, the actor is not restarted, and every call completes right.
import test from 'ava';
import { join } from 'node:path';
import { hostsUnavailable, makeHosts, type Host, type Hosts, troupeOn } from '../helpers/hosts.ts';

const root = join(import.meta.dirname, '..', '..');
const why = hostsUnavailable();
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
/** The default timings: none of the test-shortened ones leak in from the environment. */
const env = {
  TROUPE_HOME: '/tmp/troupe-home',
  TROUPE_ADDRESS: '',
  TROUPE_TOKEN: '',
  TROUPE_NODE_TIMEOUT_MS: '',
  TROUPE_NODE_SUSPECT_MS: '',
  TROUPE_HEARTBEAT_MS: '',
  TROUPE_CLIENT_TIMEOUT_MS: '',
};

if (why) {
  console.warn(`troupe: the simulated-hosts tests cannot run here: ${why}`);
} else {
  let net: Hosts | undefined;
  test.after.always(() => net?.remove());

  const troupe = (h: Host, args: string[], more: NodeJS.ProcessEnv = {}) => troupeOn(h, args, { ...env, ...more });

  test('B loses its link for 3 s mid-stream: suspect only; its actor keeps state, every call answers', async (t) => {
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

    const driver = a.spawn(
      process.execPath,
      ['--import', 'tsx', '--conditions=troupe-source', join(root, 'test', 'fixtures', 'link-loss-driver.ts')],
      { cwd: root, env: { ...env, STREAM_MS: '14000' } },
    );
    let out = '';
    let err = '';
    driver.stderr!.on('data', (d) => {
      err += d;
    });
    const exited = new Promise<number | null>((resolve) => driver.on('close', (code) => resolve(code)));
    const streaming = new Promise<void>((resolve) =>
      driver.stdout!.on('data', (d) => {
        out += d;
        if (out.includes('streaming\n')) resolve();
      }),
    );
    const kill = setTimeout(() => driver.kill('SIGKILL'), 120_000);
    try {
      t.is(
        await Promise.race([streaming.then(() => 'streaming'), exited.then((c) => `exited ${c}`)]),
        'streaming',
        err,
      );
      await sleep(1000); // calls in flight
      b.setLink(false);
      try {
        await sleep(3000);
      } finally {
        b.setLink(true);
      }
      t.is(await exited, 0, out + err);
    } finally {
      clearTimeout(kill);
      driver.kill('SIGKILL');
    }

    const r = JSON.parse(
      out
        .trim()
        .split('\n')
        .filter((l) => l.startsWith('{'))
        .pop()!,
    );
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
    const log = await a.run('sh', ['-c', 'cat /tmp/troupe-home/session_*/logs/head.log']);
    t.regex(log.stdout, /node \w+ is SUSPECT: no heartbeat for \d+ ms/);
    t.regex(log.stdout, /node \w+ is heard again: ALIVE/);
    t.notRegex(log.stdout, /is dead/);

    for (const h of [b, a]) {
      const stop = await troupe(h, ['stop']);
      t.is(stop.code, 0, stop.stdout + stop.stderr);
    }
  });
}
