// The driver's side of dependencies: scans the project's node_modules tree (nested and scoped packages, links) into
// a manifest, and says which packages have native parts (those are never shipped: a node uses its own). Every other
// package is named by its files' digest (package-digests.ts), wherever it lies.
import { existsSync, readFileSync } from 'node:fs';
import { lstat, readdir, readlink, realpath } from 'node:fs/promises';
import { dirname, isAbsolute, join, relative, sep } from 'node:path';
import type { Manifest } from './manifest.ts';
import { objectNames, validPackage } from './manifest.ts';
import { packageDigest } from './package-digests.ts';
import { packageFiles } from './project-files.ts';

export interface ScannedPackages {
  manifest: Manifest;
  /** Where each store object's files are on this machine: the directory to pack when a node asks for it. */
  sources: Map<string, string>;
}

interface PackageJson {
  name?: unknown;
  version?: unknown;
  gypfile?: unknown;
  binary?: unknown;
  os?: unknown;
  cpu?: unknown;
}

/** Every package under `<root>/node_modules`, sorted by path. */
export async function scanPackages(root: string): Promise<ScannedPackages> {
  const out: ScannedPackages = { manifest: { packages: [] }, sources: new Map() };
  const realRoot = await realpath(root);
  await scanDir(root, realRoot, 'node_modules', out);
  out.manifest.packages.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
  return out;
}

async function scanDir(root: string, realRoot: string, rel: string, out: ScannedPackages) {
  const entries = await readdir(join(root, rel), { withFileTypes: true }).catch(() => []);
  for (const e of entries) {
    const path = `${rel}/${e.name}`;
    if (e.name === '.bin') {
      for (const b of await readdir(join(root, path), { withFileTypes: true }).catch(() => []))
        if (b.isSymbolicLink()) {
          const target = await readlink(join(root, path, b.name));
          if (!isAbsolute(target))
            out.manifest.packages.push({ path: `${path}/${b.name}`, source: { kind: 'link', target } });
        }
    } else if (e.name.startsWith('.')) {
      // npm's .package-lock.json, caches: not packages
    } else if (e.name.startsWith('@') && e.isDirectory()) {
      for (const s of await readdir(join(root, path), { withFileTypes: true }))
        await scanPackage(root, realRoot, `${path}/${s.name}`, out);
    } else {
      await scanPackage(root, realRoot, path, out);
    }
  }
}

async function scanPackage(root: string, realRoot: string, path: string, out: ScannedPackages) {
  const abs = join(root, path);
  const st = await lstat(abs);
  let dir = abs;
  if (st.isSymbolicLink()) {
    const real = await realpath(abs).catch(() => undefined);
    if (!real) return; // a dangling link: nothing a job could load
    if ((real + sep).startsWith(realRoot + sep)) {
      // A `file:` dependency inside the project: the project's files carry it; the link is recreated as it is.
      const target = await readlink(abs);
      const rel = isAbsolute(target) ? relative(dirname(abs), join(root, relative(realRoot, real))) : target;
      const pkg = readPackageJson(real);
      out.manifest.packages.push({ path, ...nameOf(pkg), source: { kind: 'link', target: rel } });
      return;
    }
    dir = real; // outside: shipped as its files
  } else if (!st.isDirectory()) return;
  const pkg = readPackageJson(dir);
  // Not a package (or one npm would not install): nothing to resolve to.
  if (typeof pkg?.name !== 'string' || typeof pkg.version !== 'string' || !validPackage(pkg.name, pkg.version)) return;
  const { name, version } = pkg;
  if (name === 'troupe') {
    out.manifest.packages.push({ path, name, version, source: { kind: 'troupe' } });
    return; // never shipped: each node links its own
  }
  const files = await packageFiles(dir);
  if (hasNativeParts(dir, pkg, files)) {
    out.manifest.packages.push({ path, name, version, source: { kind: 'native' } });
  } else {
    const object = objectNames.package(await packageDigest(dir, files));
    out.manifest.packages.push({ path, name, version, source: { kind: 'store', object } });
    out.sources.set(object, dir);
  }
  if (dir === abs) await scanDir(root, realRoot, `${path}/node_modules`, out);
}

function readPackageJson(dir: string): PackageJson | undefined {
  try {
    return JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')) as PackageJson;
  } catch {
    return undefined;
  }
}

const nameOf = (pkg: PackageJson | undefined): { name?: string; version?: string } =>
  typeof pkg?.name === 'string' && typeof pkg.version === 'string' && validPackage(pkg.name, pkg.version)
    ? { name: pkg.name, version: pkg.version }
    : {};

/** binding.gyp, `gypfile`, node-pre-gyp's `binary`, prebuilds/, an `os` or `cpu` field, or a .node file anywhere in
 * the package (`files`: its packageFiles(), without its nested node_modules). */
export function hasNativeParts(dir: string, pkg: PackageJson | undefined, files: string[]): boolean {
  if (pkg?.gypfile || pkg?.binary || pkg?.os || pkg?.cpu) return true;
  if (existsSync(join(dir, 'binding.gyp')) || existsSync(join(dir, 'prebuilds'))) return true;
  return files.some((f) => f.endsWith('.node'));
}
