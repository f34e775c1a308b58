// NKEYs (the Ed25519 keys of NATS users, accounts and operators) with Node's native Ed25519. nkeys.js signs and
// verifies in JavaScript (tweetnacl) and derives the key pair again on every call: about 130 ms of each troupe
// process's start, and a few ms per lane handshake. NATS's encoding of keys (base32 of the prefix, the 32 bytes and a
// CRC-16/XMODEM, little-endian) is the few lines below; test/unit/nkey.test.ts checks them against nkeys.js.
import { createPrivateKey, createPublicKey, randomBytes, sign, verify, type KeyObject } from 'node:crypto';

/** The kinds of key troupe uses: users (one per connection), accounts (the cluster's, and the signing keys that are
 * its credentials) and the operator (it signs the accounts). */
export type KeyKind = 'user' | 'account' | 'operator';
/** The prefix byte of each kind's public key ('U', 'A', 'O'). */
const PREFIX: Record<KeyKind, number> = { user: 20 << 3, account: 0, operator: 14 << 3 };
/** A seed's two prefix bytes ('SU', 'SA', 'SO'): the seed prefix (18 << 3) with the kind's, spread over both. */
const seedPrefix = (kind: KeyKind) => [(18 << 3) | (PREFIX[kind] >> 5), (PREFIX[kind] & 31) << 3];
const ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';
/** An Ed25519 private key in PKCS#8 DER is this prefix, then the 32-byte seed (RFC 8410). */
const PKCS8_ED25519 = Buffer.from('302e020100300506032b657004220420', 'hex');
/** And a public key in SPKI DER is this, then the 32-byte key. */
const SPKI_ED25519 = Buffer.from('302a300506032b6570032100', 'hex');

export interface NkeyPair {
  kind: KeyKind;
  /** `U…`, `A…` or `O…`, 56 characters: what JWTs, nats-server's config and the lanes' allow-lists name. */
  publicKey: string;
  /** The key itself, for a thread that signs too (a KeyObject passes to worker threads). */
  privateKey: KeyObject;
  /** An Ed25519 signature (64 bytes). */
  sign(data: Uint8Array): Buffer;
}
/** The key pair of a seed of `kind`. Throws a TypeError on a malformed seed, or one of another kind. */
export function nkeyPair(seed: string | Uint8Array, kind: KeyKind): NkeyPair {
  const decoded = decodeBase32(typeof seed === 'string' ? seed : new TextDecoder().decode(seed));
  if (!checked(decoded, seedPrefix(kind), 32)) throw new TypeError(`not an NKEY ${kind} seed (S${kindLetter(kind)}…)`);
  return pairOf(decoded.subarray(2, 34), kind);
}

/** A new key of `kind`, from Node's random bytes: its seed (the secret to keep) and its pair. */
export function newNkey(kind: KeyKind): { seed: string; pair: NkeyPair } {
  const raw = randomBytes(32);
  return { seed: encode(seedPrefix(kind), raw), pair: pairOf(raw, kind) };
}

function pairOf(raw: Uint8Array, kind: KeyKind): NkeyPair {
  const key = createPrivateKey({ key: Buffer.concat([PKCS8_ED25519, raw]), format: 'der', type: 'pkcs8' });
  const spki = createPublicKey(key).export({ format: 'der', type: 'spki' });
  return {
    kind,
    publicKey: encode([PREFIX[kind]], spki.subarray(SPKI_ED25519.length)),
    privateKey: key,
    sign: (data) => sign(null, data, key),
  };
}

const kindLetter = (kind: KeyKind) => ALPHABET[PREFIX[kind] >> 3];

/** A public key of one of `kinds`, to check signatures with; undefined if `publicKey` is not a well-formed key of
 * those kinds. */
export function nkeyVerifier(
  publicKey: string,
  kinds: readonly KeyKind[],
): ((data: Uint8Array, signature: Uint8Array) => boolean) | undefined {
  const raw = decodeBase32(publicKey);
  if (!kinds.some((k) => checked(raw, [PREFIX[k]], 32)) || !raw) return undefined;
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

/** NATS's text form of a key: base32 of the prefix, the 32 bytes and their CRC-16 (little-endian), unpadded. */
function encode(prefix: number[], key: Uint8Array): string {
  const raw = Buffer.alloc(prefix.length + 34);
  raw.set(prefix, 0);
  raw.set(key, prefix.length);
  raw.writeUInt16LE(crc16(raw.subarray(0, prefix.length + 32)), prefix.length + 32);
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
