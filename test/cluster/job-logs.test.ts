// A submitted driver's log on a real nats-server (runtime/state/job-logs.ts): a follower reads it with stream gets, no
// consumer, and rides out the server going away and coming back as a consumer would. job-submit.test.ts follows
// real drivers through `troupe job submit` and `troupe job logs`.
import test from 'ava';
import { startNatsServerAgain } from '../../runtime/cluster/nats-server.ts';
import { JobLogWriter, openJobLogStream, readJobLog } from '../../runtime/state/job-logs.ts';
import type { SubmissionInfo } from '../../runtime/protocol/submissions.ts';
import { eventually, loneServer } from '../helpers/cluster.ts';

const text = (s: string) => new TextEncoder().encode(s);

test('a follower gets every record and the end across a restart of nats-server', async (t) => {
  t.timeout(60_000);
  const { bus, dir, nats } = await loneServer(t, 'job-logs');
  await openJobLogStream(bus);
  const log = new JobLogWriter(bus, 'sub-1');
  log.write({ out: text('before\n') });
  const seen: string[] = [];
  const followed = readJobLog(bus, 'sub-1', {
    follow: true,
    write: (r) => {
      if ('out' in r) seen.push(new TextDecoder().decode(r.out));
      else if ('err' in r) seen.push(new TextDecoder().decode(r.err));
    },
  });
  await eventually('the first record', async () => seen.length === 1, 10_000);

  await nats.stop(); // the follower's gets fail while it is gone
  await new Promise((r) => setTimeout(r, 1000));
  const again = await startNatsServerAgain(dir);
  t.teardown(() => again.stop());
  await eventually('reconnected', async () => !bus.isClosed && bus.nc.info !== undefined, 10_000);
  log.write({ err: text('after\n') });
  const info: SubmissionInfo = {
    submissionId: 'sub-1',
    state: 'SUCCEEDED',
    entrypoint: ['node', 'main.js'],
    workingDir: '/',
    nodeId: 'n1',
    hostname: 'here',
    submittedAt: new Date().toISOString(),
  };
  await log.end(info);
  t.deepEqual(await followed, info, 'the end record ends the follow');
  t.deepEqual(seen, ['before\n', 'after\n']);
});
