// The daemons a start spawns (nats-server, head, node daemon), watched so that one that dies during the start fails it
// at once, with the end of its own log, instead of leaving the starter to wait for a timeout.
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, openSync, readSync, fstatSync } from 'node:fs';
import { join } from 'node:path';
import { daemonCommand } from '../base/launch.ts';
import { DaemonStartError } from '../base/errors.ts';
import { howItExited } from '../base/processes.ts';
import type { DaemonConfig } from './daemon.ts';

export interface DaemonChild {
  /** 'nats-server', 'head' or 'node'. */
  daemon: string;
  /** For messages: 'the head daemon', 'the node daemon 1a2b3c4d5e6f'. */
  what: string;
  pid: number;
  logPath: string;
  /** Settles with how it ended ("exited with code 1") when the process exits; never rejects. */
  exited: Promise<string>;
}

/** Watches a spawned child; throws a DaemonStartError at once if it could not be spawned at all. */
export async function watchChild(
  child: ChildProcess,
  o: { daemon: string; what: string; logPath: string },
): Promise<DaemonChild> {
  const exited = new Promise<string>((resolve) => {
    child.once('exit', (code, signal) => resolve(howItExited(code, signal)));
    child.once('error', (e) => resolve(`could not be started (${e.message})`));
  });
  if (child.pid === undefined) throw startError(o, await exited);
  return { ...o, pid: child.pid, exited };
}

/** Spawns a head or node daemon with its log in the session's logs dir. */
export function spawnDaemon(
  config: DaemonConfig,
  o: { sessionDir: string; logName: string; what: string; detached: boolean; holdProcess?: boolean },
): Promise<DaemonChild> {
  const logPath = join(o.sessionDir, 'logs', `${o.logName}.log`);
  const log = openSync(logPath, 'a');
  const [cmd, args] = daemonCommand(config.role);
  const child = spawn(cmd, args, {
    detached: o.detached,
    stdio: ['ignore', log, log],
    env: { ...process.env, TROUPE_DAEMON_CONFIG: JSON.stringify(config) },
  });
  closeSync(log);
  // holdProcess false: an embedded cluster's daemons do not keep its driver running (see api/session.ts).
  if (o.detached || o.holdProcess === false) child.unref();
  return watchChild(child, { daemon: config.role, what: o.what, logPath });
}

/** The daemons of one start. `step()` runs a step of the start (connecting, waiting for a node) and fails it with a
 * DaemonStartError as soon as one of them exits. */
export class StartWatch {
  private readonly firstExit: Promise<{ child: DaemonChild; how: string }>;

  constructor(children: DaemonChild[]) {
    this.firstExit = Promise.race(children.map((child) => child.exited.then((how) => ({ child, how }))));
  }

  async step<T>(p: Promise<T>): Promise<T> {
    const r = await Promise.race([p.then((value) => ({ value })), this.firstExit]);
    if ('child' in r) throw startError(r.child, `${r.how} during start`);
    return r.value;
  }
}

/** "the head daemon exited with code 1 during start; its log …/head.log ends:" and the last lines of that log. */
export function startError(c: Pick<DaemonChild, 'daemon' | 'what' | 'logPath'>, how: string): DaemonStartError {
  return new DaemonStartError(`${c.what} ${how}; its log ${c.logPath} ends:\n${logTail(c.logPath)}`, {
    daemon: c.daemon,
    logPath: c.logPath,
  });
}

/** The last `lines` lines of a log (read from its last 8 KiB: a head's log can be large). */
export function logTail(path: string, lines = 10): string {
  let fd: number | undefined;
  try {
    fd = openSync(path, 'r');
    const size = fstatSync(fd).size;
    const buf = Buffer.alloc(Math.min(size, 8192));
    readSync(fd, buf, 0, buf.length, size - buf.length);
    const text = buf.toString('utf8').trimEnd();
    return text
      ? text
          .split('\n')
          .slice(-lines)
          .map((l) => `  ${l}`)
          .join('\n')
      : '  (empty)';
  } catch (e) {
    return `  (unreadable: ${(e as Error).message})`;
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
}
