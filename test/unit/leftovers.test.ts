// A starting node removes the store and spill directories of node daemons that are gone, and nothing else: not a
// live process's, not one without a mark, not one whose mark names a pid now used by another process.
import test from 'ava';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { markAsOurs, removeLeftovers } from '../../object-store/leftovers.ts';
import { tempDir } from '../helpers/cluster.ts';

test('only directories marked by a process that is gone are removed', (t) => {
  const root = tempDir(t);
  const shm = join(root, 'shm');
  const session = join(root, 'session_now');
  const otherSession = join(root, 'session_before');
  for (const d of [shm, session, otherSession]) mkdirSync(d);
  const dir = (parent: string, name: string) => {
    const p = join(parent, name);
    mkdirSync(p);
    return p;
  };
  const live = dir(shm, 'troupe-session_now-aaaa');
  markAsOurs(live);
  // A process that has exited: its pid is free (or taken by another process, started later).
  const gonePid = spawnSync(process.execPath, ['-e', '0']).pid!;
  const mark = (p: string, m: object) => writeFileSync(join(p, '.troupe-node'), JSON.stringify(m));
  const ownMark = JSON.parse(readFileSync(join(live, '.troupe-node'), 'utf8'));
  const dead = dir(shm, 'troupe-session_now-bbbb');
  mark(dead, { ...ownMark, pid: gonePid });
  const reused = dir(shm, 'troupe-session_now-cccc');
  mark(reused, { ...ownMark, started: '1' }); // our pid, but another start time: an earlier owner of the pid
  const unmarked = dir(shm, 'troupe-session_now-dddd');
  const foreignNs = dir(shm, 'troupe-session_now-eeee');
  mark(foreignNs, { ...ownMark, pid: gonePid, pidns: 'pid:[1]' });
  const notOurs = dir(shm, 'something-else');
  mark(notOurs, { ...ownMark, pid: gonePid });
  const deadSpill = dir(otherSession, 'spill-troupe-session_before-ffff');
  mark(deadSpill, { ...ownMark, pid: gonePid });
  const liveSpill = dir(session, 'spill-troupe-session_now-aaaa');
  markAsOurs(liveSpill);

  const removed = removeLeftovers({ storeRoot: shm, sessionDir: session });
  t.deepEqual(removed.sort(), [dead, reused, deadSpill].sort());
  for (const p of [live, unmarked, foreignNs, notOurs, liveSpill]) t.true(existsSync(p), p);
  for (const p of removed) t.false(existsSync(p), p);
});
