// troupe's NKEY keys (runtime/bus/nkey.ts: Node's Ed25519, NATS's encoding) against nkeys.js, the reference.
import test from 'ava';
import { createAccount, createUser, fromPublic } from '@nats-io/nkeys';
import { isUserSeed, nkeyAuthenticator, nkeyUser, nkeyVerifier } from '../../runtime/bus/nkey.ts';

const text = (b: Uint8Array) => new TextDecoder().decode(b);

test('the same public key as nkeys.js, and signatures each side verifies', (t) => {
  for (let i = 0; i < 20; i++) {
    const reference = createUser();
    const seed = text(reference.getSeed());
    t.true(isUserSeed(seed));
    const ours = nkeyUser(seed);
    t.is(ours.publicKey, reference.getPublicKey());
    t.deepEqual(nkeyUser(reference.getSeed()).publicKey, ours.publicKey, 'bytes or text');
    const data = Buffer.from(`nonce ${i}`);
    t.true(fromPublic(ours.publicKey).verify(data, ours.sign(data)));
    const check = nkeyVerifier(ours.publicKey)!;
    t.true(check(data, reference.sign(data)));
    t.false(check(Buffer.from('another nonce'), reference.sign(data)));
    t.false(check(data, reference.sign(data).subarray(1)), 'a short signature');
  }
});

test("the authenticator answers as nats.js's: the public key and the nonce signed, in base64", (t) => {
  const reference = createUser();
  const auth = nkeyAuthenticator(nkeyUser(text(reference.getSeed())))('a-server-nonce') as {
    nkey: string;
    sig: string;
  };
  t.is(auth.nkey, reference.getPublicKey());
  t.true(fromPublic(auth.nkey).verify(Buffer.from('a-server-nonce'), Buffer.from(auth.sig, 'base64')));
});

test('malformed seeds and keys are refused: a wrong checksum, another kind of key, junk', (t) => {
  // A character in the middle: the last one of a seed also carries padding bits, which a flip may only touch.
  const flip = (s: string, i = 10) => s.slice(0, i) + (s[i] === 'A' ? 'B' : 'A') + s.slice(i + 1);
  const seed = text(createUser().getSeed());
  const flipped = flip(seed);
  for (const bad of [flipped, text(createAccount().getSeed()), 'SU', '', 'SU!@#'])
    t.throws(() => nkeyUser(bad), { instanceOf: TypeError }, bad);
  const key = createUser().getPublicKey();
  for (const bad of [flip(key), createAccount().getPublicKey(), 'U', 'x']) t.is(nkeyVerifier(bad), undefined, bad);
});
