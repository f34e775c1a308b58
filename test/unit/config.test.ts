import test, { type ExecutionContext } from 'ava';
import { chmodSync, mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { networkInterfaces, tmpdir } from 'node:os';
import { join } from 'node:path';
import { TlsTrustError, UsageError } from '../../runtime/base/errors.ts';
import {
  clusterCa,
  clusterFilePath,
  hostOf,
  hostsOf,
  nearestServersFirst,
  parseAddress,
  plainAllowed,
  readClusterFile,
  saveCa,
  serverUrls,
  trustPlain,
  writeClusterFile,
  type ClusterFile,
} from '../../runtime/base/config.ts';
import { Bus } from '../../runtime/bus/bus.ts';

const accepted: Array<[string, string]> = [
  ['head-node:4222', 'nats://head-node:4222'],
  ['127.0.0.1:4222', 'nats://127.0.0.1:4222'],
  ['nats://h:1', 'nats://h:1'],
  ['tls://h:2', 'tls://h:2'],
  ['[::1]:4222', 'nats://[::1]:4222'],
];
for (const [input, url] of accepted) {
  test(`parseAddress accepts ${JSON.stringify(input)}`, (t) => {
    const out = parseAddress(input);
    t.is(out, url);
    t.regex(new URL(out).protocol, /^(nats|tls):$/);
  });
}

for (const bad of ['', 'localhost', 'host:0', 'host:70000', 'http://h:1', 'a b:1']) {
  test(`parseAddress rejects ${JSON.stringify(bad)}`, (t) => {
    const err = t.throws(() => parseAddress(bad), { instanceOf: UsageError });
    t.true(err?.message.includes(JSON.stringify(bad)), err?.message);
    t.true(err?.message.includes('host:port'), err?.message);
  });
}

test('an address may list the servers of a NATS cluster, comma-separated: each is checked', (t) => {
  const list = 'a:1, tls://b:2,[::1]:3';
  t.is(parseAddress(list), 'nats://a:1,tls://b:2,nats://[::1]:3');
  t.deepEqual(serverUrls(list), ['nats://a:1', 'tls://b:2', 'nats://[::1]:3']);
  t.deepEqual(hostsOf(list), ['a', 'b', '::1']);
  t.is(hostOf(list), 'a');
  for (const bad of ['a:1,', 'a:1,,b:2', 'a:1,b'])
    t.throws(() => parseAddress(bad), { instanceOf: UsageError, message: /invalid cluster address/ }, bad);
});

test("a process tries this machine's servers first, when the list has others too", (t) => {
  // Documentation addresses this machine does not have (nothing is dialled here).
  const mine = new Set(Object.values(networkInterfaces()).flatMap((as) => (as ?? []).map((a) => a.address)));
  const [a, b] = ['203.0.113.1', '203.0.113.2', '198.51.100.1', '198.51.100.2'].filter((ip) => !mine.has(ip));
  t.deepEqual(nearestServersFirst(`${a}:4222,127.0.0.1:4223,${b}:4222`), {
    servers: ['nats://127.0.0.1:4223', `nats://${a}:4222`, `nats://${b}:4222`],
    inOrder: true,
    local: ['nats://127.0.0.1:4223'],
  });
  for (const spread of [`${a}:1,${b}:2`, '127.0.0.1:1,127.0.0.1:2', '127.0.0.1:1'])
    t.false(nearestServersFirst(spread).inOrder, `${spread}: nats.js's random order`);
});

/** Points TROUPE_HOME at a not-yet-existing dir inside a fresh temp dir; restores it afterwards. */
function freshHome(t: ExecutionContext): string {
  const dir = mkdtempSync(join(tmpdir(), 'troupe-config-test-'));
  const saved = process.env.TROUPE_HOME;
  const home = join(dir, 'home');
  process.env.TROUPE_HOME = home;
  t.teardown(() => {
    if (saved === undefined) delete process.env.TROUPE_HOME;
    else process.env.TROUPE_HOME = saved;
    rmSync(dir, { recursive: true, force: true });
  });
  return home;
}

const info: ClusterFile = {
  address: 'nats://127.0.0.1:4222',
  token: 'secret-token',
  sessionDir: '/tmp/troupe/session-1',
  localNode: { nodeId: 'node-1', objectDir: '/tmp/troupe/objects' },
  startedAt: '2024-01-01T00:00:00.000Z',
};

test.serial('readClusterFile returns undefined when there is no file', (t) => {
  freshHome(t);
  t.is(readClusterFile(), undefined);
});

test.serial('writeClusterFile / readClusterFile round-trip, private to the user', (t) => {
  const home = freshHome(t);
  writeClusterFile(info);
  t.is(clusterFilePath(), join(home, 'current-cluster.json'));
  t.deepEqual(readClusterFile(), info);
  t.is(statSync(clusterFilePath()).mode & 0o777, 0o600);
  t.is(statSync(home).mode & 0o777, 0o700);
  t.deepEqual(readdirSync(home), ['current-cluster.json'], 'no temp file left behind');
});

test.serial('writeClusterFile replaces a world-readable file with a 0600 one', (t) => {
  freshHome(t);
  writeClusterFile(info);
  chmodSync(clusterFilePath(), 0o644);
  t.is(statSync(clusterFilePath()).mode & 0o777, 0o644);
  writeClusterFile({ ...info, token: 'new-token' });
  t.is(statSync(clusterFilePath()).mode & 0o777, 0o600);
  t.is(readClusterFile()?.token, 'new-token');
});

test.serial('readClusterFile throws UsageError on invalid JSON', (t) => {
  freshHome(t);
  writeClusterFile(info);
  writeFileSync(clusterFilePath(), '{ not json');
  const err = t.throws(() => readClusterFile(), { instanceOf: UsageError });
  t.true(err?.message.includes(clusterFilePath()));
});

test.serial(
  'beyond loopback, a connection without a CA is plain only where --no-tls or TROUPE_NO_TLS=1 said so',
  async (t) => {
    freshHome(t);
    const saved = process.env.TROUPE_NO_TLS;
    t.teardown(() => {
      if (saved === undefined) delete process.env.TROUPE_NO_TLS;
      else process.env.TROUPE_NO_TLS = saved;
    });
    delete process.env.TROUPE_NO_TLS;
    for (const a of ['127.0.0.1:4222', 'localhost:1', '[::1]:4222']) t.true(plainAllowed(a), a);
    const far = '10.99.0.1:4222';
    t.false(plainAllowed(far));
    t.true(plainAllowed('127.0.0.1:4222,[::1]:4223'), 'a list of loopback servers');
    t.false(plainAllowed(`127.0.0.1:4222,${far}`), 'a list with one server beyond loopback');
    // Refused before anything is dialled. 0.0.0.0 is not loopback to this check, and were it dialled by mistake the
    // connection would still stay on this machine (port 1: refused).
    const err = await t.throwsAsync(Bus.connect({ address: '0.0.0.0:1', token: 'x', name: 'test' }), {
      instanceOf: TlsTrustError,
    });
    t.regex(err?.message ?? '', /no CA for the cluster at 0\.0\.0\.0:1, which is beyond loopback: .*--ca-sha256/);
    t.regex(err?.message ?? '', /--no-tls, or set TROUPE_NO_TLS=1/);

    trustPlain([far]);
    t.true(plainAllowed(far));
    t.false(plainAllowed('10.99.0.1:4223'), 'another port is another cluster');
    saveCa([far], 'PEM');
    t.false(plainAllowed(far), 'a CA saved later (a TLS cluster at the port now) replaces the plain trust');
    t.is(clusterCa(far), 'PEM');
    trustPlain([far]);
    t.is(clusterCa(far), undefined, 'and --no-tls forgets the CA');
    process.env.TROUPE_NO_TLS = '1';
    t.true(plainAllowed('10.99.0.2:4222'));
  },
);
