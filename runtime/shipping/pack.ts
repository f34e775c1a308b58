// Archives a list of files deterministically (a tar, sorted, fixed times and owners, then gzipped) and unpacks one
// from the store, which is untrusted: see unpack(). An archive is named by the sha256 of its tar, not of the gzip
// around it: a driver can compute it without compressing, and a node checks it on the very bytes it unpacks.
import { createHash } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdir, stat } from 'node:fs/promises';
import { basename, posix } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { createGunzip, createGzip } from 'node:zlib';
import * as tar from 'tar';
import { ProtocolError, RuntimeEnvError } from '../base/errors.ts';
import { formatBytes } from '../base/bytes.ts';

export interface Packed {
  /** Of the tar (before compression): its name in the object store is derived from it. */
  sha256: string;
  /** Of the archive (compressed). */
  bytes: number;
}

/** `paths` (relative to `cwd`, sorted by the caller) as one tar. Links are kept as links. */
function tarOf(cwd: string, paths: string[]): AsyncIterable<Buffer> {
  return tar.c(
    {
      cwd,
      portable: true, // no owners, user names, atime or ctime
      mtime: new Date(0),
      noDirRecurse: true,
      follow: false,
    },
    paths.length ? paths : ['.'], // an empty project: one directory entry
  ) as unknown as AsyncIterable<Buffer>;
}

/** Passes chunks on, hashing them. */
function hashing(hash: ReturnType<typeof createHash>) {
  return async function* (chunks: AsyncIterable<Buffer>) {
    for await (const c of chunks) {
      hash.update(c);
      yield c;
    }
  };
}

/** Writes `paths` (relative to `cwd`, sorted by the caller) into the gzipped tar `file`. */
export async function packFiles(cwd: string, paths: string[], file: string): Promise<Packed> {
  const hash = createHash('sha256');
  await pipeline(tarOf(cwd, paths), hashing(hash), createGzip(), createWriteStream(file));
  return { sha256: hash.digest('hex'), bytes: (await stat(file)).size };
}

/** What packFiles would name the archive of these files, without writing or compressing it. */
export async function tarDigest(cwd: string, paths: string[]): Promise<string> {
  const hash = createHash('sha256');
  for await (const c of tarOf(cwd, paths)) hash.update(c);
  return hash.digest('hex');
}

/** Entry types an archive from the store may hold: no devices, FIFOs or other specials. */
const KINDS = new Set(['File', 'OldFile', 'ContiguousFile', 'Directory', 'SymbolicLink', 'Link']);

export interface UnpackOptions {
  /** The most bytes of file contents it may hold (a gzip bomb stops there): a RuntimeEnvError naming `limit`, the
   * setting that raises it. Default: no bound. */
  maxBytes?: number;
  limit?: string;
}

/** Unpacks a gzipped tar into `dir` (created) and returns the sha256 of the tar it read: a caller that expected
 * another removes `dir`. Refused with ProtocolError, before anything lands outside `dir`: entries whose path is
 * absolute or has '..', hard links leaving the archive, symbolic links whose target is absolute or leaves `dir` (tar
 * refuses those too), special files, writes through a link. */
export async function unpack(file: string, dir: string, o: UnpackOptions = {}): Promise<string> {
  const maxBytes = o.maxBytes ?? Number.POSITIVE_INFINITY;
  await mkdir(dir, { recursive: true, mode: 0o700 });
  let bytes = 0;
  let bad: string | undefined;
  let over = false;
  const refused = (why: string) => `the archive ${basename(file)} is refused: ${why}`;
  const hash = createHash('sha256');
  const unpacker = tar.x({
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
  const done = new Promise<void>((resolve, reject) => {
    unpacker.on('close', resolve);
    unpacker.on('error', reject);
  });
  done.catch(() => undefined); // awaited below, unless the gunzip failed first
  const drained = () => Promise.race([new Promise((r) => unpacker.once('drain', r)), done]);
  try {
    // One gunzip feeds both the hash and tar: what is checked is what was unpacked.
    await pipeline(createReadStream(file), createGunzip(), hashing(hash), async (chunks: AsyncIterable<Buffer>) => {
      for await (const c of chunks) if (!unpacker.write(c)) await drained();
      unpacker.end();
      await done;
    });
  } catch (e) {
    // A gzip that broke off mid-entry: tar still holds that entry's file open until its input ends.
    unpacker.end();
    // tar's own refusals (a write through a link, a bad header) and a damaged gzip: the archive's fault, not the
    // disk's.
    const code = (e as { code?: unknown }).code;
    if (typeof code === 'string' && (code.startsWith('TAR_') || code.startsWith('Z_')))
      throw new ProtocolError(refused((e as Error).message));
    throw e;
  }
  if (bad) throw new (over ? RuntimeEnvError : ProtocolError)(refused(bad));
  return hash.digest('hex');
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
