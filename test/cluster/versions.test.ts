// Versions are checked at join, on simulated hosts (test/helpers/hosts.ts): host B's troupe says another version (its
// package.json is replaced by a bind mount in B's own mount namespace, so only B sees it). Its `troupe start
// --address`, its node daemon started directly, its driver and its CLI are refused with both versions named, and a
// node that skips the check and registers anyway is fenced by the head.
import test from 'ava';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { hostsUnavailable, makeHosts, type Host, type Hosts, troupeOn } from '../helpers/hosts.ts';
import { PROTOCOL_VERSION } from '../../runtime/protocol/versions.ts';

const root = join(import.meta.dirname, '..', '..');
const why = hostsUnavailable();
const ours = (JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { version: string }).version;
const OTHER = '9.8.7-other';
const env = { TROUPE_HOME: '/tmp/troupe-home', TROUPE_ADDRESS: '', TROUPE_TOKEN: '' };
const tsx = ['--import', 'tsx', '--conditions=troupe-source'];

if (why) {
  console.warn(`troupe: the simulated-hosts tests cannot run here: ${why}`);
} else {
  let net: Hosts | undefined;
  test.after.always(() => net?.remove());

  const troupe = (h: Host, args: string[], more: NodeJS.ProcessEnv = {}) => troupeOn(h, args, { ...env, ...more });

  test('a node, its daemon, a driver and a CLI of another troupe version are refused, naming both', async (t) => {
    t.timeout(240_000);
    net = await makeHosts(['host-a', 'host-b']);
    const [a, b] = net.hosts;

    // B's troupe install says another version: its package.json, replaced in B's mount namespace only.
    const other = JSON.stringify({ ...JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')), version: OTHER });
    const write = await b.run(process.execPath, [
      '-e',
      `require('fs').writeFileSync('/tmp/package.json', ${JSON.stringify(other)})`,
    ]);
    t.is(write.code, 0, write.stderr);
    const mount = await b.run('mount', ['--bind', '/tmp/package.json', join(root, 'package.json')]);
    t.is(mount.code, 0, mount.stderr);
    t.is((await troupe(b, ['--version'])).stdout.trim(), OTHER);
    t.is((await troupe(a, ['--version'])).stdout.trim(), ours);

    const head = await troupe(a, ['start', '--head', '--host', a.ip, '--num-cpus', '1']);
    t.is(head.code, 0, head.stdout + head.stderr);
    const [, token, address, ca] =
      /TROUPE_TOKEN=(\S+) .*start --address (\S+) --ca-sha256 (\S+)/.exec(head.stdout) ?? [];
    const refusal = new RegExp(
      `runs troupe ${OTHER.replace(/\./g, '\\.')} \\(protocol ${PROTOCOL_VERSION}\\); the head at ` +
        `${address.replace(/\./g, '\\.')} runs troupe ${ours.replace(/\./g, '\\.')} \\(protocol ${PROTOCOL_VERSION}\\)`,
    );

    // troupe start --address: refused before any daemon starts (B has learnt the cluster's CA by then, and the
    // daemon, driver and CLI below use it).
    const node = await troupe(b, ['start', '--address', address, '--ca-sha256', ca, '--num-cpus', '1'], {
      TROUPE_TOKEN: token,
    });
    t.is(node.code, 1, node.stdout + node.stderr);
    t.regex(node.stderr, /^troupe: this node runs troupe/);
    t.regex(node.stderr, refusal);

    // A node daemon started some other way checks too, and exits non-zero.
    const config = {
      role: 'node',
      sessionDir: '/tmp/session',
      options: {
        nodeId: 'bbbbbbbbbbbb',
        address,
        token,
        isHead: false,
        resources: { CPU: 1 },
        sessionDir: '/tmp/session',
        objectStoreRoot: '/dev/shm',
        objectStoreMemory: 64 * 1024 * 1024,
      },
    };
    const daemon = await b.run(process.execPath, [...tsx, join(root, 'runtime', 'cluster', 'daemon.ts'), 'node'], {
      cwd: root,
      timeoutMs: 60_000,
      env: { ...env, TROUPE_DAEMON_CONFIG: JSON.stringify(config) },
    });
    t.is(daemon.code, 1, daemon.stdout + daemon.stderr);
    t.regex(daemon.stderr, /the node daemon failed to start: this node \(host-b\) runs troupe/);
    t.regex(daemon.stderr, refusal);

    // A driver: init() throws VersionMismatchError.
    const driver = await b.run(process.execPath, [...tsx, join(root, 'test', 'fixtures', 'version-driver.ts')], {
      cwd: root,
      timeoutMs: 60_000,
      env: { ...env, TROUPE_ADDRESS: address, TROUPE_TOKEN: token },
    });
    t.is(driver.code, 0, driver.stderr);
    const d = JSON.parse(driver.stdout.trim().split('\n').pop()!);
    t.is(d.name, 'VersionMismatchError');
    t.true(d.typed);
    t.regex(d.message, /^this driver \(host-b\) runs troupe/);
    t.regex(d.message, refusal);

    // The CLI.
    const status = await troupe(b, ['status', '--address', address], { TROUPE_TOKEN: token });
    t.is(status.code, 1, status.stdout + status.stderr);
    t.regex(status.stderr, refusal);

    // An old joiner that skips the check and registers anyway is fenced, and stays DEAD with the cause.
    const old = await b.run(process.execPath, [...tsx, join(root, 'test', 'fixtures', 'skip-hello-node.ts')], {
      cwd: root,
      timeoutMs: 60_000,
      env: { ...env, TROUPE_ADDRESS: address, TROUPE_TOKEN: token },
    });
    t.is(old.code, 0, old.stderr);
    const fenced = JSON.parse(old.stdout.trim().split('\n').pop()!);
    t.regex(String(fenced.answer?.cause), new RegExp(`runs troupe ${OTHER.replace(/\./g, '\\.')}`));

    // On A, the same version: status shows the head's versions, its one node alive and the refused one dead.
    const seen = await troupe(a, ['status', '--json']);
    t.is(seen.code, 0, seen.stderr);
    const s = JSON.parse(seen.stdout) as {
      head: { troupe: string; protocol: number };
      nodes: { nodeId: string; state: string; troupeVersion?: string; cause?: string }[];
    };
    t.deepEqual(s.head, { troupe: ours, protocol: PROTOCOL_VERSION });
    t.deepEqual(
      s.nodes.filter((n) => n.state === 'ALIVE').map((n) => n.troupeVersion),
      [ours],
    );
    const refused = s.nodes.find((n) => n.nodeId === fenced.nodeId);
    t.is(refused?.state, 'DEAD');
    t.regex(refused?.cause ?? '', /install the same troupe on every machine/);
    const human = await troupe(a, ['status']);
    t.regex(human.stdout, new RegExp(`head runs troupe ${ours.replace(/\./g, '\\.')} \\(protocol`));

    const stop = await troupe(a, ['stop']);
    t.is(stop.code, 0, stop.stdout + stop.stderr);
  });
}
