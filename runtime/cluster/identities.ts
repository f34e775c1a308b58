// The cluster's identities. nats-server runs in operator mode: an operator key signs two accounts, the system account
// (which pushes account updates) and the cluster's account, and every credential is a signing key of the cluster's
// account, scoped to its role's permissions (runtime/protocol/permissions.ts; see bus/credential.ts). The keys live
// in the head's session dir (mode 0600); nats-server's config (auth.conf) holds only JWTs and public keys. Creating
// or revoking a credential re-signs the account's JWT, which the system user pushes to the servers
// (account-update.ts): a revoked key's connections close on every server. No SIGHUP: in operator mode a reload
// closes every connection.
import { existsSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { encodeJwt, formatCredential, parseCredential } from '../bus/credential.ts';
import { newNkey, nkeyPair, type NkeyPair } from '../bus/nkey.ts';
import { writePrivateFile } from '../base/config.ts';
import { UsageError } from '../base/errors.ts';
import { permissionsFor, type Permissions, type Role, TEMPLATE_USER } from '../protocol/permissions.ts';
import type { BusUser, ServerAuth } from '../protocol/bus-servers.ts';
import { readRunFiles } from './run-files.ts';
import { isAlive } from '../base/processes.ts';

export interface Identity {
  name: string;
  role: Role;
  /** The signing key's public key (`A…`): what `token list` shows and the lanes allow. */
  publicKey: string;
  /** The credential (bus/credential.ts): the signing key's seed and the account's public key. */
  credential: string;
  created: string;
  /** Made by `start --head`: the cluster needs it, so it cannot be revoked. */
  builtin?: boolean;
  /** Permissions of its own instead of its role's (the bench's references). */
  scope?: Permissions;
}

/** What `troupe token create` may make: the worker identity is the cluster's own. A head credential is for a standby
 * head (`troupe start --head --address`) and holds every right the head has. */
export const CREATABLE_ROLES: readonly Role[] = ['driver', 'node', 'cli', 'head'];
/** The built-in identities, by name. `node` is the join credential (the join line prints it: revocable, so a leaked
 * line can be); the head machine's own node daemon runs as `local-node`. The cluster runs on `head`, `worker`,
 * `local-node` and `driver` (this machine's drivers, submitted jobs): those cannot be revoked. */
export type BuiltinName = Role | 'local-node';
const BUILTINS: ReadonlyArray<[BuiltinName, Role]> = [
  ['head', 'head'],
  ['node', 'node'],
  ['local-node', 'node'],
  ['driver', 'driver'],
  ['worker', 'worker'],
  ['cli', 'cli'],
];
const UNREVOCABLE: readonly string[] = ['head', 'worker', 'local-node', 'driver'];

const file = (sessionDir: string) => join(sessionDir, 'identities.json');
/** Included by nats-server.conf. */
export const AUTH_CONF = 'auth.conf';

/** The public key (`A…`) of a credential's signing key; a UsageError if it is not a credential. */
export function publicKeyOf(credential: string): string {
  try {
    return parseCredential(credential).signer.publicKey;
  } catch (e) {
    throw new UsageError('not a troupe credential (SA….A…, as troupe token create prints it)', { cause: e });
  }
}

/** What identities.json holds: the seeds of the operator and the two accounts, and the credentials. */
interface Keys {
  format: 2;
  operator: string;
  system: string;
  account: string;
  /** The `iat` of the account's newest JWT: each new one must be later, since servers keep the newest they saw. */
  accountIat: number;
  identities: Identity[];
  /** The JWTs made from the above when they were saved (what the servers have). */
  auth: ServerAuth;
}

function newIdentity(account: string, role: Role, name: string, builtin = false): Identity {
  const { seed, pair } = newNkey('account');
  const credential = formatCredential(seed, account);
  return { name, role, publicKey: pair.publicKey, credential, created: new Date().toISOString(), builtin };
}

const pairOf = (seed: string) => nkeyPair(seed, seed.startsWith('SO') ? 'operator' : 'account');

/** Makes the keys and built-in identities of a new cluster and writes them and the auth config. */
export function createIdentities(sessionDir: string): Identity[] {
  const account = newNkey('account');
  const keys: Omit<Keys, 'auth'> = {
    format: 2,
    operator: newNkey('operator').seed,
    system: newNkey('account').seed,
    account: account.seed,
    accountIat: 0,
    identities: BUILTINS.map(([name, role]) => newIdentity(account.pair.publicKey, role, name, true)),
  };
  saveKeys(sessionDir, keys);
  return keys.identities;
}

export function hasIdentities(sessionDir: string): boolean {
  return existsSync(file(sessionDir));
}

export function readIdentities(sessionDir: string): Identity[] {
  return readKeys(sessionDir).identities;
}

function readKeys(sessionDir: string): Keys {
  let text: string;
  try {
    text = readFileSync(file(sessionDir), 'utf8');
  } catch {
    throw new UsageError(`no identities in ${sessionDir}: this cluster was not started by 'troupe start --head' here`);
  }
  const keys = JSON.parse(text) as Keys | Array<Omit<Identity, 'credential'>>;
  return Array.isArray(keys) ? fromUserKeys(sessionDir, keys) : keys;
}

/** A session dir of an earlier troupe, whose credentials were NKEY users of a config-mode server: the same names and
 * roles, with new credentials (the old ones mean nothing to an operator-mode server). */
function fromUserKeys(sessionDir: string, old: Array<Omit<Identity, 'credential'>>): Keys {
  createIdentities(sessionDir);
  const keys = JSON.parse(readFileSync(file(sessionDir), 'utf8')) as Keys;
  const account = publicKeyOfSeed(keys.account);
  keys.identities = old.map((i) => ({ ...newIdentity(account, i.role, i.name, i.builtin), created: i.created }));
  saveKeys(sessionDir, keys);
  console.error(
    `troupe: ${sessionDir} held credentials of an earlier troupe: each was made again (same names and roles). ` +
      "Give joining machines the new join line, and credentials made with 'troupe token create' again",
  );
  return readKeys(sessionDir);
}

const publicKeyOfSeed = (seed: string) => pairOf(seed).publicKey;

/** The account JWT's `iat` for a new version: now, or one more than the last if that is not earlier. */
function nextIat(last: number): number {
  return Math.max(Math.floor(Date.now() / 1000), last + 1);
}

function saveKeys(sessionDir: string, changed: Omit<Keys, 'auth'>): void {
  const keys = { ...changed, accountIat: nextIat(changed.accountIat) };
  const auth = serverAuthOf(keys);
  writePrivateFile(file(sessionDir), `${JSON.stringify({ ...keys, auth }, null, 2)}\n`);
  writeServerAuth(sessionDir, auth);
}

/** The built-in identity named `name`. */
export function builtinIdentity(ids: Identity[], name: BuiltinName): Identity {
  const id = ids.find((i) => i.builtin && i.name === name);
  if (!id) throw new UsageError(`this cluster has no ${name} identity`);
  return id;
}

/** Runs a read-modify-write of the identities alone: two `troupe token` commands at once would each write the list
 * they read, and one credential would vanish (from the file, and from the servers at the next push). The lock file
 * names its holder; one whose holder is gone is removed (takeOver) and the race for it starts again. */
function alone<T>(sessionDir: string, fn: () => T): T {
  const lock = join(sessionDir, 'identities.lock');
  const deadline = Date.now() + 10_000;
  for (;;) {
    try {
      writeFileSync(lock, String(process.pid), { flag: 'wx', mode: 0o600 });
      break;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
    }
    let holder = Number.NaN;
    try {
      holder = Number(readFileSync(lock, 'utf8'));
    } catch {
      continue; // released meanwhile
    }
    if (holder > 0 && !isAlive(holder)) takeOver(lock, holder);
    else if (Date.now() > deadline)
      throw new UsageError(`another troupe token command (pid ${holder}) holds ${lock}; try again when it is done`);
    else Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 20);
  }
  try {
    return fn();
  } finally {
    rmSync(lock, { force: true });
  }
}

