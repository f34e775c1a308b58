// Which files of a project a job ships: all but what .gitignore files (at every level) and .troupeignore files (same
// syntax) exclude, and never .git or node_modules (dependencies go as packages, see packages.ts).
import { lstat, readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import ignore, { type Ignore } from 'ignore';

export interface ProjectFile {
  /** Relative to the project root, with '/' separators. */
  path: string;
  /** Bytes (0 for a symbolic link, which ships as a link). */
  size: number;
}

/** Never shipped as project files, at any depth. */
const ALWAYS_SKIPPED = new Set(['.git', 'node_modules']);
const IGNORE_FILES = ['.gitignore', '.troupeignore'];

interface Rules {
  /** Directory the rules belong to, relative to the root ('' for the root itself). */
  base: string;
  rules: Ignore;
}

/** The project's files, sorted by path (byte order), so the same tree always packs the same way. */
export async function projectFiles(root: string): Promise<ProjectFile[]> {
  const out: ProjectFile[] = [];
  await walk(root, '', [], out);
  return out.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
}

async function walk(root: string, rel: string, inherited: Rules[], out: ProjectFile[]): Promise<void> {
  const dir = join(root, rel);
  const rules = [...inherited];
  for (const name of IGNORE_FILES) {
    const text = await readFile(join(dir, name), 'utf8').catch(() => undefined);
    if (text !== undefined) rules.push({ base: rel, rules: ignore().add(text) });
  }
  // A directory we may not read (another user's, in a loose script's /tmp) is not part of the job.
  const entries = await readdir(dir, { withFileTypes: true }).catch(() => []);
  for (const e of entries) {
    if (ALWAYS_SKIPPED.has(e.name)) continue;
    const path = rel ? `${rel}/${e.name}` : e.name;
    const isDir = e.isDirectory();
    if (ignored(rules, path, isDir)) continue;
    if (isDir) await walk(root, path, rules, out);
    else if (e.isFile()) {
      const st = await lstat(join(root, path)).catch(() => undefined); // gone since the listing
      if (st) out.push({ path, size: st.size });
    } else if (e.isSymbolicLink()) out.push({ path, size: 0 });
    // sockets, fifos, devices: not files a job loads
  }
}

/** Whether the rules above `path` ignore it, as git decides: the deepest file with a pattern that matches (a negation
 * `!x` included) wins, each tested with the path relative to its own directory. A directory is tested with a trailing
 * '/', so "build/" patterns match it. */
function ignored(rules: Rules[], path: string, isDir: boolean): boolean {
  for (let i = rules.length - 1; i >= 0; i--) {
    const r = rules[i];
    const rel = r.base ? path.slice(r.base.length + 1) : path;
    const { ignored, unignored } = r.rules.test(isDir ? `${rel}/` : rel);
    if (ignored) return true;
    if (unignored) return false;
  }
  return false;
}

/** The five largest files, largest first, for an error that says what to exclude. */
export function largest(files: ProjectFile[], n = 5): ProjectFile[] {
  return [...files].sort((a, b) => b.size - a.size || (a.path < b.path ? -1 : 1)).slice(0, n);
}

/** A package's files (links kept as links), sorted, without its own node_modules (nested packages are entries of
 * their own) or .git. */
export async function packageFiles(dir: string): Promise<string[]> {
  const out: string[] = [];
  const walkAll = async (rel: string): Promise<void> => {
    for (const e of await readdir(join(dir, rel), { withFileTypes: true })) {
      const path = rel ? `${rel}/${e.name}` : e.name;
      if (e.isDirectory()) {
        if (!rel && ALWAYS_SKIPPED.has(e.name)) continue;
        await walkAll(path);
      } else if (e.isFile() || e.isSymbolicLink()) out.push(path);
    }
  };
  await walkAll('');
  return out.sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
}
