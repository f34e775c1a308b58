// Core NATS delivers at most once: a message can be lost while both ends live (a reconnect; a slow consumer, which
// nats-server cuts off, dropping what it had queued for it). A task or actor call whose request was lost so must
// still settle: its caller, hearing nothing, asks the worker which it holds (TROUPE_CALL_PROBE_MS, 1 s here) and runs
// the lost one again, or fails it with CallLostError. The loss here is real: the worker is stopped (SIGSTOP) while
// junk on its subject fills its socket, the request queues behind the junk in nats-server, and the server cuts the
// worker off once a write to it has waited 10 s (its write_deadline), dropping what it queued. Actor calls go over
// NATS only between machines (a lane is a socket on one), so theirs is on simulated hosts.
import test from 'ava';
import { join } from 'node:path';
import { get } from '../../runtime/index.ts';
import { Bus } from '../../runtime/bus/bus.ts';
import { defaults } from '../../runtime/base/config.ts';
import { subjects } from '../../runtime/protocol/subjects.ts';
import { useCluster } from '../helpers/cluster.ts';
import { CUT_AFTER_MS, fillTheWay } from '../helpers/slow-consumer.ts';
import { hostsUnavailable, makeHosts, type Hosts, troupeOn } from '../helpers/hosts.ts';
import { add, whereAmI } from '../fixtures/tasks.ts';

// TROUPE_CALL_PROBE_MS is read when config.ts loads, before this line: set here, before init() starts the Core.
defaults.callProbeMs = 1000;
// Two CPUs: a task found lost may run again on a second worker while the first still holds its lease.
const cluster = useCluster(test, { head: { numCpus: 2 } });

test('a task whose request the bus dropped is found lost by a probe and runs again', async (t) => {
  t.timeout(90_000);
  const worker = await get(whereAmI.remote()); // our lease's worker: the next task goes to it
  // Another connection floods, so that our own stays free to send the task.
  const flooder = await Bus.connect({ address: cluster().address, token: cluster().token, name: 'test-flooder' });
  process.kill(worker.pid, 'SIGSTOP');
  try {
    await fillTheWay(flooder, subjects.procTask(worker.procId));
    const sum = add.remote(1, 2); // queued in nats-server behind the junk
    await new Promise((r) => setTimeout(r, CUT_AFTER_MS)); // nats-server cuts the worker off, dropping the task
    process.kill(worker.pid, 'SIGCONT');
    t.is(await get(sum), 3, 'the lost task ran again');
  } finally {
    process.kill(worker.pid, 'SIGCONT');
    await flooder.close();
  }
});

const why = hostsUnavailable();
if (why) {
  console.warn(`troupe: the simulated-hosts tests cannot run here: ${why}`);
} else {
  let net: Hosts | undefined;
  test.after.always(() => net?.remove());

  test('an actor call whose request the bus dropped fails with CallLostError; the actor keeps serving', async (t) => {
    t.timeout(240_000);
    net = await makeHosts(['host-a', 'host-b']);
    const [a, b] = net.hosts;
    const env = { TROUPE_HOME: '/tmp/troupe-home', TROUPE_ADDRESS: '', TROUPE_TOKEN: '' };
    const head = await troupeOn(a, ['start', '--head', '--host', a.ip, '--num-cpus', '1'], env);
    t.is(head.code, 0, head.stdout + head.stderr);
    const [, token, address, ca] =
      /TROUPE_TOKEN=(\S+) .*start --address (\S+) --ca-sha256 (\S+)/.exec(head.stdout) ?? [];
    const node = await troupeOn(b, ['start', '--address', address, '--ca-sha256', ca, '--resources', '{"b": 1}'], {
      ...env,
      TROUPE_TOKEN: token,
    });
    t.is(node.code, 0, node.stdout + node.stderr);

    const root = join(import.meta.dirname, '..', '..');
    const driver = a.spawn(
      process.execPath,
      ['--import', 'tsx', '--conditions=troupe-source', join(root, 'test', 'fixtures', 'lost-call-driver.ts')],
      { cwd: root, env },
    );
    let out = '';
    let err = '';
    const seen = new Set<() => void>();
    driver.stdout!.on('data', (d) => {
      out += d;
      for (const f of seen) f();
    });
    driver.stderr!.on('data', (d) => {
      err += d;
    });
    const exited = new Promise<number | null>((resolve) => driver.on('close', (code) => resolve(code)));
    /** The first line of its output that `want` accepts, once there. */
    const line = (want: (l: string) => boolean) =>
      new Promise<string>((resolve) => {
        const look = () => {
          const l = out.split('\n').find(want);
          if (l !== undefined) resolve(l);
        };
        seen.add(look);
        look();
      });
    const kill = setTimeout(() => driver.kill('SIGKILL'), 120_000);
    let pid = 0;
    try {
      const first = await Promise.race([line((l) => l.startsWith('{')), exited.then((c) => `exited ${c}`)]);
      t.true(first.startsWith('{'), first + err);
      const tally = JSON.parse(first) as { pid: number; host: string; total: number };
      t.is(tally.host, 'host-b');
      pid = tally.pid;
      process.kill(pid, 'SIGSTOP');
      driver.kill('SIGUSR2');
      await line((l) => l === 'sent');
      await new Promise((r) => setTimeout(r, CUT_AFTER_MS)); // nats-server cuts it off, dropping the call
      process.kill(pid, 'SIGCONT');
      t.is(await exited, 0, out + err);
    } finally {
      clearTimeout(kill);
      try {
        if (pid) process.kill(pid, 'SIGCONT'); // never left stopped, whatever failed
      } catch {} // gone with its driver
      driver.kill('SIGKILL');
    }
    const r = JSON.parse(out.trim().split('\n').pop()!) as {
      settled: { error?: string; message?: string; total?: number };
      after: { total: number; pid: number };
    };
    t.is(r.settled.error, 'CallLostError', JSON.stringify(r.settled));
    t.regex(r.settled.message ?? '', /lost on the way/);
    t.deepEqual([r.after.total, r.after.pid], [1, pid], 'the lost call never ran; the same instance serves on');
    for (const h of [b, a]) {
      const stop = await troupeOn(h, ['stop'], env);
      t.is(stop.code, 0, stop.stdout + stop.stderr);
    }
  });
}