/** Removes a lock left by `dead`. One process at a time (a second lock guards this), and only if the lock still
 * names `dead`: another process that saw the same dead holder may already have removed it and taken the lock anew. */
function takeOver(lock: string, dead: number): void {
  const guard = `${lock}.takeover`;
  try {
    writeFileSync(guard, String(process.pid), { flag: 'wx', mode: 0o600 });
  } catch {
    return; // another process is taking it over: race for the lock again
  }
  try {
    if (readFileSync(lock, 'utf8') === String(dead)) rmSync(lock);
  } catch {
    // gone already
  } finally {
    rmSync(guard, { force: true });
  }
}

/** Adds a credential of `role` named `name` (default: role and a number). Push the account after
 * (account-update.ts). `scope`: other permissions than the role's (the bench's references: every subject). */
export function addIdentity(sessionDir: string, role: Role, name?: string, scope?: Permissions): Identity {
  if (!CREATABLE_ROLES.includes(role))
    throw new UsageError(`--role must be one of ${CREATABLE_ROLES.join(', ')} (got ${JSON.stringify(role)})`);
  return alone(sessionDir, () => addLocked(sessionDir, role, name, scope));
}

function addLocked(sessionDir: string, role: Role, name?: string, scope?: Permissions): Identity {
  const keys = readKeys(sessionDir);
  const ids = keys.identities;
  const n = name ?? `${role}-${ids.filter((i) => i.role === role).length + 1}`;
  if (!/^[\w.-]{1,64}$/.test(n)) throw new UsageError(`--name: letters, digits, '.', '_', '-' only (got ${n})`);
  if (ids.some((i) => i.name === n)) throw new UsageError(`a credential named ${n} exists`);
  const id = { ...newIdentity(publicKeyOfSeed(keys.account), role, n), ...(scope ? { scope } : {}) };
  const next = { ...keys, identities: [...ids, id] };
  if (accountJwt(serverAuthOf(next)).length > MAX_ACCOUNT_JWT_BYTES)
    throw new UsageError(
      `this cluster has ${ids.length} credentials, and the account that lists them would pass nats-server's message ` +
        "limit (1 MiB) with one more: revoke ones no longer used ('troupe token list', 'troupe token revoke')",
    );
  saveKeys(sessionDir, next);
  return id;
}

