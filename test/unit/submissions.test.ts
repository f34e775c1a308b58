// The checks a node daemon applies to a submit request from the bus, before it starts anything.
import test from 'ava';
import {
  checkEnvName,
  checkGraceMs,
  checkSubmissionId,
  checkSubmitRequest,
} from '../../runtime/protocol/submissions.ts';
import { ProtocolError } from '../../runtime/base/errors.ts';

const ok = {
  entrypoint: ['node', 'main.js', '--flag'],
  workingDir: '/tmp/proj',
  env: { SEED: '7' },
  credential: 'the-submitters',
};

test('a well-formed request passes as it is, its runtime env checked', (t) => {
  const ref = { workingDir: { sha256: 'a'.repeat(64), bytes: 10 } };
  t.deepEqual(checkSubmitRequest({ ...ok, runtimeEnv: ref, extra: 1 }), { ...ok, runtimeEnv: ref });
  t.throws(() => checkSubmitRequest({ ...ok, runtimeEnv: { workingDir: { sha256: 'abc', bytes: 1 } } }), {
    instanceOf: ProtocolError,
  });
  t.deepEqual(checkSubmitRequest({ entrypoint: ['x'], workingDir: '/', credential: 'c' }).env, {});
});

test('every malformed field is refused with a ProtocolError naming it', (t) => {
  const bad: Array<[unknown, RegExp]> = [
    [null, /must be an object/],
    [{ ...ok, entrypoint: 'node main.js' }, /entrypoint must be a command as an array/],
    [{ ...ok, entrypoint: [] }, /entrypoint must be/],
    [{ ...ok, entrypoint: [''] }, /the command is empty/],
    [{ ...ok, entrypoint: ['node', 1] }, /strings without NUL/],
    [{ ...ok, entrypoint: ['node', 'a\0b'] }, /strings without NUL/],
    [{ ...ok, entrypoint: Array.from({ length: 1001 }, () => 'a') }, /1 to 1000 strings/],
    [{ ...ok, entrypoint: ['node', 'x'.repeat(300_000)] }, /exceed/],
    [{ ...ok, workingDir: 'proj' }, /workingDir must be an absolute path/],
    [{ ...ok, workingDir: 7 }, /workingDir/],
    [{ ...ok, env: ['A=1'] }, /env must be an object/],
    [{ ...ok, env: { TROUPE_TOKEN: 'x' } }, /TROUPE_\* names are set by troupe/],
    [{ ...ok, env: { troupe_home: 'x' } }, /TROUPE_\*/],
    [{ ...ok, env: { '1A': 'x' } }, /not a valid name/],
    [{ ...ok, env: { 'A=B': 'x' } }, /not a valid name/],
    [{ ...ok, env: { A: 1 } }, /env A: the value must be a string/],
    [{ ...ok, credential: undefined }, /credential must be the submitter's credential/],
    [{ ...ok, credential: '' }, /credential must be/],
    [{ ...ok, credential: 'a\nb' }, /credential must be/],
    [{ ...ok, credential: 'x'.repeat(4097) }, /credential must be/],
  ];
  for (const [req, message] of bad)
    t.throws(() => checkSubmitRequest(req), { instanceOf: ProtocolError, message }, JSON.stringify(req)?.slice(0, 80));
});

test('ids, env names and grace', (t) => {
  t.is(checkSubmissionId('job-0123456789abcdef'), 'job-0123456789abcdef');
  for (const id of ['job-0123', '../job-0123456789abcdef', 'JOB-0123456789ABCDEF', 42])
    t.throws(() => checkSubmissionId(id), { instanceOf: ProtocolError });
  t.is(checkEnvName('PATH_2'), undefined);
  t.regex(checkEnvName('') ?? '', /not a valid name/);
  t.is(checkGraceMs(undefined), 5000);
  t.is(checkGraceMs(10_000_000), 600_000);
  t.throws(() => checkGraceMs(-1), { instanceOf: ProtocolError });
  t.throws(() => checkGraceMs('5'), { instanceOf: ProtocolError });
});
