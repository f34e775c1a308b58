// A directory that only this user can change. troupe keeps credentials, session state and code it will run in such
// directories; one that another user created first (in /tmp anyone can) could hand us their files. Plain JavaScript:
// the tsx cache guard (tsx-cache.mjs) runs it before tsx is loaded.
import { lstatSync, mkdirSync } from 'node:fs';

/**
 * Creates `path` (mode 0700) if it is missing, and checks that it is a real directory (not a link) owned by this
 * user that no other user may write to.
 * @param {string} path
 * @returns {string | undefined} why it is not private, or undefined when it is
 */
export function privateDirProblem(path) {
  try {
    mkdirSync(path, { recursive: true, mode: 0o700 });
  } catch (e) {
    return `cannot create it: ${/** @type {Error} */ (e).message}`;
  }
  const st = lstatSync(path);
  if (st.isSymbolicLink()) return 'it is a symbolic link';
  if (!st.isDirectory()) return 'it is not a directory';
  const uid = process.geteuid?.();
  if (uid !== undefined && st.uid !== uid) return `it belongs to uid ${st.uid}, not to this user (uid ${uid})`;
  if (st.mode & 0o022) return `others may write to it (mode ${(st.mode & 0o777).toString(8)})`;
  return undefined;
}
