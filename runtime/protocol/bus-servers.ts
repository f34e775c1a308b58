// The core servers of a bus troupe runs as a NATS cluster (`troupe start --head --bus-peers …`): a machine named in
// the cluster's server list asks the head to join. The head signs its nats-server's certificate with the cluster's
// CA (routes and clients verify it) and tells it the cluster's name and route port, and the operator's and accounts'
// JWTs its server needs (servers of the bus then pass account updates on among themselves). They travel as JWTs and
// public keys, checked, never as config text: the joining machine renders its server's config itself, so nothing
// from the bus is written into it unchecked. Subjects: `subjects.headBusJoin` and `headBusUsers`, which only the node
// role may publish.
import { createHash } from 'node:crypto';
import * as v from 'valibot';
import { schemaCheck } from './check.ts';
import { ROLES, type Role } from './permissions.ts';

/** One credential of the cluster: its signing key's public key (`A…`) and the role whose permissions it has. */
export interface BusUser {
  publicKey: string;
  role: Role;
}

export interface BusJoinRequest {
  /** The host of the server list this machine serves at: the certificate names it (and loopback), nothing else. */
  host: string;
  /** Its server's public key (SPKI PEM); the private key never leaves the machine. */
  publicKeyPem: string;
}

export interface BusJoinAnswer {
  clusterName: string;
  routePort: number;
  /** The server's certificate, signed by the cluster's CA (the joiner checks it against the CA it trusts). */
  certPem: string;
  auth: ServerAuth;
}

/** What a server of the bus needs to know the cluster's users (identities.ts renders it): the operator's JWT, the
 * system account, and the accounts' JWTs. Signed by the operator: the server checks them itself. */
export interface ServerAuth {
  operator: string;
  systemAccount: string;
  accounts: Array<{ publicKey: string; jwt: string }>;
}

export interface BusUsersRequest {
  /** sha256 (hex) of the users the asker has, as usersDigest() makes it. */
  have: string;
}

/** `users` (and the JWTs that list them) only when they differ from what the asker has. */
export interface BusUsersAnswer {
  digest: string;
  users?: BusUser[];
  auth?: ServerAuth;
}

const accountKey = v.pipe(v.string(), v.regex(/^A[A-Z2-7]{55}$/));
const user = v.object({
  publicKey: accountKey,
  role: v.picklist(ROLES as Role[]),
});
const users = v.pipe(v.array(user), v.maxLength(100_000));
const pem = v.pipe(v.string(), v.maxLength(16_384));
/** A JWT: three base64url parts. The account's lists every credential's template (a few KiB each). */
const jwt = v.pipe(v.string(), v.maxLength(16 << 20), v.regex(/^[\w-]+\.[\w-]+\.[\w-]+$/));
const auth = v.object({
  operator: jwt,
  systemAccount: accountKey,
  accounts: v.pipe(v.array(v.object({ publicKey: accountKey, jwt })), v.minLength(2), v.maxLength(2)),
});

export const checkBusJoinRequest = schemaCheck(
  'bus join request',
  v.object({ host: v.pipe(v.string(), v.regex(/^[0-9A-Za-z.:-]{1,253}$/)), publicKeyPem: pem }),
);
export const checkBusJoinAnswer = schemaCheck(
  'bus join answer',
  v.object({
    clusterName: v.pipe(v.string(), v.regex(/^troupe-[0-9a-f]{4,32}$/)),
    routePort: v.pipe(v.number(), v.integer(), v.minValue(1), v.maxValue(65535)),
    certPem: pem,
    auth,
  }),
);
export const checkBusUsersRequest = schemaCheck(
  'bus users request',
  v.object({ have: v.pipe(v.string(), v.maxLength(64)) }),
);
export const checkBusUsersAnswer = schemaCheck(
  'bus users answer',
  v.object({ digest: v.pipe(v.string(), v.maxLength(64)), users: v.optional(users), auth: v.optional(auth) }),
);

/** What a users request names as `have`: a digest of the users in their order. */
export function usersDigest(users: readonly BusUser[]): string {
  return createHash('sha256')
    .update(users.map((u) => `${u.role}:${u.publicKey}`).join('\n'))
    .digest('hex');
}
