// Which modules a worker may import, decided before anything is imported (an import runs the module's top-level
// code): a file: URL whose real path is inside the job's root (the root its driver registered with the head, or the
// node's copy of it), or exactly one of troupe's library actor modules. Everything else is refused.
import { realpathSync } from 'node:fs';
import { isAbsolute, relative, sep } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { ModuleRefusedError } from '../base/errors.ts';

/** Longer URLs are refused unread. */
const MAX_URL = 4096;

export interface ModulePolicy {
  /** Real path of the job's root on this machine. */
  root: string;
  /** Real paths of the modules allowed besides the root's: troupe's library actors (none for a job's specs). */
  library?: ReadonlySet<string>;
  /** Maps a URL of the driver's machine to this one's (a shipped copy, another troupe install) before the check. */
  localUrl?: (url: string) => string;
  /** Said in the error: what was being loaded, and where. */
  what?: string;
}

/** Whether `path` is `dir` or inside it (both absolute; a name such as `..x` inside is inside). */
export function within(dir: string, path: string): boolean {
  const rel = relative(dir, path);
  return rel === '' || (rel !== '..' && !rel.startsWith(`..${sep}`) && !isAbsolute(rel));
}

/** The real path of a file: URL, checked in shape only: no other scheme (data:, http:, node:, blob: …), host, query
 * or fragment. Throws ModuleRefusedError. */
export function moduleFile(url: unknown): string {
  const shown = typeof url === 'string' ? JSON.stringify(url.slice(0, 200)) : typeof url;
  if (typeof url !== 'string' || url.length > MAX_URL || url.includes('\0'))
    throw new ModuleRefusedError(`refusing to load ${shown}: a module is named by a file: URL`);
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new ModuleRefusedError(`refusing to load ${shown}: not a URL (a module is named by a file: URL)`);
  }
  if (parsed.protocol !== 'file:')
    throw new ModuleRefusedError(`refusing to load ${shown}: only file: modules are loaded, not ${parsed.protocol}`);
  if (parsed.host !== '' || parsed.search !== '' || parsed.hash !== '')
    throw new ModuleRefusedError(`refusing to load ${shown}: a module URL has no host, query or fragment`);
  let path: string | undefined;
  try {
    path = fileURLToPath(parsed);
  } catch {
    // an encoded '/'
  }
  if (path === undefined || path.includes('\0'))
    throw new ModuleRefusedError(`refusing to load ${shown}: not a path (an encoded / or NUL)`);
  return path;
}

/** Checks a module URL against the policy and returns the URL to import: the module's real path (symlinks resolved,
 * so a link from inside the root to outside it is refused). Throws ModuleRefusedError, having imported nothing. */
export function checkModuleUrl(url: unknown, policy: ModulePolicy): string {
  moduleFile(url); // the shape, before any mapping
  const local = policy.localUrl ? policy.localUrl(url as string) : (url as string);
  const path = moduleFile(local);
  let file: string;
  try {
    file = realpathSync(path);
  } catch (e) {
    throw new ModuleRefusedError(
      `cannot load ${local}${policy.what ? ` ${policy.what}` : ''}: ${(e as NodeJS.ErrnoException).code ?? e}`,
    );
  }
  if (within(policy.root, file) || policy.library?.has(file)) return pathToFileURL(file).href;
  throw new ModuleRefusedError(
    `refusing to load ${file}: it is outside the job's root ${policy.root}${policy.what ? ` (${policy.what})` : ''} ` +
      `(the nearest directory holding a package.json at or above the driver's entry script, or ` +
      `runtimeEnv.workingDir)`,
  );
}

/** Real paths of module URLs that exist here (troupe's library actor modules); a missing one is left out. */
export function realPaths(urls: Iterable<string>): Set<string> {
  const out = new Set<string>();
  for (const u of urls) {
    try {
      out.add(realpathSync(fileURLToPath(u)));
    } catch {
      // not installed here
    }
  }
  return out;
}
