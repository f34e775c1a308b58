// TLS on two simulated machines (test/helpers/hosts.ts). `troupe start --head` with no flag listens on loopback
// only; opened to the network, its bus is TLS with a CA made at start, and the join line carries the CA's
// fingerprint. B joins with it and runs a task and actor calls across hosts; a wrong fingerprint, a join without one
// and a plain-text client are refused while the cluster keeps serving. A --no-tls cluster's join line says so, and
// a machine connects to an address beyond loopback without a CA only when told to (--no-tls, TROUPE_NO_TLS=1).
import test from 'ava';
import { join } from 'node:path';
import { hostsUnavailable, JOIN_LINE as JOIN, makeHosts, troupeOn, type Host, type Hosts } from '../helpers/hosts.ts';

const why = hostsUnavailable();
const HOME = { TROUPE_HOME: '/tmp/troupe-home', TROUPE_ADDRESS: '', TROUPE_TOKEN: '', TROUPE_TLS_CA: '' };
const checkout = join(import.meta.dirname, '..', '..');
const tsx = import.meta.resolve('tsx');
const driver = join(checkout, 'test', 'fixtures', 'tls-driver.ts');
const lastJson = (out: string) =>
  JSON.parse(
    out
      .trim()
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .pop() ?? 'null',
  );

/** Run on B with node: dials `address` in plain text as a client that has the token would, and prints what the server
 * said and whether it answered PING. */
const plainClient = `
const net = require('node:net');
const [host, port] = process.argv[1].split(':');
const s = net.connect({ host, port: Number(port) });
let seen = '', sent = false;
s.on('data', (d) => {
  seen += d.toString('latin1');
  if (!sent && seen.includes('\\r\\n')) {
    sent = true;
    s.write('CONNECT {"auth_token":' + JSON.stringify(process.argv[2]) + ',"verbose":false,"pedantic":false}\\r\\n');
    s.write('SUB troupe.> 1\\r\\nPING\\r\\n');
  }
});
const done = (how) => {
  console.log(JSON.stringify({ how, info: seen.split('\\r\\n')[0], pong: seen.includes('PONG') }));
  process.exit(0);
};
s.on('close', () => done('closed'));
s.on('error', (e) => done(e.code));
setTimeout(() => done('open'), 8000);
`;

