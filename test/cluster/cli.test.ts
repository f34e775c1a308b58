// The troupe CLI with real detached daemons: a head and two node daemons, status, list, stop, bad input.
import test from 'ava';
import { existsSync, readFileSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { spawn } from 'node:child_process';
import { runCommand, tempDir, processesWithHome, isAlive, terminate, eventually } from '../helpers/cluster.ts';

const cli = join(import.meta.dirname, '..', '..', 'runtime', 'cli', 'troupe.mjs');

test('start a head and two nodes, see them in status and list, stop them all', async (t) => {
  const home = tempDir(t);
  const otherHome = tempDir(t); // stands for another machine: no current-cluster file there
  const troupe = (...args: string[]) =>
    runCommand(process.execPath, [cli, ...args], { env: { TROUPE_HOME: home, TROUPE_TOKEN: '' } });
  // Whatever happens, nothing outlives the test.
  t.teardown(async () => {
    for (const h of [otherHome, home]) {
      await runCommand(process.execPath, [cli, 'stop'], { env: { TROUPE_HOME: h } });
      for (const pid of processesWithHome(h)) await terminate(pid, 1000);
    }
  });

  const head = await troupe('start', '--head', '--host', '127.0.0.1', '--num-cpus', '1', '--object-store-dir', home);
  t.is(head.code, 0, head.stderr);
  t.regex(head.stdout, /troupe head started/);
  // Started as root without --worker-user, it says that jobs' code runs as root, and how not to.
  t.is(/WARNING: started as root.*--worker-user USER/s.test(head.stderr), process.geteuid?.() === 0, head.stderr);
  const clusterFile = join(home, 'current-cluster.json');
  t.is(statSync(clusterFile).mode & 0o777, 0o600);
  const { address } = JSON.parse(readFileSync(clusterFile, 'utf8')) as { address: string };
  // The join line carries the node credential (the current-cluster file keeps the driver one).
  const token = /TROUPE_TOKEN=(\S+) /.exec(head.stdout)![1];

  // The second node finds the join credential in the head's session dir; the third gets it from TROUPE_TOKEN, as on
  // another machine.
  const n1 = await troupe(
    'start',
    '--address',
    address,
    '--num-cpus',
    '2',
    '--num-gpus',
    '2',
    '--object-store-dir',
    home,
  );
  t.is(n1.code, 0, n1.stderr);
  const n2 = await runCommand(
    process.execPath,
    [cli, 'start', '--address', address, '--num-cpus', '1', '--resources', '{"ssd": 2}', '--object-store-dir', home],
    { env: { TROUPE_HOME: otherHome, TROUPE_TOKEN: token } },
  );
  t.is(n2.code, 0, n2.stderr);

  const status = await troupe('status', '--json');
  t.is(status.code, 0, status.stderr);
  const s = JSON.parse(status.stdout) as {
    nodes: Array<{
      alive: boolean;
      total: Record<string, number>;
      isHead: boolean;
      workersRunAs: { user: string; uid: number };
    }>;
  };
  const uid = process.geteuid?.();
  t.deepEqual(
    s.nodes.map((n) => n.workersRunAs.uid),
    [uid, uid, uid],
    'no --worker-user: workers run as the daemons',
  );
  t.is(s.nodes.filter((n) => n.alive).length, 3);
  t.is(s.nodes.filter((n) => n.isHead).length, 1);
  t.is(
    s.nodes.reduce((a, n) => a + (n.total.GPU ?? 0), 0),
    2,
  );
  t.is(
    s.nodes.reduce((a, n) => a + (n.total.CPU ?? 0), 0),
    4,
  );
  t.is(
    s.nodes.reduce((a, n) => a + (n.total.ssd ?? 0), 0),
    2,
  );

  const human = await troupe('status');
  t.regex(human.stdout, /Nodes: 3 alive, 0 dead/);
  const asRootWarnings = human.stdout.match(/WARNING: node \w+ \(\S+\) runs jobs' code as root/g) ?? [];
  t.is(asRootWarnings.length, uid === 0 ? 3 : 0, human.stdout);
  t.regex(human.stdout, /GPU 0\/2/);
  const list = await troupe('list', 'nodes', '--json');
  t.is((JSON.parse(list.stdout) as unknown[]).length, 3);
  t.is((await troupe('list', 'actors')).stdout.trim(), 'no actors');

  // Bad input: a clear error, exit code 2, and the daemons keep running.
  const unknownFlag = await troupe('start', '--head', '--bogus');
  t.is(unknownFlag.code, 2);
  t.regex(unknownFlag.stderr, /Unknown option '--bogus'/);
  const badAddress = await troupe('start', '--address', 'not-an-address');
  t.is(badAddress.code, 2);
  t.regex(badAddress.stderr, /invalid cluster address "not-an-address"/);
  const badResources = await troupe('start', '--address', address, '--resources', '{oops');
  t.is(badResources.code, 2);
  t.regex(badResources.stderr, /--resources must be a JSON object/);
  const badCpus = await troupe('start', '--head', '--num-cpus', 'many');
  t.is(badCpus.code, 2);
  t.regex(badCpus.stderr, /--num-cpus must be a non-negative number/);
  const badStore = await troupe('start', '--address', address, '--object-store-memory', '10XB');
  t.is(badStore.code, 2);
  t.regex(badStore.stderr, /--object-store-memory must be a byte count such as 512MB/);
  t.is((await troupe('start', '--address', address, '--no-spill', '--spill-dir', home)).code, 2);
  const noSuchUser = await troupe('start', '--address', address, '--worker-user', 'no-such-user-here');
  t.is(noSuchUser.code, 2);
  t.regex(noSuchUser.stderr, /--worker-user: no user no-such-user-here on this machine/);
  const asRoot = await troupe('start', '--address', address, '--worker-user', 'root');
  t.is(asRoot.code, 2);
  t.regex(asRoot.stderr, /workers must not run as root/);
  const loopbackBus = await troupe('start', '--head', '--bus-peers', '192.0.2.6,192.0.2.7');
  t.is(loopbackBus.code, 2);
  t.regex(loopbackBus.stderr, /--bus-peers needs the TLS troupe sets up itself.*pass --host/);
  const evenBus = await troupe('start', '--head', '--host', '0.0.0.0', '--bus-peers', '192.0.2.6');
  t.is(evenBus.code, 2);
  t.regex(evenBus.stderr, /--bus-peers names 2 or 4 other machines .*got 1/);
  const selfBus = await troupe('start', '--head', '--host', '0.0.0.0', '--bus-peers', '127.0.0.1,192.0.2.7');
  t.is(selfBus.code, 2);
  t.regex(selfBus.stderr, /127\.0\.0\.1 is this one/);
  const notListed = await troupe('start', '--address', address, '--data-dir', join(home, 'bus'));
  t.is(notListed.code, 2);
  t.regex(notListed.stderr, /--data-dir on a joining machine is for one of the bus's servers/);
  t.is((await troupe('list', 'everything')).code, 2);
  t.is((await troupe('frobnicate')).code, 2);
  const wrongToken = await runCommand(process.execPath, [cli, 'status', '--address', address], {
    env: { TROUPE_HOME: home, TROUPE_TOKEN: 'wrong' },
  });
  t.is(wrongToken.code, 1);
  t.regex(wrongToken.stderr, /refused the token/);
  t.regex((await troupe('status')).stdout, /Nodes: 3 alive/);

  // Credentials: one made for the read-only cli role reads the status but cannot submit a job; revoked, it is refused.
  const made = await troupe('token', 'create', '--role', 'cli', '--name', 'ops');
  t.is(made.code, 0, made.stderr);
  t.regex(made.stdout, /^SA[A-Z2-7]{56}\.A[A-Z2-7]{55}\n$/, 'the credential alone on stdout');
  const asOps = (...args: string[]) =>
    runCommand(process.execPath, [cli, ...args, '--address', address], {
      env: { TROUPE_HOME: otherHome, TROUPE_TOKEN: made.stdout.trim() },
    });
  t.regex((await asOps('status')).stdout, /Nodes: 3 alive/);
  const submit = await runCommand(process.execPath, [cli, 'job', 'submit', '--address', address, '--', 'true'], {
    env: { TROUPE_HOME: otherHome, TROUPE_TOKEN: made.stdout.trim() },
  });
  t.not(submit.code, 0);
  t.regex(submit.stderr, /may not send|permissions? violation/i);
  const listed = await troupe('token', 'list', '--json');
  const rows = JSON.parse(listed.stdout) as Array<{ name: string; role: string; seed?: string }>;
  t.like(
    rows.find((r) => r.name === 'ops'),
    { role: 'cli' },
  );
  t.false(listed.stdout.includes('"seed"'), 'list shows no credential');
  t.is((await troupe('token', 'revoke', 'ops')).code, 0);
  t.regex((await asOps('status')).stderr, /refused the token/);
  t.is((await troupe('token', 'revoke', 'worker')).code, 2, 'the built-in worker identity stays');

  // A standby head, on "another machine", with a head credential; the head started first leads.
  const noToken = await runCommand(process.execPath, [cli, 'start', '--head', '--address', address], {
    env: { TROUPE_HOME: otherHome, TROUPE_TOKEN: '' },
  });
  t.is(noToken.code, 2);
  t.regex(noToken.stderr, /a standby head needs a head credential \('troupe token create --role head'/);
  const headToken = (await troupe('token', 'create', '--role', 'head', '--name', 'standby')).stdout.trim();
  const standby = await runCommand(process.execPath, [cli, 'start', '--head', '--address', address], {
    env: { TROUPE_HOME: otherHome, TROUPE_TOKEN: headToken },
  });
  t.is(standby.code, 0, standby.stderr);
  t.regex(standby.stdout, /troupe standby head for \S+ started/);
  const withStandby = (await troupe('status')).stdout;
  t.regex(withStandby, /Leading head: \w+ on .* \(pid \d+\), term 1/);
  // One nats-server keeps one copy: the three asked for fall back to one.
  t.regex(withStandby, /^Bus: one nats-server; cluster state R1$/m);

  const pids = [...processesWithHome(home), ...processesWithHome(otherHome)];
  t.true(pids.length >= 6); // nats-server, head, three node daemons, their workers
  const stopOther = await runCommand(process.execPath, [cli, 'stop'], { env: { TROUPE_HOME: otherHome } });
  t.regex(stopOther.stdout, /Stopped 2 troupe processes/); // the node daemon, the standby head
  const stop = await troupe('stop');
  t.is(stop.code, 0);
  t.regex(stop.stdout, /Stopped 4 troupe processes/); // two node daemons, the head, nats-server
  t.deepEqual(pids.filter(isAlive), []); // workers went with their node daemons
  t.deepEqual(readdirSync(join(home, 'run')), []);
  const after = await troupe('status');
  t.not(after.code, 0);
  t.regex(after.stderr, /no cluster found/);
});

test('start --block exits with code 1 when one of its daemons dies, stopping the others (for systemd)', async (t) => {
  const home = tempDir(t);
  t.teardown(async () => {
    for (const pid of processesWithHome(home)) await terminate(pid, 1000);
  });
  const env = { ...process.env, TROUPE_HOME: home, TROUPE_TOKEN: '' };
  const args = [cli, ...'start --head --host 127.0.0.1 --num-cpus 1 --block'.split(' '), '--object-store-dir', home];
  const blocking = spawn(process.execPath, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  let stdout = '';
  blocking.stderr.on('data', (d) => {
    stderr += d;
  });
  blocking.stdout.on('data', (d) => {
    stdout += d;
  });
  const ended = new Promise<number | null>((r) => blocking.once('exit', r));
  t.teardown(() => blocking.kill('SIGKILL'));
  const runs = () => readdirSync(join(home, 'run'), { withFileTypes: true }).map((f) => f.name);
  // Killed only once start is over: a daemon dying during start is start's failure, tested in startup.test.ts.
  await eventually('start to finish', async () => stdout.includes('Running in the foreground') || undefined, 60_000);
  const daemons = processesWithHome(home).filter((pid) => pid !== blocking.pid);
  // Its run file, not one being rewritten beside it (node-<pid>.json.<pid>.tmp, see writePrivateFile). The node
  // writes it once its start() returns, which may be just after the head counted it alive and start went on (once in
  // CI only the head's was there yet).
  const node = await eventually(
    "the node's run file",
    async () => {
      const pid = Number(
        runs()
          .map((n) => /^node-(\d+)\.json$/.exec(n)?.[1])
          .find(Boolean),
      );
      if (pid > 0) return pid;
      throw new Error(runs().join(' '));
    },
    10_000,
  );
  process.kill(node, 'SIGKILL');
  t.is(await ended, 1, stderr);
  t.regex(stderr, new RegExp(`daemon process ${node} exited`));
  // Its workers follow their node (they exit with their parent) a moment later.
  await eventually('the head, nats-server and the workers to stop', async () => daemons.every((pid) => !isAlive(pid)));
});

test('a head started again is the same cluster: port, credentials, CA, actors, kept in its state dir', async (t) => {
  t.timeout(120_000);
  const home = tempDir(t);
  const env = { TROUPE_HOME: home, TROUPE_TOKEN: '' };
  const troupe = (...args: string[]) => runCommand(process.execPath, [cli, ...args], { env });
  t.teardown(async () => {
    await troupe('stop');
    for (const pid of processesWithHome(home)) await terminate(pid, 1000);
  });
  // Every interface, so the bus is TLS and the join line names the CA. Nothing here connects beyond loopback.
  const flags = ['--host', '0.0.0.0', '--num-cpus', '1', '--object-store-dir', home, '--node-timeout-ms', '3000'];
  // No --data-dir: the default, which is not a new session dir in the temp dir (here TROUPE_HOME's state dir).
  const startHead = async () => {
    const r = await troupe('start', '--head', ...flags);
    t.is(r.code, 0, r.stderr);
    t.regex(r.stdout, new RegExp(`state in ${join(home, 'state', 'head')}\\b`));
    return /TROUPE_TOKEN=(\S+) .*start --address (\S+) --ca-sha256 (\S+)/.exec(r.stdout)!.slice(1);
  };
  const driver = (what: string) =>
    runCommand(
      process.execPath,
      ['--import', 'tsx', '--conditions=troupe-source', 'test/fixtures/kept-actor.ts', what],
      {
        env,
      },
    ).then((r) => {
      t.is(r.code, 0, r.stderr);
      return JSON.parse(r.stdout.trim().split('\n').pop()!) as { actorId: string; value: number };
    });
  const joinLine = await startHead();
  const made = await driver('make');
  t.is(made.value, 42);
  t.is((await troupe('stop')).code, 0);
  t.deepEqual(await startHead(), joinLine, 'the same join token, address and CA');
  t.regex(
    (await troupe('start', '--head', ...flags)).stderr,
    /a head \(pid \d+\) already runs on .*'troupe stop' first/,
  );
  // Its record survived: the actor is started again (its old node is gone) and found by name.
  t.deepEqual(await driver('read'), made);
  t.is((await troupe('stop')).code, 0);

  // Flags that would cut the machines that joined it off are refused, before anything starts.
  const port = joinLine[1].split(':').pop();
  const otherPort = await troupe('start', '--head', ...flags, '--port', String(Number(port) + 1));
  t.is(otherPort.code, 2, otherPort.stderr);
  t.regex(otherPort.stderr, new RegExp(`bus listens on port ${port}: start it on that port, or start a new cluster`));
  const plain = await troupe('start', '--head', ...flags, '--no-tls');
  t.is(plain.code, 2, plain.stderr);
  t.regex(plain.stderr, /uses TLS: the machines that joined it trust its CA and refuse plain text/);
  // --fresh: a new cluster (new credentials and CA), the old one moved aside, not lost.
  const fresh = await troupe('start', '--head', ...flags, '--fresh');
  t.is(fresh.code, 0, fresh.stderr);
  const [, freshToken, , freshCa] = /TROUPE_TOKEN=(\S+) .*start --address (\S+) --ca-sha256 (\S+)/.exec(fresh.stdout)!;
  t.not(freshToken, joinLine[0]);
  t.not(freshCa, joinLine[2]);
  const aside = /is now in (\S+) /.exec(fresh.stderr)?.[1] ?? '';
  t.true(existsSync(join(aside, 'identities.json')), fresh.stderr);
});