/** The account's JWT is sent to the servers as one message (account-update.ts), under nats-server's max_payload
 * (1 MiB): each credential adds its role's permissions to it, about 3 KB for a driver's, so some 300 fit. */
const MAX_ACCOUNT_JWT_BYTES = 1_000_000;

/** Removes the credential named `nameOrKey` (or with that public key). Push the account after. */
export function revokeIdentity(sessionDir: string, nameOrKey: string): Identity {
  return alone(sessionDir, () => revokeLocked(sessionDir, nameOrKey));
}

function revokeLocked(sessionDir: string, nameOrKey: string): Identity {
  const keys = readKeys(sessionDir);
  const id = keys.identities.find((i) => i.name === nameOrKey || i.publicKey === nameOrKey);
  if (!id) throw new UsageError(`no credential named ${JSON.stringify(nameOrKey)} (see 'troupe token list')`);
  if (id.builtin && UNREVOCABLE.includes(id.name))
    throw new UsageError(
      `the built-in ${id.name} identity cannot be revoked: the cluster runs on it` +
        (id.role === 'driver' ? " (hand out credentials made with 'troupe token create --role driver' instead)" : ''),
    );
  saveKeys(sessionDir, { ...keys, identities: keys.identities.filter((i) => i !== id) });
  return id;
}

/** The account's limits: none (JetStream on). */
const UNLIMITED = {
  subs: -1,
  conn: -1,
  leaf: -1,
  imports: -1,
  exports: -1,
  data: -1,
  payload: -1,
  wildcards: true,
};
const JETSTREAM = { mem_storage: -1, disk_storage: -1, streams: -1, consumer: -1 };

/** A scoped signing key's template: its role's permissions, the user's own inbox by its public key, and a worker's
 * own subjects by the tags its node signed into its JWT. */
