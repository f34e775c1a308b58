// The chaos runs in short (npm run chaos --smoke): actor processes killed every 2 s, a node lost, the head killed and
// replaced, a standby head taking over from a paused one, nats-server killed and started again, junk on every subject.
// What must hold is counted, never timed: no call lost or failed, daemons alive.
import test from 'ava';
import { join } from 'node:path';
import { runCommand, tempDir } from '../helpers/cluster.ts';

test(
  'chaos, short: nothing lost through actor kills, a node loss, a head restart, a head failover and a nats-server ' +
    'restart; junk on every subject harms nothing',
  async (t) => {
    t.timeout(240_000);
    const r = await runCommand(
      process.execPath,
      ['--import', 'tsx', '--conditions=troupe-source', 'bench/chaos/run.ts', '--smoke'],
      {
        cwd: join(import.meta.dirname, '..', '..'),
        env: { TROUPE_HOME: tempDir(t), TROUPE_ADDRESS: '', TROUPE_TOKEN: '' },
        timeoutMs: 200_000, // before the test's: its output then says which run hung
      },
    );
    t.is(r.code, 0, `${r.stdout}\n${r.stderr}`);
    const line = r.stdout.split('\n').find((l) => l.startsWith('CHAOS_RESULTS '));
    t.truthy(line, r.stdout);
    const res = JSON.parse(line!.slice('CHAOS_RESULTS '.length)) as Record<string, Record<string, number | boolean>>;
    t.true((res.kill_actor_processes.kills as number) >= 2);
    t.like(res.kill_actor_processes, { calls_lost: 0, calls_failed: 0 });
    t.true((res.kill_actor_processes.calls_answered as number) > 0);
    t.is(res.restart_latency.kills, res.kill_actor_processes.kills);
    t.is(res.kill_node.actors, 3);
    t.like(res.kill_head, { calls_lost: 0, calls_failed: 0 });
    t.true((res.kill_head.calls_answered_during_outage as number) > 0, 'the head is not on the call path');
    t.like(res.head_failover, { calls_lost: 0, calls_failed: 0, still_leading_after_old_resumed: true });
    t.true((res.head_failover.calls_sent as number) > 0);
    t.like(res.restart_nats, { calls_lost: 0, calls_failed: 0, task_after: true });
    t.true((res.restart_nats.calls_sent as number) > 0);
    t.is(res.fuzz.nodes_alive, res.fuzz.nodes_before, String(res.fuzz.nodes_died));
    t.is(res.fuzz.daemons_alive, res.fuzz.daemons);
    t.true(res.fuzz.calls_work_after as boolean);
  },
);
