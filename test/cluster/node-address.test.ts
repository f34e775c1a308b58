// Node addresses on simulated hosts (test/helpers/hosts.ts) where host A has two interfaces: its link to B (eth0, with
// the default route) and another network (192.0.2.0/24). The join line `troupe start --head --host 0.0.0.0`
// prints names the address B reaches and lists the other; B joins with it; status shows each node's address;
// `--node-ip-address` names the one asked for, and a malformed one is refused.
import test from 'ava';
import { hostsUnavailable, makeHosts, type Host, type Hosts, troupeOn } from '../helpers/hosts.ts';

const why = hostsUnavailable();
const env = { TROUPE_HOME: '/tmp/troupe-home', TROUPE_ADDRESS: '', TROUPE_TOKEN: '' };
/** On A's second network: an address of a namespace this test made, never sent to. */
const OTHER_IP = '192.0.2.10';

if (why) {
  console.warn(`troupe: the simulated-hosts tests cannot run here: ${why}`);
} else {
  let net: Hosts | undefined;
  test.after.always(() => net?.remove());

  const troupe = (h: Host, args: string[], more: NodeJS.ProcessEnv = {}) => troupeOn(h, args, { ...env, ...more });
  const ok = async (h: Host, cmd: string, args: string[]) => {
    const r = await h.run(cmd, args);
    if (r.code !== 0) throw new Error(`${cmd} ${args.join(' ')} on ${h.name}: ${r.stderr}`);
  };
  const statusNodes = async (h: Host) => {
    const r = await troupe(h, ['status', '--json']);
    if (r.code !== 0) throw new Error(r.stdout + r.stderr);
    return (JSON.parse(r.stdout) as { nodes: { state: string; hostname: string; address?: string }[] }).nodes;
  };

  test('on a host with two interfaces the join line names the one B reaches; B joins with it', async (t) => {
    t.timeout(240_000);
    net = await makeHosts(['host-a', 'host-b']);
    const [a, b] = net.hosts;
    // A second interface (a veth pair, both ends inside A: not every kernel has the dummy type).
    await ok(a, 'ip', ['link', 'add', 'extra0', 'type', 'veth', 'peer', 'name', 'extra1']);
    await ok(a, 'ip', ['addr', 'add', `${OTHER_IP}/24`, 'dev', 'extra0']);
    for (const dev of ['extra0', 'extra1']) await ok(a, 'ip', ['link', 'set', dev, 'up']);
    await ok(a, 'ip', ['route', 'add', 'default', 'dev', 'eth0']);

    const bad = await troupe(a, ['start', '--head', '--node-ip-address', '10.0.0']);
    t.is(bad.code, 2, bad.stdout + bad.stderr);
    t.regex(bad.stderr, /--node-ip-address must be an IP address such as 10\.0\.0\.5, got "10\.0\.0"/);

    // --host 0.0.0.0: the bus listens everywhere; the join line names the default route's address and lists the other.
    const head = await troupe(a, ['start', '--head', '--host', '0.0.0.0', '--num-cpus', '1']);
    t.is(head.code, 0, head.stdout + head.stderr);
    const [, token, address, ca] =
      /TROUPE_TOKEN=(\S+) .*start --address (\S+) --ca-sha256 (\S+)/.exec(head.stdout) ?? [];
    const port = address.split(':')[1];
    t.is(address, `${a.ip}:${port}`, head.stdout);
    t.regex(head.stdout, new RegExp(`from another network, use one of: ${OTHER_IP.replace(/\./g, '\\.')}:${port}\\)`));

    const node = await troupe(b, ['start', '--address', address, '--ca-sha256', ca, '--num-cpus', '1'], {
      TROUPE_TOKEN: token,
    });
    t.is(node.code, 0, node.stdout + node.stderr);
    t.regex(node.stdout, new RegExp(`\\(${b.ip.replace(/\./g, '\\.')}\\) joined`));
    const nodes = await statusNodes(a);
    t.deepEqual(
      nodes.map((n) => [n.hostname, n.state, n.address]).sort(),
      [
        ['host-a', 'ALIVE', a.ip],
        ['host-b', 'ALIVE', b.ip],
      ],
      JSON.stringify(nodes),
    );
    const human = await troupe(a, ['status']);
    t.regex(human.stdout, /ADDRESS/);
    t.regex(human.stdout, new RegExp(`host-b +${b.ip.replace(/\./g, '\\.')}`));
    for (const h of [b, a]) t.is((await troupe(h, ['stop'])).code, 0);

    // --node-ip-address names what it is told, in the join line and in status (alone, it opens every interface). The
    // same cluster as before (the head's state dir), so the nodes that stopped are listed, DEAD.
    const named = await troupe(a, ['start', '--head', '--num-cpus', '1', '--node-ip-address', OTHER_IP]);
    t.is(named.code, 0, named.stdout + named.stderr);
    t.regex(
      named.stdout,
      new RegExp(`start --address ${OTHER_IP.replace(/\./g, '\\.')}:\\d+ --ca-sha256 sha256:\\w+\\n`),
    );
    t.regex(named.stdout, new RegExp(`use one of: ${a.ip.replace(/\./g, '\\.')}:\\d+\\)`));
    t.deepEqual(
      (await statusNodes(a)).filter((n) => n.state === 'ALIVE').map((n) => n.address),
      [OTHER_IP],
    );
    t.is((await troupe(a, ['stop'])).code, 0);
  });
}
