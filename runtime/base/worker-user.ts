// The Unix user a node's workers run as (`troupe start --worker-user NAME`). Workers run jobs' code; as the daemon's
// own user that code could read the daemon's memory and environment (ptrace, /proc/<pid>/environ) and its files
// (TROUPE_HOME: the credentials), and so act as the node, or on the head's machine as the head. Only root can start a
// process as another user, so the flag needs the node daemon to run as root.
import { execFileSync } from 'node:child_process';
import { UsageError } from './errors.ts';

export interface WorkerUser {
  name: string;
  uid: number;
  gid: number;
}

/** Looks `name` (or a uid) up in the system's user database; a UsageError when it is not there, is root, or when
 * this process (`euid`) cannot start processes as that user. */
export function resolveWorkerUser(name: string, euid = process.geteuid?.()): WorkerUser {
  if (!/^[\w.-]{1,64}$/.test(name)) throw new UsageError(`--worker-user: not a user name: ${JSON.stringify(name)}`);
  let entry: string;
  try {
    entry = execFileSync('getent', ['passwd', name], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
  } catch {
    throw new UsageError(`--worker-user: no user ${name} on this machine (getent passwd ${name} found none)`);
  }
  const [login, , uid, gid] = entry.trim().split('\n')[0].split(':');
  const user = { name: login, uid: Number(uid), gid: Number(gid) };
  if (!Number.isInteger(user.uid) || !Number.isInteger(user.gid))
    throw new UsageError(`--worker-user: getent passwd ${name} gave no uid and gid`);
  if (user.uid === 0) throw new UsageError('--worker-user: workers must not run as root; name an unprivileged user');
  if (euid !== undefined && euid !== 0 && euid !== user.uid)
    throw new UsageError(
      `--worker-user ${name}: only a node daemon running as root can start workers as another user (this one is ` +
        `uid ${euid})`,
    );
  return user;
}
