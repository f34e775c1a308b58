import test from 'ava';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  ConnectionError,
  HeadUnavailableError,
  NoRespondersError,
  ProtocolError,
  RequestTimeoutError,
  VersionMismatchError,
} from '../../runtime/base/errors.ts';
import { PROTOCOL_VERSION, checkHeadVersions, ownVersions } from '../../runtime/protocol/versions.ts';

const pkg = JSON.parse(readFileSync(join(import.meta.dirname, '..', '..', 'package.json'), 'utf8')) as {
  version: string;
};
const o = { self: 'this driver', role: 'driver', address: '10.0.0.5:4222', waitMs: 0 };

test("this process's versions are its package.json's and the protocol constant", (t) => {
  t.deepEqual(ownVersions(), { troupe: pkg.version, protocol: PROTOCOL_VERSION });
});

test('the head answering its versions: the same pass, others are refused naming both sides', async (t) => {
  const sent: unknown[] = [];
  t.deepEqual(
    await checkHeadVersions(async (hello) => {
      sent.push(hello);
      return { ...ownVersions() };
    }, o),
    ownVersions(),
  );
  t.deepEqual(sent, [{ ...ownVersions(), role: 'driver' }]);
  const e = await t.throwsAsync(
    checkHeadVersions(async () => ({ troupe: '9.0.0', protocol: PROTOCOL_VERSION + 1 }), o),
    { instanceOf: VersionMismatchError },
  );
  t.is(
    e?.message,
    `this driver runs troupe ${pkg.version} (protocol ${PROTOCOL_VERSION}); the head at 10.0.0.5:4222 runs troupe ` +
      `9.0.0 (protocol ${PROTOCOL_VERSION + 1}): install the same troupe on every machine`,
  );
  t.deepEqual(e?.head, { troupe: '9.0.0', protocol: PROTOCOL_VERSION + 1 });
  // An answer that is not versions at all is refused too, never trusted.
  await t.throwsAsync(
    checkHeadVersions(async () => 'hello', o),
    { instanceOf: VersionMismatchError },
  );
});

test('a head that does not answer is asked again until the wait, then it is HeadUnavailableError', async (t) => {
  let asked = 0;
  const e = await t.throwsAsync(
    checkHeadVersions(async () => {
      asked++;
      throw new NoRespondersError('no one is listening');
    }, o),
    { instanceOf: HeadUnavailableError },
  );
  t.true(e instanceof ConnectionError, 'a ConnectionError: the cluster is not usable, nothing about versions');
  t.is(
    e?.message,
    'this driver: no head at 10.0.0.5:4222 answered its version check: none is running there, or the ' +
      'cluster is between heads for longer than that (see `troupe status`; TROUPE_HEAD_WAIT_MS sets the wait)',
  );
  t.is(asked, 1, 'with no wait, asked once');
  // A head that answers only after a few timeouts (a standby taking over) is waited for.
  asked = 0;
  const v = await checkHeadVersions(
    async () => {
      if (++asked < 3) throw new RequestTimeoutError('timed out');
      return ownVersions();
    },
    { ...o, waitMs: 5000 },
  );
  t.deepEqual(v, ownVersions());
  t.is(asked, 3);
  await t.throwsAsync(
    checkHeadVersions(
      async () => {
        throw new ProtocolError('bad');
      },
      { ...o, waitMs: 5000 },
    ),
    { instanceOf: ProtocolError },
  );
});
