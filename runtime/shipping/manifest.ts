// The manifest of a job's node_modules tree: every package (nested and scoped ones too) at its path, and how a node
// gets it. Stored in the object store as JSON, named by its sha256. It comes from a driver: a node checks it before
// it writes anything (checkManifest).
import { posix } from 'node:path';
import { ProtocolError } from '../base/errors.ts';

/** How a node gets the package at an entry's path. */
export type PackageSource =
  /** An archive in the object store, `pkg-sha256-<hex>`: named by its tar's sha256, which the node checks, and
   * shared by every job whose package has the same files. */
  | { kind: 'store'; object: string }
  /** A symbolic link, recreated as it is (relative, inside the project): a `file:` dependency, a .bin entry. */
  | { kind: 'link'; target: string }
  /** Has native parts: the node's own installation of the same version is used, never a shipped one. */
  | { kind: 'native' }
  /** troupe itself: a link to the node's own install, so a job gets the worker's runtime. */
  | { kind: 'troupe' };

export interface PackageEntry {
  /** Relative to the project root, '/'-separated, under node_modules/. */
  path: string;
  /** Absent for a plain link (.bin). */
  name?: string;
  version?: string;
  source: PackageSource;
}

export interface Manifest {
  /** Sorted by path: a package comes before those nested in it. */
  packages: PackageEntry[];
}

export const objectNames = {
  workingDir: (sha256: string) => `wd-${sha256}`,
  manifest: (sha256: string) => `manifest-${sha256}`,
  package: (sha256: string) => `pkg-sha256-${sha256}`,
};

/** The sha256 a store object's name says its tar has (every name above ends in it). */
export const digestOf = (object: string): string => object.slice(object.lastIndexOf('-') + 1);

const PACKAGE_NAME = /^(@[A-Za-z0-9~][A-Za-z0-9._~-]*\/)?[A-Za-z0-9~][A-Za-z0-9._~-]*$/;
const VERSION = /^[0-9A-Za-z.+_-]{1,100}$/;
const STORE_OBJECT = /^pkg-sha256-[0-9a-f]{64}$/;

/** Whether a name and version are ones a manifest may carry (npm's rules, loosely). */
export const validPackage = (name: string, version: string): boolean =>
  PACKAGE_NAME.test(name) && VERSION.test(version);

/** A manifest read from the object store, checked: paths stay under node_modules/, links stay inside the project. */
export function checkManifest(m: unknown): Manifest {
  const bad = (why: string): never => {
    throw new ProtocolError(`bad package manifest: ${why}`);
  };
  const list = (m as { packages?: unknown } | null)?.packages;
  if (!Array.isArray(list)) bad('no packages list');
  const seen = new Set<string>();
  const out: PackageEntry[] = [];
  for (const e of list as Array<Partial<PackageEntry>>) {
    const path = e?.path;
    if (
      typeof path !== 'string' ||
      path.length > 4096 ||
      posix.normalize(path) !== path ||
      !path.startsWith('node_modules/') ||
      path.split('/').some((s) => s === '' || s === '.' || s === '..' || s.includes('\0'))
    )
      bad(`entry path ${JSON.stringify(path)} is not a plain relative path under node_modules/`);
    if (seen.has(path!)) bad(`two entries for ${path}`);
    seen.add(path!);
    const entry: PackageEntry = { path: path!, source: { kind: 'native' } };
    if (e.name !== undefined || e.version !== undefined) {
      if (typeof e.name !== 'string' || typeof e.version !== 'string' || !validPackage(e.name, e.version))
        bad(`${path} has a bad package name or version`);
      entry.name = e.name;
      entry.version = e.version;
    }
    const s = e.source as Partial<Record<string, unknown>> | undefined;
    switch (s?.kind) {
      case 'store':
        if (typeof s.object !== 'string' || !STORE_OBJECT.test(s.object)) bad(`${path} names a bad store object`);
        entry.source = { kind: 'store', object: s.object as string };
        break;
      case 'link': {
        const t = s.target;
        if (typeof t !== 'string' || t.length > 4096 || t.includes('\0') || posix.isAbsolute(t))
          bad(`${path} links to a bad target`);
        const to = posix.normalize(posix.join(posix.dirname(path!), t as string));
        if (to === '..' || to.startsWith('../')) bad(`${path} links outside the project`);
        entry.source = { kind: 'link', target: t as string };
        break;
      }
      case 'native':
      case 'troupe':
        if (!entry.name) bad(`${path} needs a name and version`);
        entry.source = { kind: s.kind };
        break;
      default:
        bad(`${path} has no known source`);
    }
    out.push(entry);
  }
  // Nothing may be written through a link: under one of the node's own packages (native, troupe) it would change the
  // node's installation; under any other it could reach places no entry names.
  const linked = out.filter((e) => e.source.kind !== 'store').map((e) => `${e.path}/`);
  for (const e of out)
    if (linked.some((l) => e.path.startsWith(l))) bad(`${e.path} lies under a link or a package of the node's own`);
  return { packages: out.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0)) };
}