function template(i: Identity): Record<string, unknown> {
  const p = i.scope ?? permissionsFor(i.role, TEMPLATE_USER);
  return { pub: { allow: p.publish }, sub: { allow: p.subscribe }, subs: -1, data: -1, payload: -1 };
}

/** The JWTs the servers need: the operator's, and the two accounts' (the cluster's lists every credential). */
function serverAuthOf(keys: Omit<Keys, 'auth'>): ServerAuth {
  const operator = pairOf(keys.operator);
  const system = pairOf(keys.system);
  const account = pairOf(keys.account);
  const signing_keys = keys.identities.map((i) => ({
    kind: 'user_scope',
    key: i.publicKey,
    role: i.name,
    template: template(i),
  }));
  const signAccount = (name: string, a: NkeyPair, nats: Record<string, unknown>, iat?: number) =>
    encodeJwt({ sub: a.publicKey, name, nats: { type: 'account', ...nats } }, operator, iat);
  return {
    operator: encodeJwt(
      { sub: operator.publicKey, name: 'troupe', nats: { type: 'operator', system_account: system.publicKey } },
      operator,
    ),
    systemAccount: system.publicKey,
    accounts: [
      { publicKey: system.publicKey, jwt: signAccount('SYS', system, { limits: UNLIMITED }) },
      {
        publicKey: account.publicKey,
        jwt: signAccount('troupe', account, { limits: { ...UNLIMITED, ...JETSTREAM }, signing_keys }, keys.accountIat),
      },
    ],
  };
}

/** The JWTs of the cluster whose keys are in `sessionDir`. */
export function serverAuth(sessionDir: string): ServerAuth {
  return readKeys(sessionDir).auth;
}

/** The cluster's account (the one that is not the system's). */
const clusterAccount = (auth: ServerAuth) => auth.accounts.find((a) => a.publicKey !== auth.systemAccount)!;

/** The cluster's account's public key (`A…`): JetStream keeps its data under this name. */
export function accountOf(auth: ServerAuth): string {
  return clusterAccount(auth).publicKey;
}

/** The cluster's account's JWT, which lists the credentials. */
export function accountJwt(auth: ServerAuth): string {
  return clusterAccount(auth).jwt;
}

/** The system account's own credential: it pushes account updates (account-update.ts). */
export function systemCredential(sessionDir: string): string {
  const { system } = readKeys(sessionDir);
  return formatCredential(system, publicKeyOfSeed(system));
}

/** nats-server's operator-mode config: the operator, the system account, a full resolver (its dir under `dir`, synced
 * with the other servers of a bus), and the accounts' JWTs preloaded. */
export function renderServerAuth(auth: ServerAuth, dir: string): string {
  const preload = auth.accounts.map((a) => `  ${a.publicKey}: ${a.jwt}`);
  return [
    `operator: ${auth.operator}`,
    `system_account: ${auth.systemAccount}`,
    `resolver: { type: full, dir: ${JSON.stringify(join(dir, 'accounts'))}, allow_delete: false, interval: "5s" }`,
    'resolver_preload: {',
    ...preload,
    '}',
    '',
  ].join('\n');
}

/** Writes the auth config of the server whose session dir is `dir` (a bus server's: as the head gave it, checked). */
export function writeServerAuth(dir: string, auth: ServerAuth): void {
  writePrivateFile(join(dir, AUTH_CONF), renderServerAuth(auth, dir));
}

/** The credentials lanes may know: the signing keys' public keys and roles, no seed. */
export function busUsers(sessionDir: string): BusUser[] {
  return readIdentities(sessionDir).map(({ publicKey, role }) => ({ publicKey, role }));
}

export interface HeadHere {
  sessionDir: string;
  /** Where this machine reaches it. */
  address: string;
}

/** The nats-server `troupe start --head` runs on this machine, for the cluster at `address` (or the only one): its
 * session dir holds the identities. */
export function headHere(address: string | undefined): HeadHere | undefined {
  const running = readRunFiles().filter((r) => r.role === 'nats' && isAlive(r.pid));
  const nats = running.find((r) => r.address === address) ?? (running.length === 1 ? running[0] : undefined);
  return nats && { sessionDir: nats.sessionDir, address: nats.address };
}
