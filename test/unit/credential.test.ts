// Credentials and the NATS JWTs troupe makes (runtime/bus/credential.ts): the form of a credential, and user JWTs as
// nats-server reads them, checked with nkeys.js. That nats-server takes them is shown by every cluster test.
import test from 'ava';
import { fromPublic } from '@nats-io/nkeys';
import {
  encodeJwt,
  formatCredential,
  isCredential,
  issueUser,
  parseCredential,
  signUser,
  takeIssuedUser,
  userAuthenticator,
} from '../../runtime/bus/credential.ts';
import { newNkey } from '../../runtime/bus/nkey.ts';

const account = newNkey('account');
const key = newNkey('account');
const credential = formatCredential(key.seed, account.pair.publicKey);

/** A JWT's header and claims, after checking its signature with nkeys.js against the key it names as issuer. */
function decode(jwt: string): { header: Record<string, unknown>; claims: Record<string, any> } {
  const [h, b, sig] = jwt.split('.');
  const claims = JSON.parse(Buffer.from(b, 'base64url').toString());
  if (!fromPublic(claims.iss).verify(Buffer.from(`${h}.${b}`), Buffer.from(sig, 'base64url')))
    throw new Error('bad signature');
  return { header: JSON.parse(Buffer.from(h, 'base64url').toString()), claims };
}

test('a credential is the signing seed and the account, and nothing else parses as one', (t) => {
  t.true(isCredential(credential));
  const c = parseCredential(credential);
  t.is(c.signer.publicKey, key.pair.publicKey);
  t.is(c.account, account.pair.publicKey);
  const user = newNkey('user').seed;
  for (const bad of [
    '',
    key.seed,
    `${key.seed}.`,
    `${user}.${account.pair.publicKey}`,
    `${key.seed}.${key.seed}`,
    `${credential}\n`,
    'plain-token',
  ]) {
    t.false(isCredential(bad), bad);
    t.throws(() => parseCredential(bad), { instanceOf: TypeError });
  }
});

test('a user signed with a credential: a fresh key each time, issued by the signing key for the account', (t) => {
  const a = signUser(parseCredential(credential), 'a');
  const b = signUser(parseCredential(credential), 'b');
  t.not(a.user.publicKey, b.user.publicKey);
  const { header, claims } = decode(a.jwt);
  t.deepEqual(header, { typ: 'JWT', alg: 'ed25519-nkey' });
  t.is(claims.iss, key.pair.publicKey);
  t.is(claims.sub, a.user.publicKey);
  t.is(claims.name, 'a');
  t.deepEqual(claims.nats, { type: 'user', issuer_account: account.pair.publicKey, version: 2 });
  const auth = userAuthenticator(a)('nonce-1') as { jwt: string; sig: string };
  t.is(auth.jwt, a.jwt);
  t.true(fromPublic(a.user.publicKey).verify(Buffer.from('nonce-1'), Buffer.from(auth.sig, 'base64')));
});

test("the system account's own key signs its users without an issuer account, and with no limits", (t) => {
  const system = newNkey('account');
  const u = signUser(parseCredential(formatCredential(system.seed, system.pair.publicKey)), 'sys');
  t.deepEqual(decode(u.jwt).claims.nats, { type: 'user', subs: -1, data: -1, payload: -1, version: 2 });
});

test('encodeJwt: the iat asked for, signed by the key given', (t) => {
  const operator = newNkey('operator');
  const jwt = encodeJwt({ sub: operator.pair.publicKey, name: 'op', nats: { type: 'operator' } }, operator.pair, 42);
  const { claims } = decode(jwt);
  t.is(claims.iat, 42);
  t.is(claims.iss, operator.pair.publicKey);
  t.is(claims.aud, 'NATS');
});

test("a user issued for another process: tagged with its process and node, and its seed is the JWT's user", (t) => {
  const issued = issueUser(parseCredential(credential), 'troupe-worker-p1', { proc: 'p1', node: 'n-1' });
  const { claims } = decode(issued.jwt);
  t.is(claims.iss, key.pair.publicKey);
  t.is(claims.nats.issuer_account, account.pair.publicKey);
  t.deepEqual(claims.nats.tags, ['proc:p1', 'node:n-1']);
  const taken = takeIssuedUser(issued);
  t.is(taken.user.publicKey, claims.sub);
  t.is(taken.jwt, issued.jwt);
  // A tag is one subject token: a wildcard or a dot would widen the permissions that name it.
  for (const bad of ['*', '>', 'a.b', '', 'a b'])
    t.throws(() => issueUser(parseCredential(credential), 'w', { proc: bad, node: 'n1' }), { instanceOf: TypeError });
  t.throws(() => takeIssuedUser({ jwt: issued.jwt }), { instanceOf: TypeError });
  t.throws(() => takeIssuedUser({ jwt: issued.jwt, seed: key.seed }), { instanceOf: TypeError }, 'an account seed');
  t.throws(() => takeIssuedUser('x'), { instanceOf: TypeError });
});
