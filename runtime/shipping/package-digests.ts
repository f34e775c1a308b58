// A package ships under the sha256 of its files' tar (pack.ts), so a node can check what it fetched and no upload can
// pass one package off as another. Computing it reads every file, and a driver names its packages at every init(): the
// answer is kept on this machine, keyed by what lstat says of each file (path, size, times, inode, mode) as git's
// index does. A package edited in place (patch-package) gets another key, and is read again.
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, readdir, readFile, rename, rm, stat, writeFile, lstat } from 'node:fs/promises';
import { join } from 'node:path';
import { troupeHome } from '../base/config.ts';
import { tarDigest } from './pack.ts';
import { packageFiles } from './project-files.ts';

/** Past this many kept digests, the oldest go (each is one small file). */
const KEEP = 20_000;
const DIGEST = /^[0-9a-f]{64}$/;

let pruned = false;

/** The sha256 packFiles() would give the package at `dir` (its packageFiles()), from this machine's record when no
 * file changed since it was computed. */
export async function packageDigest(dir: string, paths?: string[]): Promise<string> {
  const files = paths ?? (await packageFiles(dir));
  const key = await statKey(dir, files);
  const where = join(await digestsDir(), key);
  const kept = await readFile(where, 'utf8').catch(() => '');
  if (DIGEST.test(kept)) return kept;
  const digest = await tarDigest(dir, files);
  // Changed while it was read: not kept, so the next init() reads it again.
  if ((await statKey(dir, files)) === key) await keep(where, digest);
  return digest;
}

async function statKey(dir: string, files: string[]): Promise<string> {
  const stats = await Promise.all(files.map((f) => lstat(join(dir, f), { bigint: true })));
  const h = createHash('sha256').update(`${dir}\n`);
  files.forEach((f, i) => {
    const s = stats[i];
    h.update(`${f}\0${s.mode}\0${s.size}\0${s.mtimeNs}\0${s.ctimeNs}\0${s.ino}\0${s.dev}\n`);
  });
  return h.digest('hex');
}

async function digestsDir(): Promise<string> {
  const dir = join(troupeHome(), 'package-digests');
  await mkdir(dir, { recursive: true, mode: 0o700 });
  return dir;
}

/** Best effort: a record not kept is computed again next time. Several drivers (or one naming its packages twice at
 * once) may write the same record: each through a temp file of its own. */
async function keep(where: string, digest: string): Promise<void> {
  const tmp = `${where}.${randomBytes(6).toString('hex')}.tmp`;
  try {
    await writeFile(tmp, digest, { mode: 0o600 });
    await rename(tmp, where);
    if (!pruned) {
      pruned = true;
      await prune(join(where, '..'));
    }
  } catch {
    await rm(tmp, { force: true }).catch(() => undefined);
  }
}

/** Once per process, past KEEP records: the older half goes. */
async function prune(dir: string): Promise<void> {
  const names = await readdir(dir);
  if (names.length <= KEEP) return;
  const dated = await Promise.all(
    names.map(async (n) => ({ n, t: (await stat(join(dir, n)).catch(() => undefined))?.mtimeMs ?? 0 })),
  );
  dated.sort((a, b) => b.t - a.t);
  for (const { n } of dated.slice(KEEP / 2)) await rm(join(dir, n), { force: true });
}
