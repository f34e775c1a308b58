// troupe's NKEYs (runtime/bus/nkey.ts: Node's Ed25519, NATS's encoding) against nkeys.js, the reference.
import test from 'ava';
import { createAccount, createUser, fromPublic, fromSeed } from '@nats-io/nkeys';
import { newNkey, nkeyPair, nkeyVerifier, type KeyKind } from '../../runtime/bus/nkey.ts';

const text = (b: Uint8Array) => new TextDecoder().decode(b);
const KINDS: readonly KeyKind[] = ['user', 'account', 'operator'];

test('the same public key as nkeys.js, and signatures each side verifies', (t) => {
  for (let i = 0; i < 20; i++) {
    const reference = i % 2 ? createUser() : createAccount();
    const kind = i % 2 ? 'user' : 'account';
    const seed = text(reference.getSeed());
    const ours = nkeyPair(seed, kind);
    t.is(ours.publicKey, reference.getPublicKey());
    t.deepEqual(nkeyPair(reference.getSeed(), kind).publicKey, ours.publicKey, 'bytes or text');
    const data = Buffer.from(`nonce ${i}`);
    t.true(fromPublic(ours.publicKey).verify(data, ours.sign(data)));
    const check = nkeyVerifier(ours.publicKey, [kind])!;
    t.true(check(data, reference.sign(data)));
    t.false(check(Buffer.from('another nonce'), reference.sign(data)));
    t.false(check(data, reference.sign(data).subarray(1)), 'a short signature');
  }
});

test('keys of every kind made here are what nkeys.js reads from their seeds, and sign as it does', (t) => {
  for (const kind of KINDS) {
    const { seed, pair } = newNkey(kind);
    const reference = fromSeed(new TextEncoder().encode(seed));
    t.is(pair.publicKey, reference.getPublicKey(), kind);
    t.is(pair.publicKey[0], { user: 'U', account: 'A', operator: 'O' }[kind]);
    t.is(nkeyPair(seed, kind).publicKey, pair.publicKey);
    const data = Buffer.from(`signed by ${kind}`);
    t.true(reference.verify(data, pair.sign(data)));
    for (const other of KINDS.filter((k) => k !== kind)) {
      t.throws(() => nkeyPair(seed, other), { instanceOf: TypeError }, `${kind} seed read as ${other}`);
      t.is(nkeyVerifier(pair.publicKey, [other]), undefined, `${kind} key checked as ${other}`);
    }
  }
});

test('malformed seeds and keys are refused: a wrong checksum, another kind of key, junk', (t) => {
  // A character in the middle: the last one of a seed also carries padding bits, which a flip may only touch.
  const flip = (s: string, i = 10) => s.slice(0, i) + (s[i] === 'A' ? 'B' : 'A') + s.slice(i + 1);
  const seed = text(createUser().getSeed());
  for (const bad of [flip(seed), text(createAccount().getSeed()), 'SU', '', 'SU!@#'])
    t.throws(() => nkeyPair(bad, 'user'), { instanceOf: TypeError }, bad);
  const key = createUser().getPublicKey();
  for (const bad of [flip(key), createAccount().getPublicKey(), 'U', 'x'])
    t.is(nkeyVerifier(bad, ['user']), undefined, bad);
});
