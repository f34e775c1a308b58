// NKEY user identities (a NATS user's Ed25519 key) with Node's native Ed25519. nkeys.js signs and verifies in
// JavaScript (tweetnacl) and derives the key pair again on every call: about 130 ms of each troupe process's start,
// and a few ms per lane handshake. NATS's encoding of keys (base32 of the prefix, the 32 bytes and a CRC-16/XMODEM,
// little-endian) is the few lines below; test/unit/nkey.test.ts checks them against nkeys.js.
import { createPrivateKey, createPublicKey, sign, verify, type KeyObject } from 'node:crypto';
import type { Authenticator } from '@nats-io/nats-core';

/** The prefix byte of a user's public key ('U'). */
const USER = 20 << 3;
/** The two prefix bytes of a user's seed ('SU'): the seed prefix (18 << 3) with the user's, spread over both. */
const USER_SEED = [(18 << 3) | (USER >> 5), (USER & 31) << 3];
const ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';
/** An Ed25519 private key in PKCS#8 DER is this prefix, then the 32-byte seed (RFC 8410). */
const PKCS8_ED25519 = Buffer.from('302e020100300506032b657004220420', 'hex');
/** And a public key in SPKI DER is this, then the 32-byte key. */
const SPKI_ED25519 = Buffer.from('302a300506032b6570032100', 'hex');

export interface NkeyUser {
  /** `U…`, 56 characters: what nats-server's config and the lanes' allow-lists name. */
  publicKey: string;
  /** The key itself, for a thread that signs too (a KeyObject passes to worker threads). */
  privateKey: KeyObject;
  /** An Ed25519 signature (64 bytes). */
  sign(data: Uint8Array): Buffer;
}

/** Whether `s` looks like an NKEY user seed (the credential form of a token). */
export function isUserSeed(s: string): boolean {
  return /^SU[A-Z2-7]{56}$/.test(s);
}

/** The user of a seed (`SU…`). Throws on a malformed seed, or one of another kind of key (an account's, `SA…`). */
export function nkeyUser(seed: string | Uint8Array): NkeyUser {
  const decoded = decodeBase32(typeof seed === 'string' ? seed : new TextDecoder().decode(seed));
  if (!checked(decoded, USER_SEED, 32)) throw new TypeError('not an NKEY user seed (SU…)');
  const raw = decoded.subarray(2, 34);
  const key = createPrivateKey({ key: Buffer.concat([PKCS8_ED25519, raw]), format: 'der', type: 'pkcs8' });
  const spki = createPublicKey(key).export({ format: 'der', type: 'spki' });
  return {
    publicKey: encodePublic(spki.subarray(SPKI_ED25519.length)),
    privateKey: key,
    sign: (data) => sign(null, data, key),
  };
}

/** nats.js's nkeyAuthenticator, signing natively: the server's nonce, signed, in standard base64. */
export function nkeyAuthenticator(user: NkeyUser): Authenticator {
  return (nonce) => ({ nkey: user.publicKey, sig: user.sign(Buffer.from(nonce ?? '')).toString('base64') });
}

/** A user's public key, to check signatures with; undefined if `publicKey` is not a well-formed user key. */
export function nkeyVerifier(publicKey: string): ((data: Uint8Array, signature: Uint8Array) => boolean) | undefined {
  const raw = decodeBase32(publicKey);
  if (!checked(raw, [USER], 32)) return undefined;
  const key: KeyObject = createPublicKey({
    key: Buffer.concat([SPKI_ED25519, raw.subarray(1, 33)]),
    format: 'der',
    type: 'spki',
  });
  return (data, signature) => signature.length === 64 && verify(null, data, key, signature);
}

/** Whether `raw` is `prefix`, `length` bytes, then the CRC of both. */
function checked(raw: Buffer | undefined, prefix: number[], length: number): raw is Buffer {
  const end = prefix.length + length;
  return (
    raw?.length === end + 2 &&
    prefix.every((b, i) => raw[i] === b) &&
    crc16(raw.subarray(0, end)) === raw.readUInt16LE(end)
  );
}

function encodePublic(key: Uint8Array): string {
  const raw = Buffer.alloc(35);
  raw[0] = USER;
  raw.set(key, 1);
  raw.writeUInt16LE(crc16(raw.subarray(0, 33)), 33);
  let out = '';
  let bits = 0;
  let value = 0;
  for (const b of raw) {
    value = ((value << 8) | b) & 0xfff;
    bits += 8;
    for (; bits >= 5; bits -= 5) out += ALPHABET[(value >>> (bits - 5)) & 31];
  }
  return bits > 0 ? out + ALPHABET[(value << (5 - bits)) & 31] : out;
}

function decodeBase32(text: string): Buffer | undefined {
  const out: number[] = [];
  let bits = 0;
  let value = 0;
  for (const ch of text) {
    const v = ALPHABET.indexOf(ch);
    if (v < 0) return undefined;
    value = ((value << 5) | v) & 0xfff;
    bits += 5;
    if (bits >= 8) {
      out.push((value >>> (bits - 8)) & 0xff);
      bits -= 8;
    }
  }
  return Buffer.from(out);
}

function crc16(bytes: Uint8Array): number {
  let crc = 0;
  for (const b of bytes) {
    crc ^= b << 8;
    for (let i = 0; i < 8; i++) crc = crc & 0x8000 ? ((crc << 1) ^ 0x1021) & 0xffff : (crc << 1) & 0xffff;
  }
  return crc;
}
