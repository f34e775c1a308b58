// Archives a list of files deterministically (gzipped tar, sorted, fixed times and owners: the same files give the
// same bytes, hence the same sha256) and unpacks one.
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import * as tar from 'tar';

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

/** Unpacks an archive into `dir` (created). Entries that would land outside it (absolute, '..') are refused. */
export async function unpack(file: string, dir: string): Promise<void> {
  await mkdir(dir, { recursive: true });
  await tar.x({ file, cwd: dir, strict: true, preservePaths: false, preserveOwner: false });
}
