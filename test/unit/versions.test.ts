import test from 'ava';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { NoRespondersError, ProtocolError, VersionMismatchError } from '../../runtime/base/errors.ts';
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

test('a head that never answers is a refusal without its versions; other errors pass through', async (t) => {
  const e = await t.throwsAsync(
    checkHeadVersions(async () => {
      throw new NoRespondersError('no one is listening');
    }, o),
    { instanceOf: VersionMismatchError },
  );
  t.is(e?.head, undefined);
  t.regex(e?.message ?? '', /did not answer its version check/);
  await t.throwsAsync(
    checkHeadVersions(async () => {
      throw new ProtocolError('bad');
    }, o),
    { instanceOf: ProtocolError },
  );
});
