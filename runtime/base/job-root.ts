// The root of a driver's job: the directory its workers may load modules from.
import { existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';

/** The project the driver runs in: the nearest directory at or above `from` (default: the current directory) that
 * holds a package.json; `from` itself when none does. A driver started from any directory of its project thus gets
 * the same root, and modules outside the project are still refused. */
export function jobRoot(from = process.cwd()): string {
  const start = resolve(from);
  for (let dir = start; ; dir = dirname(dir)) {
    if (existsSync(join(dir, 'package.json'))) return dir;
    if (dirname(dir) === dir) return start;
  }
}
