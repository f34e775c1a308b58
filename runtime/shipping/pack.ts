// Archives a list of files deterministically (gzipped tar, sorted, fixed times and owners: the same files give the
// same bytes, hence the same sha256) and unpacks one from the store, which is untrusted: see unpack().
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { basename, posix } from 'node:path';
import * as tar from 'tar';
import { ProtocolError, RuntimeEnvError } from '../base/errors.ts';
import { formatBytes } from '../base/bytes.ts';

export interface Packed {
  /** Of the archive's bytes: its name in the object store is derived from it. */
  sha256: string;
  /** Of the archive (compressed). */
  bytes: number;
}

/** Writes `paths` (relative to `cwd`, sorted by the caller) into the gzipped tar `file`. Links are kept as links. */
export async function packFiles(cwd: string, paths: string[], file: string): Promise<Packed> {
  await tar.c(
    {
      file,
      cwd,
      gzip: true,
      portable: true, // no owners, user names, atime or ctime
      mtime: new Date(0),
      noDirRecurse: true,
      follow: false,
    },
    paths.length ? paths : ['.'], // an empty project: one directory entry
  );
  return hashFile(file);
}

export async function hashFile(file: string): Promise<Packed> {
  const hash = createHash('sha256');
  let bytes = 0;
  for await (const chunk of createReadStream(file)) {
    hash.update(chunk as Buffer);
    bytes += (chunk as Buffer).length;
  }
  return { sha256: hash.digest('hex'), bytes };
}

/** Entry types an archive from the store may hold: no devices, FIFOs or other specials. */
const KINDS = new Set(['File', 'OldFile', 'ContiguousFile', 'Directory', 'SymbolicLink', 'Link']);

export interface UnpackOptions {
  /** The most bytes of file contents it may hold (a gzip bomb stops there): a RuntimeEnvError naming `limit`, the
   * setting that raises it. Default: no bound. */
  maxBytes?: number;
  limit?: string;
}

/** Unpacks an archive into `dir` (created). Refused with ProtocolError, before anything lands outside `dir`: entries
 * whose path is absolute or has '..', hard links leaving the archive, symbolic links whose target is absolute or
 * leaves `dir` (tar refuses those too), special files, writes through a link. */
export async function unpack(file: string, dir: string, o: UnpackOptions = {}): Promise<void> {
  const maxBytes = o.maxBytes ?? Number.POSITIVE_INFINITY;
  await mkdir(dir, { recursive: true, mode: 0o700 });
  let bytes = 0;
  let bad: string | undefined;
  let over = false;
  const refused = (why: string) => `the archive ${basename(file)} is refused: ${why}`;
  try {
    await tar.x({
      file,
      cwd: dir,
      strict: true,
      preservePaths: false,
      preserveOwner: false,
      filter: (path, entry) => {
        if (bad) return false; // the rest is skipped: the archive is refused below
        const e = entry as tar.ReadEntry;
        bad = entryProblem(path, e);
        if (!bad && (e.type === 'File' || e.type === 'OldFile' || e.type === 'ContiguousFile')) {
          bytes += e.size ?? 0;
          over = bytes > maxBytes;
          if (over) bad = `it unpacks to more than ${formatBytes(maxBytes)}${o.limit ? ` (${o.limit})` : ''}`;
        }
        return !bad;
      },
    });
  } catch (e) {
    // tar's own refusals (a write through a link, a bad header): the archive's fault, not the disk's.
    const code = (e as { code?: unknown }).code;
    if (typeof code === 'string' && code.startsWith('TAR_')) throw new ProtocolError(refused((e as Error).message));
    throw e;
  }
  if (bad) throw new (over ? RuntimeEnvError : ProtocolError)(refused(bad));
}

function entryProblem(path: string, e: tar.ReadEntry): string | undefined {
  if (!KINDS.has(e.type)) return `${path} is a ${e.type}`;
  const outside = (p: string) => posix.isAbsolute(p) || p.includes('\0') || p.split('/').includes('..');
  if (outside(path)) return `${path} is not a plain relative path`;
  const target = e.linkpath ?? '';
  if (e.type === 'Link' && outside(target)) return `the hard link ${path} leaves the archive`;
  if (e.type === 'SymbolicLink') {
    const to = posix.normalize(posix.join(posix.dirname(posix.normalize(path)), target));
    if (!target || posix.isAbsolute(target) || target.includes('\0') || to === '..' || to.startsWith('../'))
      return `the link ${path} -> ${target} leaves it`;
  }
  return undefined;
}
