// This process's own troupe: the package root a copy's node_modules/troupe links to, and the node_modules chain
// native packages are taken from.
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

let root: string | undefined;
/** The directory of the package.json named troupe that holds this module (the checkout, or the installed package). */
export function troupeRoot(): string {
  if (root) return root;
  for (let dir = dirname(fileURLToPath(import.meta.url)); ; dir = dirname(dir)) {
    const name = readName(join(dir, 'package.json'));
    if (name === 'troupe') return (root = dir);
    if (dirname(dir) === dir) throw new Error('troupe cannot find its own package.json');
  }
}

/** The version of `name` that troupe's install resolves (its node_modules, then each one above), and where. */
export function installedPackage(name: string): { dir: string; version: string } | undefined {
  for (let dir = troupeRoot(); ; dir = dirname(dir)) {
    const pkgDir = join(dir, 'node_modules', name);
    if (existsSync(join(pkgDir, 'package.json'))) {
      const version = readField(join(pkgDir, 'package.json'), 'version');
      if (version) return { dir: pkgDir, version };
    }
    if (dirname(dir) === dir) return undefined;
  }
}

const readName = (file: string) => readField(file, 'name');
function readField(file: string, field: string): string | undefined {
  try {
    const v = (JSON.parse(readFileSync(file, 'utf8')) as Record<string, unknown>)[field];
    return typeof v === 'string' ? v : undefined;
  } catch {
    return undefined;
  }
}
