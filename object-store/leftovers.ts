// What a killed node daemon leaves: its store directory (shared memory, /dev/shm by default) and its spill directory
// (disk). A node that stops removes both; one killed by SIGKILL cannot. Each directory holds a mark naming the process
// that made it; a node starting on the same machine removes the directories whose maker is gone, and never one whose
// maker lives (nor one it cannot tell about: no mark, another user's, another PID namespace's).
import { lstatSync, readdirSync, readFileSync, readlinkSync, rmSync, writeFileSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { isAlive } from '../runtime/base/processes.ts';

/** The mark's file name, in each directory a node makes. */
const MARK = '.troupe-node';

interface Mark {
  pid: number;
  /** When the process started (clock ticks since boot, from /proc): tells a reused pid from the node's. */
  started?: string;
  /** Its PID namespace: a pid means nothing in another one. */
  pidns?: string;
}

/** /proc/<pid>/stat's starttime (field 22), or undefined where there is no /proc or no such process. */
function startTime(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'latin1');
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19];
  } catch {
    return undefined;
  }
}

function pidNamespace(): string | undefined {
  try {
    return readlinkSync('/proc/self/ns/pid');
  } catch {
    return undefined;
  }
}

function ownMark(): Mark {
  return { pid: process.pid, started: startTime(process.pid), pidns: pidNamespace() };
}

/** Marks `dir` as this process's (call it right after making the directory). */
export function markAsOurs(dir: string): void {
  writeFileSync(join(dir, MARK), JSON.stringify(ownMark()), { mode: 0o600 });
}

/** Whether the directory's maker is surely gone: its mark is ours to read, from our PID namespace, and names a
 * process that no longer runs (or a pid since reused by another process). */
function makerGone(dir: string): boolean {
  let mark: Mark;
  try {
    const st = lstatSync(dir);
    if (!st.isDirectory() || (process.getuid && st.uid !== process.getuid())) return false;
    mark = JSON.parse(readFileSync(join(dir, MARK), 'utf8')) as Mark;
  } catch {
    return false; // no mark (being made now, or by an older troupe): not ours to judge
  }
  if (!Number.isSafeInteger(mark?.pid) || mark.pid <= 0) return false;
  const here = ownMark();
  if (mark.pidns !== here.pidns) return false;
  if (mark.pid === process.pid) return mark.started !== here.started;
  if (!isAlive(mark.pid)) return true;
  const started = startTime(mark.pid);
  return mark.started !== undefined && started !== undefined && started !== mark.started;
}

/** Directories under `parent` whose names `named` accepts. */
function entries(parent: string, named: (name: string) => boolean): string[] {
  try {
    return readdirSync(parent)
      .filter(named)
      .map((n) => join(parent, n));
  } catch {
    return [];
  }
}

const STORE = /^troupe-.+-[0-9a-f]+$/;
const SPILL = /^spill-troupe-.+-[0-9a-f]+$/;

/** Removes the store and spill directories of node daemons that were killed on this machine: store directories under
 * `storeRoot`, spill directories under `spillRoot` and, when spills go to session directories, under every session
 * directory beside `sessionDir`. Returns what it removed. */
export function removeLeftovers(o: { storeRoot: string; spillRoot?: string; sessionDir: string }): string[] {
  const candidates = [
    ...entries(o.storeRoot, (n) => STORE.test(n)),
    ...entries(o.spillRoot ?? o.sessionDir, (n) => SPILL.test(n)),
  ];
  if (o.spillRoot === undefined) {
    const sessions = dirname(o.sessionDir);
    for (const s of entries(sessions, (n) => n.startsWith('session_') && n !== basename(o.sessionDir)))
      candidates.push(...entries(s, (n) => SPILL.test(n)));
  }
  const removed: string[] = [];
  for (const dir of new Set(candidates)) {
    if (!makerGone(dir)) continue;
    rmSync(dir, { recursive: true, force: true });
    removed.push(dir);
  }
  return removed;
}
