// The permission sets per role (runtime/protocol/permissions.ts) against subjects.ts, and the nats-server config
// identities.ts renders from them (checked by nats-server itself, `-t`). Enforcement by a real server, role by role,
// is in test/cluster/attacks-roles.test.ts.
import test from 'ava';
import { execFile, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { subjects } from '../../runtime/protocol/subjects.ts';
import {
  inboxPrefix,
  permissionsFor,
  ROLES,
  rolePermissions,
  type Role,
  type UserNames,
} from '../../runtime/protocol/permissions.ts';
import { inboxOf } from '../../runtime/bus/bus.ts';
import { isCredential } from '../../runtime/bus/credential.ts';
import {
  addIdentity,
  accountJwt,
  AUTH_CONF,
  builtinIdentity,
  createIdentities,
  publicKeyOf,
  readIdentities,
  revokeIdentity,
  serverAuth,
} from '../../runtime/cluster/identities.ts';
import { findNatsServer } from '../../runtime/cluster/nats-binary.mjs';
import { UsageError } from '../../runtime/base/errors.ts';

const temp = mkdtempSync(join(tmpdir(), 'troupe-permissions-'));
test.after.always(() => rmSync(temp, { recursive: true, force: true }));

/** NATS subject matching: `*` one token, `>` the rest. */
function matches(pattern: string, subject: string): boolean {
  const p = pattern.split('.');
  const s = subject.split('.');
  for (let i = 0; i < p.length; i++) {
    if (p[i] === '>') return s.length > i;
    if (i >= s.length || (p[i] !== '*' && p[i] !== s[i])) return false;
  }
  return p.length === s.length;
}
const allowed = (patterns: readonly string[], subject: string) => patterns.some((p) => matches(p, subject));
/** A user with public key `key`; a worker's user is process x1's on node x1 (the sample ids of everySubject()). */
const as = (key: string): UserNames => ({ key, proc: 'x1', node: 'x1' });

/** Every subject of subjects.ts, made concrete with sample ids. */
function everySubject(): string[] {
  const out: string[] = [];
  const walk = (o: Record<string, unknown>) => {
    for (const v of Object.values(o)) {
      if (typeof v === 'string') out.push(v);
      else if (typeof v === 'function') out.push((v as (a: string, b: number) => string)('x1', 0));
      else if (v && typeof v === 'object') walk(v as Record<string, unknown>);
    }
  };
  walk(subjects);
  return out;
}

test('the matcher follows NATS wildcards', (t) => {
  t.true(matches('troupe.node.*.fenced', 'troupe.node.a.fenced'));
  t.false(matches('troupe.node.*.fenced', 'troupe.node.a.b.fenced'));
  t.true(matches('troupe.>', 'troupe.a.b'));
  t.false(matches('troupe.>', 'troupe'));
  t.false(matches('troupe.node.*', 'troupe.node.a.lease'));
});

test('every subject in subjects.ts is published by some role and subscribed to by some role', (t) => {
  for (const s of everySubject()) {
    t.true(
      ROLES.some((r) => allowed(rolePermissions(r, as('UTEST')).publish, s)),
      `nobody may publish ${s}`,
    );
    t.true(
      ROLES.some((r) => allowed(rolePermissions(r, as('UTEST')).subscribe, s)),
      `nobody may subscribe to ${s}`,
    );
  }
});

test('only drivers register jobs: the head keeps the root a driver registered', (t) => {
  t.true(allowed(permissionsFor('driver', as('UTEST')).publish, subjects.headJobRegister));
  for (const role of ['worker', 'cli', 'node'] as Role[])
    t.false(allowed(permissionsFor(role, as('UTEST')).publish, subjects.headJobRegister), role);
});

test('workers, drivers and the cli cannot publish node control, head events or KV writes', (t) => {
  const forbidden = [
    subjects.nodeFenced('n1'),
    subjects.nodeLease('n1'),
    subjects.nodeActorStop('n1'),
    subjects.procActorStart('p1'),
    subjects.procActorStop('p1'),
    subjects.procLeaseGranted('p1'),
    subjects.evtWorkerDied,
    subjects.evtNodeDied,
    subjects.evtActorState,
    subjects.hbNode('n1'),
    '$KV.troupe-nodes.n1',
    '$KV.troupe-actors.a1',
    '$KV.troupe-names.x',
    '$KV.troupe-submissions.x',
    '$JS.API.STREAM.DELETE.KV_troupe-nodes',
    '$JS.API.STREAM.PURGE.KV_troupe-actors',
    '$JS.API.STREAM.UPDATE.KV_troupe-jobs',
    '$JS.API.STREAM.MSG.DELETE.KV_troupe-nodes',
  ];
  for (const role of ['worker', 'driver', 'cli'] as Role[]) {
    const p = permissionsFor(role, as('UTEST'));
    for (const s of forbidden) t.false(allowed(p.publish, s), `${role} may publish ${s}`);
  }
  // Only drivers write their job records; workers no KV at all.
  t.true(allowed(permissionsFor('driver', as('U')).publish, '$KV.troupe-jobs.j1'));
  t.false(allowed(permissionsFor('worker', as('U')).publish, '$KV.troupe-jobs.j1'));
  const cli = permissionsFor('cli', as('UTEST'));
  for (const s of [subjects.nodeJobSubmit('n1'), subjects.nodeJobStop('n1'), subjects.headActorKill])
    t.false(allowed(cli.publish, s), `cli may publish ${s}`);
  t.false(allowed(cli.publish, '$KV.troupe-jobs.j1'));
});

test('JetStream consumers: none for workers, drivers and the cli; the head and nodes watch cluster state', (t) => {
  const streams = ['KV_troupe-nodes', 'KV_troupe-actors', 'OBJ_troupe-checkpoints', 'OBJ_troupe-runtime-envs'];
  const makes = (role: Role, stream: string) =>
    ['', '.c1', '.c1.$O.x.M.y'].some((tail) =>
      allowed(permissionsFor(role, as('U')).publish, `$JS.API.CONSUMER.CREATE.${stream}${tail}`),
    );
  for (const role of ['worker', 'driver', 'cli'] as Role[])
    for (const stream of [...streams, 'troupe-job-logs']) t.false(makes(role, stream), `${role} on ${stream}`);
  for (const role of ['head', 'node'] as Role[]) t.true(makes(role, 'KV_troupe-nodes'), `${role} watches`);
  t.true(makes('node', 'OBJ_troupe-runtime-envs'), 'a node fetches shipped code');
  // Job logs are read with stream gets (`troupe job logs`), by every role that reads them.
  t.false(makes('node', 'troupe-job-logs'), 'a node writes job logs and reads none');
  for (const role of ['driver', 'cli'] as Role[])
    t.true(allowed(permissionsFor(role, as('U')).publish, '$JS.API.STREAM.MSG.GET.troupe-job-logs'), role);
});

test('the checkpoint store: no access for drivers and workers; a driver asks the head to remove its own', (t) => {
  const store = ['$JS.API.STREAM.MSG.GET', '$JS.API.DIRECT.GET', '$JS.API.STREAM.INFO', '$JS.API.STREAM.PURGE'].map(
    (api) => `${api}.OBJ_troupe-checkpoints`,
  );
  for (const role of ['driver', 'worker', 'cli'] as Role[]) {
    const p = permissionsFor(role, as('U'));
    for (const s of [...store, '$O.troupe-checkpoints.M.eA', '$O.troupe-checkpoints.C.n1'])
      t.false(allowed(p.publish, s), `${role} may publish ${s}`);
  }
  for (const role of ['head', 'node'] as Role[]) t.true(allowed(permissionsFor(role, as('U')).publish, store[0]));
  t.true(allowed(permissionsFor('driver', as('U')).publish, subjects.headCheckpointDelete));
  t.false(allowed(permissionsFor('worker', as('U')).publish, subjects.headCheckpointDelete), 'workers ask their node');
});

test("a worker serves only its own process's subjects and tells only its own node it is blocked", (t) => {
  const w = permissionsFor('worker', as('U'));
  for (const s of [
    subjects.procTask('x1'),
    subjects.procActorStart('x1'),
    subjects.actorCall('x1', 'a1', 0),
    subjects.obj.procRead('x1'),
    subjects.procLeaseGranted('x1'),
  ]) {
    t.true(allowed(w.subscribe, s), s);
    t.false(allowed(w.subscribe, s.replace('.x1.', '.x2.')), `another worker's ${s}`);
  }
  t.false(allowed(w.subscribe, 'troupe.proc.*.task'));
  t.true(allowed(w.publish, subjects.nodeBlocked('x1')));
  t.false(allowed(w.publish, subjects.nodeBlocked('x2')));
  // Calls to any actor, and none served by drivers.
  t.true(allowed(w.publish, subjects.actorCall('x2', 'a1', 0)));
  t.false(allowed(permissionsFor('driver', as('U')).subscribe, subjects.actorCall('x1', 'a1', 0)));
});

test('each identity subscribes only to its own inbox, which is where the Bus puts its replies', (t) => {
  t.is(inboxPrefix('UABC'), inboxOf('UABC'));
  for (const role of ROLES) {
    const p = permissionsFor(role, as('UAAA'));
    t.true(allowed(p.subscribe, `${inboxOf('UAAA')}.x.1`));
    t.false(allowed(p.subscribe, `${inboxOf('UBBB')}.x.1`), `${role} reads another identity's replies`);
    t.false(allowed(p.subscribe, '_INBOX.x.1'));
  }
});

test('identities: one per role, kept 0600; create and revoke; the ones the cluster runs on cannot be', (t) => {
  const dir = join(temp, 'ids');
  const ids = createIdentities(dir);
  t.deepEqual([...new Set(ids.map((i) => i.role))].sort(), [...ROLES].sort());
  for (const i of ids) {
    t.true(isCredential(i.credential));
    t.is(publicKeyOf(i.credential), i.publicKey);
  }
  t.is(statSync(join(dir, 'identities.json')).mode & 0o777, 0o600);
  t.is(statSync(join(dir, AUTH_CONF)).mode & 0o777, 0o600);
  const alice = addIdentity(dir, 'driver', 'alice');
  t.is(readIdentities(dir).length, ids.length + 1);
  t.throws(() => addIdentity(dir, 'driver', 'alice'), { instanceOf: UsageError });
  t.throws(() => addIdentity(dir, 'worker'), { instanceOf: UsageError, message: /--role/ });
  // A standby head's credential: made and revoked like any other, while the built-in head's stays.
  const standby = addIdentity(dir, 'head', 'standby');
  t.is(standby.role, 'head');
  t.is(revokeIdentity(dir, 'standby').publicKey, standby.publicKey);
  t.is(revokeIdentity(dir, alice.publicKey).name, 'alice');
  t.throws(() => revokeIdentity(dir, 'head'), { instanceOf: UsageError, message: /cannot be revoked/ });
  t.throws(() => revokeIdentity(dir, builtinIdentity(ids, 'worker').publicKey), { instanceOf: UsageError });
  for (const name of ['local-node', 'driver'])
    t.throws(() => revokeIdentity(dir, name), { instanceOf: UsageError, message: /cannot be revoked/ });
  t.is(revokeIdentity(dir, 'node').role, 'node', 'the join credential can be revoked');
  t.throws(() => revokeIdentity(dir, 'nobody'), { instanceOf: UsageError });
  t.throws(() => publicKeyOf('not-a-seed'), { instanceOf: UsageError });
});

test('a credential past what one account message can list is refused, saying what to do', (t) => {
  const dir = join(temp, 'many');
  createIdentities(dir);
  // Credentials with about 80 KB of permissions each (the bench's references have scopes of their own): a dozen fit.
  const scope = { publish: Array.from({ length: 4000 }, (_, i) => `bench.${i}.x`), subscribe: [] };
  let made = 0;
  const e = t.throws(
    () => {
      for (; made < 20; made++) addIdentity(dir, 'driver', `big-${made}`, scope);
    },
    { instanceOf: UsageError },
  );
  t.regex(e!.message, /would pass nats-server's message limit \(1 MiB\).*troupe token revoke/);
  const size = accountJwt(serverAuth(dir)).length;
  t.true(size <= 1_000_000 && size > 850_000, `the account's JWT holds ${made} of them in ${size} bytes`);
  t.is(readIdentities(dir).length, 6 + made, 'the refused one is not kept');
  revokeIdentity(dir, 'big-0');
  t.notThrows(() => addIdentity(dir, 'cli', 'after-a-revoke'));
});

test('credentials created at the same time are all kept; a lock left by a dead process is taken over', async (t) => {
  const dir = join(temp, 'race');
  createIdentities(dir);
  writeFileSync(join(dir, 'identities.lock'), '999999999'); // a holder that no longer runs
  const fixture = fileURLToPath(new URL('../fixtures/add-identity.ts', import.meta.url));
  const names = Array.from({ length: 6 }, (_, i) => `racer-${i}`);
  const runs = names.map(
    (name) =>
      new Promise<number | null>((resolve) =>
        execFile(process.execPath, ['--import', 'tsx', fixture, dir, name], (e) => resolve(e ? (e.code as number) : 0)),
      ),
  );
  t.deepEqual(
    await Promise.all(runs),
    names.map(() => 0),
  );
  const kept = readIdentities(dir).map((i) => i.name);
  for (const name of names) t.true(kept.includes(name), `${name} is missing: ${kept.join(', ')}`);
  t.false(existsSync(join(dir, 'identities.lock')));
});

test('nats-server accepts the rendered users and permissions', (t) => {
  const bin = findNatsServer();
  if (!bin) return t.fail('nats-server is needed (scripts/ensure-deps.mjs installs it)');
  const dir = join(temp, 'conf');
  createIdentities(dir);
  addIdentity(dir, 'cli', 'reader');
  const conf = join(dir, 'nats-server.conf');
  writeFileSync(conf, `listen: "127.0.0.1:-1"\ninclude "${AUTH_CONF}"\n`);
  const r = spawnSync(bin, ['-c', conf, '-t'], { encoding: 'utf8' });
  t.is(r.status, 0, r.stderr + r.stdout);
});
