// A driver's job registration: checked like any job from the bus, with the driver's user key, and compared by content
// (a resend is the same job).
import test from 'ava';
import { checkJobRegistration, sameJob, type JobRef } from '../../runtime/protocol/jobs.ts';
import { ProtocolError } from '../../runtime/base/errors.ts';
import { newNkey } from '../../runtime/bus/nkey.ts';

const job: JobRef = { id: 'job1', driver: 'drv1', root: '/srv/app', env: { env: { A: '1' }, troupe: '/opt/troupe' } };

test("a registration is a checked job, and the driver's user key when it has one", (t) => {
  t.deepEqual(checkJobRegistration({ job }), { job });
  const key = newNkey('user').pair.publicKey;
  t.deepEqual(checkJobRegistration({ job, key }), { job, key });
  for (const bad of [undefined, null, {}, { job: { ...job, root: 'relative' } }, { job: { ...job, id: '*' } }])
    t.throws(() => checkJobRegistration(bad), { instanceOf: ProtocolError, message: /job registration/ });
  // Not a user's public key: an account's, a seed, junk.
  for (const bad of [newNkey('account').pair.publicKey, newNkey('user').seed, 'U', 7])
    t.throws(() => checkJobRegistration({ job, key: bad }), { instanceOf: ProtocolError, message: /key/ });
});

test('the same job whatever the key order; another driver, root or env is another job', (t) => {
  t.true(
    sameJob(job, { env: { troupe: '/opt/troupe', env: { A: '1' } }, root: '/srv/app', driver: 'drv1', id: 'job1' }),
  );
  t.true(sameJob({ ...job, env: undefined }, { id: 'job1', driver: 'drv1', root: '/srv/app' }));
  t.false(sameJob(job, { ...job, driver: 'drv2' }));
  t.false(sameJob(job, { ...job, root: '/tmp/evil' }));
  t.false(sameJob(job, { ...job, env: { env: { A: '2' }, troupe: '/opt/troupe' } }));
  t.false(sameJob(job, { ...job, env: undefined }));
});