if (why) {
  console.warn(`troupe: the simulated-hosts tests cannot run here: ${why}`);
} else {
  let net: Hosts | undefined;
  let a: Host;
  let b: Host;
  const troupe = (h: Host, args: string[], env: NodeJS.ProcessEnv = {}) => troupeOn(h, args, { ...HOME, ...env });
  const statusNodes = async (h: Host, env: NodeJS.ProcessEnv = {}) => {
    const r = await troupe(h, ['status', '--json'], env);
    if (r.code !== 0) throw new Error(r.stdout + r.stderr);
    return (JSON.parse(r.stdout) as { nodes: { alive: boolean; hostname: string }[] }).nodes;
  };

  test.before(async () => {
    net = await makeHosts(['host-a', 'host-b']);
    [a, b] = net.hosts;
  });
  test.after.always(async () => {
    if (!net) return;
    for (const h of [b, a]) await troupe(h, ['stop']).catch(() => undefined);
    await net.remove();
  });

  test.serial('start --head with no flag listens on loopback only: B cannot connect', async (t) => {
    t.timeout(120_000);
    const head = await troupe(a, ['start', '--head', '--num-cpus', '1']);
    try {
      t.is(head.code, 0, head.stdout + head.stderr);
      t.regex(head.stdout, /listens on 127\.0\.0\.1 only: other machines cannot join/);
      t.regex(head.stdout, /--host 0\.0\.0\.0/);
      t.notRegex(head.stdout, /--ca-sha256/, 'loopback stays plain');
      const [, token, address] = /TROUPE_TOKEN=(\S+) .*start --address (\S+)/.exec(head.stdout) ?? [];
      t.is(address.split(':')[0], '127.0.0.1');
      const port = address.split(':')[1];
      // TROUPE_NO_TLS=1: past the check that B has a CA for the address, to the socket, which nothing answers.
      const fromB = await troupe(b, ['status', '--address', `${a.ip}:${port}`], {
        TROUPE_TOKEN: token,
        TROUPE_NO_TLS: '1',
      });
      t.is(fromB.code, 1, fromB.stdout + fromB.stderr);
      t.regex(fromB.stderr, /cannot reach a troupe cluster at/);
      t.is((await statusNodes(a)).filter((n) => n.alive).length, 1, 'A itself is served');
    } finally {
      t.is((await troupe(a, ['stop'])).code, 0);
    }
  });

  test.serial(
    '--no-tls opens the bus in plain text, with a warning; a machine joins in plain text only if told to',
    async (t) => {
      t.timeout(180_000);
      const head = await troupe(a, ['start', '--head', '--host', a.ip, '--no-tls', '--num-cpus', '1']);
      try {
        t.is(head.code, 0, head.stdout + head.stderr);
        t.regex(head.stderr, /WARNING: --no-tls: .* in plain text; the token and all data travel in clear/);
        const [, token, address] = /TROUPE_TOKEN=(\S+) .*start --address (\S+) --no-tls\n/.exec(head.stdout) ?? [];
        t.is(address?.split(':')[0], a.ip, head.stdout);
        // The server speaks plain text to B (it asks for no TLS); the client's token is no NKEY signature, so it is
        // then refused, which the identity tests cover.
        const plain = await b.run(process.execPath, ['-e', plainClient, address, token]);
        const said = JSON.parse(plain.stdout) as { info: string };
        t.regex(said.info, /^INFO \{/, plain.stdout + plain.stderr);
        t.notRegex(said.info, /"tls_required":true/);
        const refused = await troupe(a, ['start', '--head', '--no-tls', '--tls-cert', 'x']);
        t.is(refused.code, 2, refused.stdout + refused.stderr);

        // Attack, a downgrade: B has no CA for the address and was not told that it is plain, so whoever answers
        // there is not trusted with its credential's signature or its data.
        const blind = await troupe(b, ['start', '--address', address], { TROUPE_TOKEN: token });
        t.is(blind.code, 1, blind.stdout + blind.stderr);
        t.regex(blind.stderr, /no CA for the cluster at \S+, which is beyond loopback: .*--ca-sha256.*--no-tls/);
        // The join line as printed: B joins, and its CLI (the driver credential) then connects in plain text too.
        const node = await troupe(b, ['start', '--address', address, '--no-tls', '--num-cpus', '1'], {
          TROUPE_TOKEN: token,
        });
        t.is(node.code, 0, node.stdout + node.stderr);
        t.is((await statusNodes(b)).filter((n) => n.alive).length, 2);
      } finally {
        t.is((await troupe(b, ['stop'])).code, 0);
        t.is((await troupe(a, ['stop'])).code, 0);
      }
    },
  );

  test.serial(
    'a cluster open to the network is TLS: B joins by fingerprint and runs a task and an actor',
    async (t) => {
      t.timeout(300_000);
      // A new cluster: the earlier tests' (A's state dir: its port, which B knows as plain) forgotten.
      await a.run('rm', ['-rf', '/tmp/troupe-home/state']);
      const head = await troupe(a, ['start', '--head', '--host', '0.0.0.0', '--num-cpus', '1']);
      t.is(head.code, 0, head.stdout + head.stderr);
      const [, token, address, fingerprint] = JOIN.exec(head.stdout) ?? [];
      t.truthy(fingerprint, head.stdout);
      t.is(address.split(':')[0], a.ip, 'the join line names the address B reaches');
      const sha = fingerprint.slice('sha256:'.length);
      const wrong = `sha256:${sha.slice(0, 63)}${sha[63] === '0' ? '1' : '0'}`;

      // Attack: another CA's fingerprint (someone in the middle). Refused before anything starts on B.
      const spoofed = await troupe(b, ['start', '--address', address, '--ca-sha256', wrong], { TROUPE_TOKEN: token });
      t.is(spoofed.code, 1, spoofed.stdout + spoofed.stderr);
      t.regex(spoofed.stderr, /shows no CA with fingerprint sha256:[0-9a-f]{64}: check --ca-sha256/);
      // A TLS cluster joined without a fingerprint or CA: the error says what to pass.
      const blind = await troupe(b, ['start', '--address', address], { TROUPE_TOKEN: token });
      t.is(blind.code, 1, blind.stdout + blind.stderr);
      t.regex(blind.stderr, /no CA for the cluster at \S+, which is beyond loopback: .*--ca-sha256.* --tls-ca FILE/);
      // Attack: a plain-text client that has the token. The server wants TLS first and hangs up; nothing is answered.
      const plain = await b.run(process.execPath, ['-e', plainClient, address, token]);
      t.is(plain.code, 0, plain.stderr);
      const said = JSON.parse(plain.stdout) as { how: string; info: string; pong: boolean };
      t.regex(said.info, /"tls_required":true/);
      t.false(said.pong, plain.stdout);
      // The server hangs up: a FIN, or a reset when our bytes were still unread on its side.
      t.true(['closed', 'ECONNRESET'].includes(said.how), plain.stdout);

      // The join line as printed: discovery, then every connection verified.
      const node = await troupe(
        b,
        ['start', '--address', address, '--ca-sha256', fingerprint, '--resources', '{"b": 4}'],
        {
          TROUPE_TOKEN: token,
        },
      );
      t.is(node.code, 0, node.stdout + node.stderr);
      const saved = await b.run('stat', ['-c', '%a', `/tmp/troupe-home/tls/${address.replace(':', '_')}.pem`]);
      t.is(saved.stdout.trim(), '644', saved.stderr);
      // The CLI on B (the CA saved for the address) and on A (the head's own) see both nodes.
      for (const h of [a, b]) {
        const nodes = await statusNodes(h, h === b ? { TROUPE_ADDRESS: address, TROUPE_TOKEN: token } : {});
        t.deepEqual(
          nodes
            .filter((n) => n.alive)
            .map((n) => n.hostname)
            .sort(),
          ['host-a', 'host-b'],
        );
      }

      // Elsewhere on B (a TROUPE_HOME that has not joined): refused without the CA (before dialling; and by the
      // server's certificate when plain text was allowed), served with TROUPE_TLS_CA.
      const away = { TROUPE_HOME: '/tmp/away', TROUPE_ADDRESS: address, TROUPE_TOKEN: token };
      const untrusted = await troupe(b, ['status', '--json'], away);
      t.is(untrusted.code, 1, untrusted.stdout + untrusted.stderr);
      t.regex(untrusted.stderr, /no CA for the cluster at \S+, which is beyond loopback/);
      const plainAsked = await troupe(b, ['status', '--json'], { ...away, TROUPE_NO_TLS: '1' });
      t.is(plainAsked.code, 1, plainAsked.stdout + plainAsked.stderr);
      t.regex(plainAsked.stderr, /uses TLS and this machine has no CA for it/);
      const caFile = `/tmp/troupe-home/tls/${address.replace(':', '_')}.pem`;
      t.is((await statusNodes(b, { ...away, TROUPE_TLS_CA: caFile })).filter((n) => n.alive).length, 2);

      const run = await a.run(process.execPath, ['--import', tsx, '--conditions=troupe-source', driver], {
        cwd: checkout,
        timeoutMs: 150_000,
        env: HOME,
      });
      t.is(run.code, 0, run.stdout + run.stderr);
      t.notRegex(
        run.stderr,
        /heartbeat thread failed|troupe: lost the cluster/,
        'every connection of the driver verified',
      );
      t.deepEqual(lastJson(run.stdout), { driver: 'host-a', task: 'host-b', actor: 'host-b', twice: 'abab' });
      // A driver on B elsewhere, given the CA by init({ tlsCa }), and a driver credential made on A for it.
      const made = await troupe(a, ['token', 'create', '--role', 'driver', '--name', 'far']);
      t.is(made.code, 0, made.stdout + made.stderr);
      const far = await b.run(process.execPath, ['--import', tsx, '--conditions=troupe-source', driver], {
        cwd: checkout,
        timeoutMs: 150_000,
        env: { ...HOME, ...away, TROUPE_TOKEN: made.stdout.trim(), TLS_CA: caFile },
      });
      t.is(far.code, 0, far.stdout + far.stderr);
      t.like(lastJson(far.stdout), { driver: 'host-b', task: 'host-b', twice: 'abab' });

      // After the attacks, the cluster still serves both machines.
      t.deepEqual((await statusNodes(a)).filter((n) => n.alive).length, 2);
    },
  );
}
