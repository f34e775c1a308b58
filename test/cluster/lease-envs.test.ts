// A job's env is prepared outside lease requests: while a node fetches a shipped project it answers "preparing" and
// reserves nothing; a project it cannot make fails the lease with a RuntimeEnvError; a grant its asker has given up
// on is taken back. Requests go straight to the node daemon, as the head sends them.
import test from 'ava';
import { randomBytes } from 'node:crypto';
import { startCluster, eventually, tempDir, type TestCluster } from '../helpers/cluster.ts';
import { Bus } from '../../runtime/bus/bus.ts';
import { subjects } from '../../runtime/protocol/subjects.ts';
import { RuntimeEnvError, WorkerDiedError } from '../../runtime/base/errors.ts';
import type { Busy, LeaseGrant, LeaseRequest } from '../../runtime/protocol/leases.ts';

let c: TestCluster | undefined;
let bus: Bus | undefined;
test.before(async () => {
  c = await startCluster({ head: { numCpus: 2 } });
  bus = await Bus.connect({ address: c.address, token: c.headToken, name: 'lease-envs-test' });
});
test.after.always(async () => {
  await bus?.close();
  await c?.stop();
});

// Asked as the leading head asks, with its term.
const lease = async (req: Omit<LeaseRequest, 'term'>) => {
  const term = (await c!.status()).lease!.term;
  return bus!.request<LeaseGrant | Busy>(subjects.nodeLease(c!.head.nodeId), { ...req, term }, { timeoutMs: 10_000 });
};
const freeCpus = async () => (await c!.status()).nodes.find((n) => n.nodeId === c!.head.nodeId)?.available.CPU;

test.serial(
  'a node fetching a job project answers "preparing" and reserves nothing; a failed fetch fails the lease',
  async (t) => {
    t.timeout(60_000);
    const jobId = `job-${randomBytes(6).toString('hex')}`;
    // The job's "driver": asked for the project the store lacks, it holds the answer until the test lets it go.
    let letGo!: () => void;
    const gate = new Promise<void>((r) => (letGo = r));
    let asked = 0;
    const driver = bus!.serve(subjects.jobShip(jobId), async () => {
      asked++;
      await gate;
      throw new Error('this driver has nothing to ship');
    });
    t.teardown(() => {
      letGo();
      driver.unsubscribe();
    });
    const req: Omit<LeaseRequest, 'term'> = {
      clientId: 'lease-envs-client',
      demand: { CPU: 1 },
      replyWithinMs: 40_000,
      job: {
        id: jobId,
        driver: jobId,
        root: tempDir(t),
        // Shipped from another machine: this node must make a copy.
        env: {
          workingDir: { sha256: randomBytes(32).toString('hex'), bytes: 100 },
          origin: { hostname: 'elsewhere', bootId: 'boot', rootId: '1:2' },
        },
      },
    };
    const first = await lease(req);
    t.like(first, { busy: true, preparing: true });
    t.is((first as Busy).available.CPU, 2, 'nothing reserved while it prepares');
    t.like(await lease(req), { busy: true, preparing: true }, 'asked again: still preparing');
    t.is(asked, 1, 'one fetch for the job, not one per request');

    letGo();
    const err = await eventually('the lease to fail', async () =>
      lease(req).then(
        () => undefined,
        (e: Error) => e,
      ),
    );
    t.true(err instanceof RuntimeEnvError, `${err.name}: ${err.message}`);
    t.regex(err.message, /nothing to ship/);
    await t.throwsAsync(lease(req), { instanceOf: RuntimeEnvError }, 'the failure is kept: no fetch per request');
    t.is(asked, 1);
    t.is(await eventually('the node to show its CPUs free', async () => (await freeCpus()) === 2 && 2), 2);
  },
);

test.serial('a grant not ready before its asker gives up is taken back', async (t) => {
  t.timeout(60_000);
  const job = { id: `job-${randomBytes(6).toString('hex')}`, driver: 'lease-envs-driver', root: tempDir(t) };
  // The first lease takes the idle spare worker; the node starts the next spare, not ready for a while.
  const held = (await lease({ clientId: 'lease-envs-client', demand: { CPU: 1 }, job })) as LeaseGrant;
  t.truthy(held.leaseId);
  t.teardown(() => bus!.request(subjects.nodeRelease(c!.head.nodeId), { leaseId: held.leaseId }).catch(() => 0));
  // This asker waits 1 ms: the starting spare cannot be ready by then.
  await t.throwsAsync(lease({ clientId: 'lease-envs-client', demand: { CPU: 1 }, job, replyWithinMs: 1 }), {
    instanceOf: WorkerDiedError,
    message: /before its asker gave up/,
  });
  t.is(await eventually('the node to take the lease back', async () => (await freeCpus()) === 1 && 1), 1);
  const again = (await lease({ clientId: 'lease-envs-client', demand: { CPU: 1 }, job })) as LeaseGrant;
  t.truthy(again.leaseId, 'the CPU is grantable again');
  await bus!.request(subjects.nodeRelease(c!.head.nodeId), { leaseId: again.leaseId });
});
