// A troupe credential: a signing key of the cluster's NATS account, with that account's public key, as one line
// `SA….A…`. nats-server runs in operator mode: the account's JWT lists each signing key with its role's permissions
// (a scoped key), so any user a key signs has exactly those, and revoking a credential is removing its key from the
// account, which closes every connection it signed on every server. Each connection signs a user of its own (a fresh
// key: its inbox is its own) and proves it holds that user's key by signing the server's nonce; no secret crosses
// the wire. The JWTs are made here with Node's Ed25519, as nkey.ts makes keys: @nats-io/jwt took 36–108 ms a user.
import { randomBytes } from 'node:crypto';
import type { Authenticator } from '@nats-io/nats-core';
import { newNkey, nkeyPair, type NkeyPair } from './nkey.ts';

export interface Credential {
  /** The signing key (an account key, `SA…`): users it signs get its scope's permissions. */
  signer: NkeyPair;
  /** The account its users belong to (`A…`). The system account's own key signs its users itself. */
  account: string;
}

const FORM = /^(SA[A-Z2-7]{56})\.(A[A-Z2-7]{55})$/;

/** Whether `text` has a credential's form (else it is a plain token, for a nats-server of the user's own). */
export function isCredential(text: string): boolean {
  return FORM.test(text);
}

/** The credential in `text`; a TypeError if it is not one. */
export function parseCredential(text: string): Credential {
  const m = FORM.exec(text);
  if (!m) throw new TypeError('not a troupe credential (SA….A…)');
  return { signer: nkeyPair(m[1], 'account'), account: m[2] };
}

export function formatCredential(signingSeed: string, account: string): string {
  return `${signingSeed}.${account}`;
}

/** Claims of a NATS JWT (v2) besides those encodeJwt() fills in. */
export interface JwtClaims {
  sub: string;
  name: string;
  nats: Record<string, unknown> & { type: 'operator' | 'account' | 'user' };
}

/** A NATS JWT (v2, `ed25519-nkey`) of `claims`, signed by `signer`. `iat` in seconds: an account's must grow with
 * each version, since servers keep the newest they saw. */
export function encodeJwt(claims: JwtClaims, signer: NkeyPair, iat = Math.floor(Date.now() / 1000)): string {
  const body = {
    jti: randomBytes(16).toString('base64url'),
    iat,
    iss: signer.publicKey,
    name: claims.name,
    sub: claims.sub,
    aud: 'NATS',
    nats: { ...claims.nats, version: 2 },
  };
  const part = (x: unknown) => Buffer.from(JSON.stringify(x)).toString('base64url');
  const signed = `${part({ typ: 'JWT', alg: 'ed25519-nkey' })}.${part(body)}`;
  return `${signed}.${signer.sign(Buffer.from(signed)).toString('base64url')}`;
}

/** What a connection authenticates with: a user JWT and the user's key, to sign the server's nonce. */
export interface SignedUser {
  jwt: string;
  user: NkeyPair;
}

/** What a scoped key's template reads from a user's JWT as `{{tag(name)}}`: the worker role's permissions name its
 * own process and node this way (protocol/permissions.ts). */
export interface UserTags {
  proc?: string;
  node?: string;
}

/** A tag's value goes into subjects as one token: a `*`, `>` or `.` in it would widen the permissions it names. */
const TAG_VALUE = /^[\w-]{1,128}$/;

/** A new user signed by `c` (no permissions of its own: a scoped key's template gives them, with this user's public
 * key in `{{subject()}}`). */
export function signUser(c: Credential, name: string): SignedUser {
  const { pair: user } = newNkey('user');
  return { jwt: userJwt(c, name, user.publicKey, {}), user };
}

/** The JWT of user `sub` signed by `c`, with `tags`. The system account's users name no limits of their own either,
 * so they get none. */
function userJwt(c: Credential, name: string, sub: string, tags: UserTags): string {
  const tagList = Object.entries(tags).map(([k, v]) => {
    if (typeof v !== 'string' || !TAG_VALUE.test(v)) throw new TypeError(`a user's ${k} tag must be one subject token`);
    return `${k}:${v}`;
  });
  const nats =
    c.signer.publicKey === c.account
      ? { type: 'user' as const, subs: -1, data: -1, payload: -1 }
      : { type: 'user' as const, issuer_account: c.account, ...(tagList.length ? { tags: tagList } : {}) };
  return encodeJwt({ sub, name, nats }, c.signer);
}

/** A user one process signed for another (a node for each of its workers, tagged with the worker's process and node):
 * the other connects as this user only. It holds no signing key, so it cannot make a user with other tags. */
export interface IssuedUser {
  jwt: string;
  seed: string;
}

export function issueUser(c: Credential, name: string, tags: UserTags): IssuedUser {
  const { seed, pair } = newNkey('user');
  return { jwt: userJwt(c, name, pair.publicKey, tags), seed };
}

/** The issued user in `x` (from an IPC message: checked); a TypeError if it is not one. */
export function takeIssuedUser(x: unknown): SignedUser {
  const u = x as Partial<IssuedUser> | undefined;
  if (typeof u?.jwt !== 'string' || typeof u.seed !== 'string' || u.jwt.split('.').length !== 3)
    throw new TypeError('not an issued user (jwt and seed)');
  return { jwt: u.jwt, user: nkeyPair(u.seed, 'user') };
}

/** The claims of a NATS JWT, undefined when `jwt` is not one. Its signature is not checked here. */
export function jwtClaims(
  jwt: string,
): { iss?: unknown; sub?: unknown; nats?: { type?: unknown; tags?: unknown } } | undefined {
  const parts = jwt.split('.');
  if (parts.length !== 3) return undefined;
  try {
    const claims: unknown = JSON.parse(Buffer.from(parts[1], 'base64url').toString('utf8'));
    return claims && typeof claims === 'object' ? claims : undefined;
  } catch {
    return undefined;
  }
}

/** nats.js's jwtAuthenticator, signing natively. */
export function userAuthenticator(u: SignedUser): Authenticator {
  return (nonce) => ({ jwt: u.jwt, sig: u.user.sign(Buffer.from(nonce ?? '')).toString('base64') });
}
