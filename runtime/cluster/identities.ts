// The cluster's identities: one NATS NKEY user per role (and per credential made with `troupe token create`), kept
// with their seeds in the head's session dir (mode 0600), and rendered into nats-server's `authorization` block with
// each role's permissions (runtime/protocol/permissions.ts). The server holds only public keys; a client proves it
// holds a seed by signing the server's nonce, so no secret crosses the wire. Revoking is: remove, rewrite the
// config, SIGHUP nats-server (it re-checks connected clients and closes those it no longer knows).
import { existsSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createUser } from '@nats-io/nkeys';
import { nkeyUser } from '../bus/nkey.ts';
import { writePrivateFile } from '../base/config.ts';
import { UsageError } from '../base/errors.ts';
import { permissionsFor, type Role } from '../protocol/permissions.ts';
import type { BusUser } from '../protocol/bus-servers.ts';
import { readRunFiles } from './run-files.ts';
import { isAlive } from '../base/processes.ts';

export interface Identity {
  name: string;
  role: Role;
  publicKey: string;
  /** The credential: an NKEY user seed (`SU…`). */
  seed: string;
  created: string;
  /** Made by `start --head`: the cluster needs it, so it cannot be revoked. */
  builtin?: boolean;
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

/** The public key (`U…`) of a user seed; a UsageError if it is not one. */
export function publicKeyOf(seed: string): string {
  try {
    return nkeyUser(seed).publicKey;
  } catch (e) {
    throw new UsageError('not a troupe credential (an NKEY user seed, SU…)', { cause: e });
  }
}

function newIdentity(role: Role, name: string, builtin = false): Identity {
  const kp = createUser();
  const seed = new TextDecoder().decode(kp.getSeed());
  return { name, role, publicKey: kp.getPublicKey(), seed, created: new Date().toISOString(), builtin };
}

/** Makes the built-in identities of a new cluster and writes them and the auth config. */
export function createIdentities(sessionDir: string): Identity[] {
  const ids = BUILTINS.map(([name, role]) => newIdentity(role, name, true));
  saveIdentities(sessionDir, ids);
  return ids;
}

export function hasIdentities(sessionDir: string): boolean {
  return existsSync(file(sessionDir));
}

export function readIdentities(sessionDir: string): Identity[] {
  let text: string;
  try {
    text = readFileSync(file(sessionDir), 'utf8');
  } catch {
    throw new UsageError(`no identities in ${sessionDir}: this cluster was not started by 'troupe start --head' here`);
  }
  return JSON.parse(text) as Identity[];
}

function saveIdentities(sessionDir: string, ids: Identity[]): void {
  writePrivateFile(file(sessionDir), `${JSON.stringify(ids, null, 2)}\n`);
  writePrivateFile(join(sessionDir, AUTH_CONF), renderAuthorization(ids));
}

/** The built-in identity named `name`. */
export function builtinIdentity(ids: Identity[], name: BuiltinName): Identity {
  const id = ids.find((i) => i.builtin && i.name === name);
  if (!id) throw new UsageError(`this cluster has no ${name} identity`);
  return id;
}

/** Runs a read-modify-write of the identities alone: two `troupe token` commands at once would each write the list
 * they read, and one credential would vanish (from the file, and from nats-server at its next reload). The lock file
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

/** Adds a credential of `role` named `name` (default: role and a number). Reload nats-server after. */
export function addIdentity(sessionDir: string, role: Role, name?: string): Identity {
  if (!CREATABLE_ROLES.includes(role))
    throw new UsageError(`--role must be one of ${CREATABLE_ROLES.join(', ')} (got ${JSON.stringify(role)})`);
  return alone(sessionDir, () => addLocked(sessionDir, role, name));
}

function addLocked(sessionDir: string, role: Role, name?: string): Identity {
  const ids = readIdentities(sessionDir);
  const n = name ?? `${role}-${ids.filter((i) => i.role === role).length + 1}`;
  if (!/^[\w.-]{1,64}$/.test(n)) throw new UsageError(`--name: letters, digits, '.', '_', '-' only (got ${n})`);
  if (ids.some((i) => i.name === n)) throw new UsageError(`a credential named ${n} exists`);
  const id = newIdentity(role, n);
  saveIdentities(sessionDir, [...ids, id]);
  return id;
}

/** Removes the credential named `nameOrKey` (or with that public key). Reload nats-server after. */
export function revokeIdentity(sessionDir: string, nameOrKey: string): Identity {
  return alone(sessionDir, () => revokeLocked(sessionDir, nameOrKey));
}

function revokeLocked(sessionDir: string, nameOrKey: string): Identity {
  const ids = readIdentities(sessionDir);
  const id = ids.find((i) => i.name === nameOrKey || i.publicKey === nameOrKey);
  if (!id) throw new UsageError(`no credential named ${JSON.stringify(nameOrKey)} (see 'troupe token list')`);
  if (id.builtin && UNREVOCABLE.includes(id.name))
    throw new UsageError(
      `the built-in ${id.name} identity cannot be revoked: the cluster runs on it` +
        (id.role === 'driver' ? " (hand out credentials made with 'troupe token create --role driver' instead)" : ''),
    );
  saveIdentities(
    sessionDir,
    ids.filter((i) => i !== id),
  );
  return id;
}

/** nats-server's `authorization` block: one NKEY user per identity, with its role's permissions. */
export function renderAuthorization(ids: ReadonlyArray<Pick<Identity, 'publicKey' | 'role'>>): string {
  const users = ids.map((i) => {
    const p = permissionsFor(i.role, i.publicKey);
    const allow = (xs: string[]) => `{ allow: ${JSON.stringify(xs)} }`;
    const perms = `publish: ${allow(p.publish)}, subscribe: ${allow(p.subscribe)}`;
    return `    { nkey: ${i.publicKey}, permissions: { ${perms} } }`;
  });
  return `authorization {\n  users = [\n${users.join('\n')}\n  ]\n}\n`;
}

/** The users every core server of the bus must know: the identities' public keys and roles, no seed. */
export function busUsers(sessionDir: string): BusUser[] {
  return readIdentities(sessionDir).map(({ publicKey, role }) => ({ publicKey, role }));
}

/** Another core server's users, as the head gave them (checked: public keys and roles only), written as its auth
 * config. Reload its nats-server after. */
export function writeBusUsers(dir: string, users: BusUser[]): void {
  writePrivateFile(join(dir, AUTH_CONF), renderAuthorization(users));
}

/** Makes nats-server read its config again: users added or revoked take effect, and clients whose identity is gone
 * are disconnected. */
export function reloadNatsServer(pid: number): void {
  process.kill(pid, 'SIGHUP');
}

export interface HeadHere {
  sessionDir: string;
  natsPid: number;
}

/** The nats-server `troupe start --head` runs on this machine, for the cluster at `address` (or the only one): its
 * session dir holds the identities, and its pid is what a change of them reloads. */
export function headHere(address: string | undefined): HeadHere | undefined {
  const running = readRunFiles().filter((r) => r.role === 'nats' && isAlive(r.pid));
  const nats = running.find((r) => r.address === address) ?? (running.length === 1 ? running[0] : undefined);
  return nats && { sessionDir: nats.sessionDir, natsPid: nats.pid };
}
