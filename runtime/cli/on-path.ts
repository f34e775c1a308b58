// How the user should type the troupe command on this machine, for the lines the CLI prints.
import { accessSync, constants } from 'node:fs';
import { basename, delimiter, join } from 'node:path';

/** 'troupe' when an executable `troupe` is on PATH (a global install, `npm link`), else 'npx troupe', which finds the
 * troupe a project depends on. A project's node_modules/.bin does not count: npx and npm scripts put it on PATH
 * only while they run. */
export function troupeCommand(path = process.env.PATH ?? ''): string {
  for (const dir of path.split(delimiter)) {
    if (!dir || basename(dir) === '.bin') continue;
    try {
      accessSync(join(dir, 'troupe'), constants.X_OK);
      return 'troupe';
    } catch {
      /* not here */
    }
  }
  return 'npx troupe';
}
