// Two simulated machines (test/helpers/hosts.ts): `troupe start --head` on host A, `troupe start --address` on host
// B, and a driver on A whose tasks, nested tasks, actor and a 50 MB object reach B. The repository is at the same path
// on both (issue 21 ships code to hosts that lack it; this is the network and the daemons across machines).
import test from 'ava';
import { join } from 'node:path';
import { hostsUnavailable, makeHosts, type Host, type Hosts } from '../helpers/hosts.ts';

const root = join(import.meta.dirname, '..', '..');
const cli = join(root, 'runtime', 'cli', 'troupe.mjs');
const why = hostsUnavailable();

if (why) {
  console.warn(`troupe: the simulated-hosts tests cannot run here: ${why}`);
} else {
  let net: Hosts | undefined;
  test.after.always(() => net?.remove());

  const troupe = (h: Host, args: string[], env: NodeJS.ProcessEnv = {}) =>
    h.run(process.execPath, [cli, ...args], {
      cwd: root,
      timeoutMs: 90_000,
      env: { TROUPE_HOME: '/tmp/troupe-home', TROUPE_ADDRESS: '', TROUPE_TOKEN: '', ...env },
    });

  test('head on A, node on B: tasks, nested tasks, an actor and a 50 MB object made on A reach B', async (t) => {
    t.timeout(180_000);
    net = await makeHosts(['host-a', 'host-b']);
    const [a, b] = net.hosts;
    t.not(a.ip, b.ip);

    const head = await troupe(a, ['start', '--head', '--host', a.ip, '--num-cpus', '2']);
    t.is(head.code, 0, head.stdout + head.stderr);
    const joinLine = /TROUPE_TOKEN=(\S+) .*start --address (\S+)/.exec(head.stdout);
    t.truthy(joinLine, head.stdout);
    const [, token, address] = joinLine!;
    t.is(address.split(':')[0], a.ip, 'the join line names the address other machines reach');

    const node = await troupe(b, ['start', '--address', address, '--num-cpus', '2', '--resources', '{"b": 4}'], {
      TROUPE_TOKEN: token,
    });
    t.is(node.code, 0, node.stdout + node.stderr);
    const status = await troupe(a, ['status', '--json']);
    t.is(status.code, 0, status.stderr);
    const nodes = (JSON.parse(status.stdout) as { nodes: { alive: boolean; hostname?: string }[] }).nodes;
    t.is(nodes.filter((n) => n.alive).length, 2, status.stdout);

    const driver = await a.run(
      process.execPath,
      ['--import', 'tsx', '--conditions=troupe-source', join(root, 'test', 'fixtures', 'hosts-driver.ts')],
      { cwd: root, timeoutMs: 120_000, env: { TROUPE_HOME: '/tmp/troupe-home', TROUPE_ADDRESS: '', TROUPE_TOKEN: '' } },
    );
    t.is(driver.code, 0, driver.stdout + driver.stderr);
    const r = JSON.parse(
      driver.stdout
        .trim()
        .split('\n')
        .filter((l) => l.startsWith('{'))
        .pop()!,
    );
    t.is(r.driver, 'host-a');
    t.is(r.task, 'host-b');
    t.is(r.nested[0], 'host-b');
    t.true(['host-a', 'host-b'].includes(r.nested[1]));
    t.deepEqual(r.sum, { host: 'host-b', length: 12_500_000, sum: 12_500_000 });
    t.is(r.actor, 'host-b');

    for (const h of [b, a]) {
      const stop = await troupe(h, ['stop']);
      t.is(stop.code, 0, stop.stdout + stop.stderr);
    }
  });
}
