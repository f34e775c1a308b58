#!/usr/bin/env node
// The `troupe` command (the package's bin). Plain JavaScript, the one launcher for every way troupe is run:
// - run from a project that depends on another troupe (a global `troupe` in a project's directory), it hands over to
//   that one: workers then run the same runtime the project's modules import;
// - in a checkout (the sources are here) it runs them through the source loader (base/source-loader.mjs), no build
//   step;
// - installed, it runs the JavaScript built into dist/.
import { existsSync, readFileSync, realpathSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const ownRoot = realpathSync(fileURLToPath(new URL('../../', import.meta.url)));
const projectRoot = projectTroupe(process.cwd());
const projectLauncher = projectRoot && join(projectRoot, 'runtime', 'cli', 'troupe.mjs');
if (projectRoot && projectRoot !== ownRoot && existsSync(projectLauncher)) {
  await import(pathToFileURL(projectLauncher).href);
} else if (existsSync(new URL('./main.ts', import.meta.url))) {
  await import('../base/source-loader.mjs');
  await import('./main.ts');
} else {
  await import(new URL('../../dist/runtime/cli/main.js', import.meta.url).href);
}

/** The troupe installed in the project at or above `dir`: only one that project's package.json depends on, and from
 * its own node_modules. A node_modules/troupe further up, or in a directory anyone can write to, is never run. */
function projectTroupe(dir) {
  for (let d = dir; ; d = dirname(d)) {
    const manifest = join(d, 'package.json');
    if (existsSync(manifest)) {
      try {
        const p = JSON.parse(readFileSync(manifest, 'utf8'));
        const wanted = ['dependencies', 'devDependencies', 'optionalDependencies'].some((k) => p[k]?.troupe);
        const installed = join(d, 'node_modules', 'troupe');
        return wanted && existsSync(join(installed, 'package.json')) ? realpathSync(installed) : undefined;
      } catch {
        return undefined; // an unreadable package.json: no project to hand over to
      }
    }
    if (dirname(d) === d) return undefined;
  }
}
