// Another user who creates troupe's directories first must not get to hand troupe a cluster file or code: troupe's
// home, state dir and tsx's cache are used only when they are this user's alone. And the user workers run as
// (--worker-user) is a real, unprivileged user that this process can start processes as.
import test from 'ava';
import { execFileSync, spawnSync } from 'node:child_process';
import { chmodSync, chownSync, mkdirSync, mkdtempSync, rmSync, statSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { privateDirProblem } from '../../runtime/base/private-dir.mjs';
import { resolveWorkerUser } from '../../runtime/base/worker-user.ts';
import { UsageError } from '../../runtime/base/errors.ts';

const guard = fileURLToPath(new URL('../../runtime/base/tsx-cache.mjs', import.meta.url));
const config = new URL('../../runtime/base/config.ts', import.meta.url).href;
const uid = process.geteuid?.() ?? 0;

function tempDir(t: { teardown(fn: () => void): void }): string {
  const dir = mkdtempSync(join(tmpdir(), 'troupe-private-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

test('a missing private dir is created with mode 0700', (t) => {
  const dir = join(tempDir(t), 'home');
  t.is(privateDirProblem(dir), undefined);
  t.is(statSync(dir).mode & 0o777, 0o700);
});

test('a dir others may write to, a link or a file is refused', (t) => {
  const root = tempDir(t);
  const open = join(root, 'open');
  mkdirSync(open);
  chmodSync(open, 0o777);
  t.regex(privateDirProblem(open) ?? '', /others may write to it/);
  symlinkSync(open, join(root, 'link'));
  t.regex(privateDirProblem(join(root, 'link')) ?? '', /symbolic link/);
  execFileSync('touch', [join(root, 'file')]);
  t.truthy(privateDirProblem(join(root, 'file')));
});

test("another user's dir is refused", (t) => {
  if (uid !== 0) {
    // Only root can make a dir that belongs to someone else; CI runs as root.
    t.regex(privateDirProblem('/') ?? '', /belongs to uid 0/);
    return;
  }
  const dir = join(tempDir(t), 'theirs');
  mkdirSync(dir, { mode: 0o700 });
  chownSync(dir, 65534, 65534);
  t.regex(privateDirProblem(dir) ?? '', /belongs to uid 65534, not to this user/);
});

test('troupe refuses a home someone else made first, with a message that says what to do', (t) => {
  const home = join(tempDir(t), 'home');
  mkdirSync(home, { mode: 0o777 });
  chmodSync(home, 0o777);
  const run = spawnSync(
    process.execPath,
    ['--import', 'tsx', '-e', `import(${JSON.stringify(config)}).then((c) => c.clusterFilePath())`],
    { env: { ...process.env, TROUPE_HOME: home }, encoding: 'utf8' },
  );
  t.not(run.status, 0);
  t.regex(run.stderr, /UsageError: troupe's home .* is not private: others may write to it/);
  t.regex(run.stderr, /set TROUPE_HOME to a directory of yours/);
});

test('the default home is per user, in the temp dir', (t) => {
  const tmp = tempDir(t);
  const run = spawnSync(
    process.execPath,
    ['--import', 'tsx', '-e', `import(${JSON.stringify(config)}).then((c) => console.log(c.troupeHome()))`],
    { env: { ...process.env, TROUPE_HOME: '', TMPDIR: tmp }, encoding: 'utf8' },
  );
  t.is(run.stdout.trim(), join(tmp, `troupe-${uid}`), run.stderr);
  t.is(statSync(join(tmp, `troupe-${uid}`)).mode & 0o777, 0o700);
});

test("the state dir (what outlives a reboot) is TROUPE_HOME's when set, else XDG's, else the home's; private", (t) => {
  const root = tempDir(t);
  const stateDir = (env: NodeJS.ProcessEnv) =>
    spawnSync(
      process.execPath,
      ['--import', 'tsx', '-e', `import(${JSON.stringify(config)}).then((c) => console.log(c.troupeState()))`],
      { env: { ...process.env, TROUPE_HOME: '', XDG_STATE_HOME: '', ...env }, encoding: 'utf8' },
    );
  const home = stateDir({ HOME: join(root, 'user') });
  t.is(home.stdout.trim(), join(root, 'user', '.local', 'state', 'troupe'), home.stderr);
  t.is(statSync(join(root, 'user', '.local', 'state', 'troupe')).mode & 0o777, 0o700);
  t.is(stateDir({ XDG_STATE_HOME: join(root, 'xdg') }).stdout.trim(), join(root, 'xdg', 'troupe'));
  t.is(stateDir({ TROUPE_HOME: join(root, 'th') }).stdout.trim(), join(root, 'th', 'state'));
  mkdirSync(join(root, 'open', 'troupe'), { recursive: true });
  chmodSync(join(root, 'open', 'troupe'), 0o777);
  const refused = stateDir({ XDG_STATE_HOME: join(root, 'open') });
  t.not(refused.status, 0);
  t.regex(refused.stderr, /troupe's state dir .* is not private: others may write to it .*--data-dir DIR/);
});

/** What tsx would do in a process whose temp dir is `tmp`: whether it reads its cache. */
function tsxCacheIn(tmp: string): { disabled: boolean; stderr: string } {
  const run = spawnSync(
    process.execPath,
    ['--import', guard, '-e', 'console.log(process.env.TSX_DISABLE_CACHE ?? "")'],
    {
      env: { ...process.env, TMPDIR: tmp, TSX_DISABLE_CACHE: '' },
      encoding: 'utf8',
    },
  );
  return { disabled: run.stdout.trim() === '1', stderr: run.stderr };
}

test("tsx's cache is used when it is ours, and created private when missing", (t) => {
  const tmp = tempDir(t);
  t.false(tsxCacheIn(tmp).disabled);
  t.is(statSync(join(tmp, `tsx-${uid}`)).mode & 0o777, 0o700);
});

test("tsx's cache planted by someone else is not read", (t) => {
  const tmp = tempDir(t);
  const elsewhere = join(tmp, 'planted');
  mkdirSync(elsewhere);
  symlinkSync(elsewhere, join(tmp, `tsx-${uid}`));
  const run = tsxCacheIn(tmp);
  t.true(run.disabled);
  t.regex(run.stderr, /not using tsx's cache .*symbolic link/);
});

test('--worker-user: a user of this machine, not root, and another user only for a daemon run as root', (t) => {
  t.deepEqual(resolveWorkerUser('nobody', 0), { name: 'nobody', uid: 65534, gid: 65534 });
  t.deepEqual(resolveWorkerUser('65534', 0), { name: 'nobody', uid: 65534, gid: 65534 });
  t.deepEqual(resolveWorkerUser('nobody', 65534).uid, 65534, 'its own user needs no root');
  const notRoot = t.throws(() => resolveWorkerUser('nobody', 1000), { instanceOf: UsageError });
  t.regex(
    notRoot.message,
    /only a node daemon running as root can start workers as another user \(this one is uid 1000\)/,
  );
  t.throws(() => resolveWorkerUser('root', 0), { instanceOf: UsageError, message: /must not run as root/ });
  t.throws(() => resolveWorkerUser('no-such-user-here', 0), { instanceOf: UsageError, message: /no user/ });
  t.throws(() => resolveWorkerUser('a b', 0), { instanceOf: UsageError, message: /not a user name/ });
});
