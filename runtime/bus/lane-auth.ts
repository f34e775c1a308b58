// How the two ends of a lane prove who they are: the worker's end sends a fresh nonce, the caller answers with a proof
// over it, and the worker checks the proof before it reads anything else. A nonce is never used twice, so a proof
// seen once (in a core dump, say) opens nothing later. Two ways to prove: the cluster token (an HMAC of the nonce),
// and a user of the cluster's account (its JWT, signed by a key the worker's configuration allows on lanes, and its
// signature of the nonce).
import { createHash, createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { nkeyVerifier } from './nkey.ts';
import { jwtClaims, type SignedUser } from './credential.ts';

type Verifier = NonNullable<ReturnType<typeof nkeyVerifier>>;

/** Bytes of the nonce a lane server sends. */
export const NONCE_BYTES = 32;
/** Longest proof a lane server reads (a user's JWT, some 700 bytes, and a signature). */
export const MAX_PROOF_BYTES = 2048;

export interface LaneAuth {
  /** The proof this process gives for a server's nonce. */
  respond(nonce: Uint8Array): Uint8Array;
  /** Whether `proof` answers `nonce`: made for this very nonce by a process allowed on lanes. Never throws. */
  verify(nonce: Uint8Array, proof: Uint8Array): boolean;
  /** Whether the identity that made `proof`, verified earlier, is still allowed (the lanes it opened close when it is
   * not). Absent: always. */
  admits?(proof: Uint8Array): boolean;
  /** The process `proof`'s identity is bound to, when it names one (a worker's user is tagged with its process): a
   * lane that names another is refused. Undefined: the caller's word is taken. */
  processOf?(proof: Uint8Array): string | undefined;
}

/** A user's lane auth, whose allowed signing keys change as the cluster's credentials do. */
export interface UserLaneAuth extends LaneAuth {
  /** From now on, these keys alone may open lanes; see admits() for those already open. */
  allow(keys: Iterable<string>): void;
}

export function newNonce(): Buffer {
  return randomBytes(NONCE_BYTES);
}

/** Proof by the cluster token: HMAC-SHA256 of the nonce, keyed by a hash of the token (the token itself never goes on
 * the socket, nor anything from which it could be found without guessing it). */
export function tokenLaneAuth(token: string): LaneAuth {
  const key = createHash('sha256').update('troupe-lane\0').update(token).digest();
  const mac = (nonce: Uint8Array) => createHmac('sha256', key).update(nonce).digest();
  return {
    respond: mac,
    verify: (nonce, proof) => {
      const want = mac(nonce);
      return proof.length === want.length && timingSafeEqual(proof, want);
    },
  };
}

/** Proof by a user of the cluster's account (each process signs its own, or its node issued it one): the user's JWT,
 * then the user's signature of the nonce. The JWT must be signed by one of `allowed`, the signing keys whose users may
 * open lanes to this process (from its own configuration, never from the bus). */
export function userLaneAuth(o: { user: SignedUser; allowed: Iterable<string> }): UserLaneAuth {
  const jwt = Buffer.from(o.user.jwt, 'latin1');
  const verifiers = (keys: Iterable<string>, kept = new Map<string, Verifier>()) => {
    const out = new Map<string, Verifier>();
    for (const k of keys) {
      const v = kept.get(k) ?? nkeyVerifier(k, ['account']);
      if (v) out.set(k, v); // not a signing key's public key: nobody can prove it
    }
    return out;
  };
  let allowed = verifiers(o.allowed);
  return {
    respond: (nonce) => {
      const length = Buffer.allocUnsafe(2);
      length.writeUInt16BE(jwt.length);
      return Buffer.concat([length, jwt, o.user.user.sign(nonce)]);
    },
    verify: (nonce, proof) => {
      const p = parseProof(proof);
      const signer = p && allowed.get(p.issuer);
      if (!p || !signer?.(p.signed, p.jwtSignature)) return false; // not a user of an allowed key
      return nkeyVerifier(p.user, ['user'])?.(nonce, p.nonceSignature) ?? false;
    },
    admits: (proof) => allowed.has(parseProof(proof)?.issuer ?? ''),
    processOf: (proof) => parseProof(proof)?.proc,
    allow: (keys) => {
      allowed = verifiers(keys, allowed);
    },
  };
}

/** The parts of a user proof; undefined when it is not one. */
function parseProof(proof: Uint8Array) {
  if (proof.length < 2 + 64) return undefined;
  const b = Buffer.from(proof.buffer, proof.byteOffset, proof.byteLength);
  const length = b.readUInt16BE(0);
  if (2 + length + 64 !== b.length) return undefined;
  const jwt = b.toString('latin1', 2, 2 + length);
  const claims = jwtClaims(jwt);
  if (typeof claims?.iss !== 'string' || typeof claims.sub !== 'string' || claims.nats?.type !== 'user')
    return undefined;
  const cut = jwt.lastIndexOf('.');
  const tags = Array.isArray(claims.nats.tags) ? claims.nats.tags : [];
  const proc = tags.find((t): t is string => typeof t === 'string' && t.startsWith('proc:'));
  return {
    proc: proc?.slice('proc:'.length),
    issuer: claims.iss,
    user: claims.sub,
    signed: Buffer.from(jwt.slice(0, cut), 'latin1'),
    jwtSignature: Buffer.from(jwt.slice(cut + 1), 'base64url'),
    nonceSignature: b.subarray(2 + length),
  };
}
