// How the two ends of a lane prove who they are: the worker's end sends a fresh nonce, the caller answers with a proof
// over it, and the worker checks the proof before it reads anything else. A nonce is never used twice, so a proof
// seen once (in a core dump, say) opens nothing later. Two ways to prove: the cluster token (an HMAC of the nonce),
// and a credential (a signature of the nonce by its signing key, one the worker's configuration allows on lanes).
import { createHash, createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { nkeyVerifier } from './nkey.ts';
import { parseCredential } from './credential.ts';

type Verifier = NonNullable<ReturnType<typeof nkeyVerifier>>;

/** Bytes of the nonce a lane server sends. */
export const NONCE_BYTES = 32;
/** Longest proof a lane server reads (an NKEY proof is 56 + 64 bytes). */
export const MAX_PROOF_BYTES = 512;

export interface LaneAuth {
  /** The proof this process gives for a server's nonce. */
  respond(nonce: Uint8Array): Uint8Array;
  /** Whether `proof` answers `nonce`: made for this very nonce by a process allowed on lanes. Never throws. */
  verify(nonce: Uint8Array, proof: Uint8Array): boolean;
  /** Whether the identity that made `proof`, verified earlier, is still allowed (the lanes it opened close when it is
   * not). Absent: always. */
  admits?(proof: Uint8Array): boolean;
}

/** A credential's lane auth, whose allowed keys change as the cluster's credentials do. */
export interface NkeyLaneAuth extends LaneAuth {
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

/** Public keys are 56 characters of base32 (an NKEY's encoding). */
const PUBLIC_KEY_CHARS = 56;

/** Proof by a credential: its signing key's public key, then its signature of the nonce. `allowed`: the signing keys
 * whose holders may open lanes to this process (from its own configuration, never from the bus). */
export function nkeyLaneAuth(o: { credential: string; allowed: Iterable<string> }): NkeyLaneAuth {
  const { signer } = parseCredential(o.credential);
  const publicKey = Buffer.from(signer.publicKey, 'latin1');
  const verifiers = (keys: Iterable<string>, kept = new Map<string, Verifier>()) => {
    const out = new Map<string, Verifier>();
    for (const k of keys) {
      const v = kept.get(k) ?? nkeyVerifier(k, ['account']);
      if (v) out.set(k, v); // not a signing key's public key: nobody can prove it
    }
    return out;
  };
  let allowed = verifiers(o.allowed);
  const keyOf = (proof: Uint8Array) =>
    proof.length > PUBLIC_KEY_CHARS ? Buffer.from(proof.subarray(0, PUBLIC_KEY_CHARS)).toString('latin1') : '';
  return {
    respond: (nonce) => Buffer.concat([publicKey, signer.sign(nonce)]),
    verify: (nonce, proof) => {
      const check = allowed.get(keyOf(proof));
      return check?.(nonce, proof.subarray(PUBLIC_KEY_CHARS)) ?? false; // not allowed, or not a key: no
    },
    admits: (proof) => allowed.has(keyOf(proof)),
    allow: (keys) => {
      allowed = verifiers(keys, allowed);
    },
  };
}
