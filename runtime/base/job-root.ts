// The root of a driver's job: the directory its workers may load modules from (and the project a job ships).
import { existsSync, realpathSync } from 'node:fs';
import { dirname, join, resolve, sep } from 'node:path';

/** Where a driver's project is looked for: the directory of the script node runs (`process.argv[1]`), so that
 * `node app/main.ts` run from anywhere finds app's project. The current directory when there is no script (a REPL,
 * `node -e`) or when the script is a tool's inside node_modules (a test runner, a CLI that loads the user's code). */
export function entryDir(): string {
  const script = process.argv[1];
  if (!script) return process.cwd();
  try {
    const real = realpathSync(script);
    return real.split(sep).includes('node_modules') ? process.cwd() : dirname(real);
  } catch {
    return process.cwd();
  }
}

/** The project the driver runs in: the nearest directory at or above `from` (default: entryDir()) that holds a
 * package.json; `from` itself when none does. A driver started from any directory of its project thus gets the same
 * root, and modules outside the project are still refused. */
export function jobRoot(from = entryDir()): string {
  const start = resolve(from);
  for (let dir = start; ; dir = dirname(dir)) {
    if (existsSync(join(dir, 'package.json'))) return dir;
    if (dirname(dir) === dir) return start;
  }
}
