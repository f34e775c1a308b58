// Small helpers for the processes troupe starts: liveness, graceful stop, free ports.
import { readFileSync } from 'node:fs';
import { createServer } from 'node:net';

/** Whether `pid` runs. A process that exited but was not reaped yet (a zombie) does not: kill(pid, 0) still finds it
 * until its parent reaps it, which for a detached daemon is the machine's init, and a container's init may reap late
 * (here after 1–2 s) or never. */
export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
  return !exited(pid);
}

/** Linux: the process is a zombie (state Z) or dead (X), or was reaped since kill(pid, 0). The state follows the
 * command name, which may hold spaces and parentheses, so it is read after the last ')'. Elsewhere (no /proc) false. */
function exited(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const state = stat.charAt(stat.lastIndexOf(')') + 2);
    return state === 'Z' || state === 'X';
  } catch (e) {
    return process.platform === 'linux' && (e as NodeJS.ErrnoException).code === 'ENOENT';
  }
}

/** SIGTERM, then SIGKILL after graceMs. Resolves once the process is gone. */
export async function terminate(pid: number, graceMs = 5000): Promise<void> {
  if (!isAlive(pid)) return;
  try {
    process.kill(pid, 'SIGTERM');
  } catch {
    return;
  }
  const until = Date.now() + graceMs;
  while (isAlive(pid) && Date.now() < until) await sleep(25);
  if (isAlive(pid)) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      /* gone */
    }
    while (isAlive(pid)) await sleep(10);
  }
}

/** How a child process ended, for messages: "was killed by SIGKILL", "exited with code 1". */
export function howItExited(code: number | null, signal: NodeJS.Signals | null): string {
  return signal ? `was killed by ${signal}` : `exited with code ${code}`;
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

export function freePort(host = '127.0.0.1'): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, host, () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}

/** Exit when the process that started us is gone (embedded clusters must not outlive their driver). */
export function exitWithParent(parentPid: number | undefined, onGone: () => void | Promise<void>): void {
  if (!parentPid) return;
  const t = setInterval(async () => {
    if (isAlive(parentPid)) return;
    clearInterval(t);
    await onGone();
  }, 500);
  t.unref();
}
