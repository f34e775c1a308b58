#!/usr/bin/env node
// The `troupe` command (the package's bin). Plain JavaScript, the one launcher for every way troupe is run:
// - run from a project that depends on another troupe (a global `troupe` in a project's directory), it hands over to
//   that one: workers then run the same runtime the project's modules import;
// - in a checkout (the sources are here) it runs them through tsx, no build step;
// - installed, it runs the JavaScript built into dist/.
import { existsSync, realpathSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const ownRoot = realpathSync(fileURLToPath(new URL('../../', import.meta.url)));
let projectRoot;
try {
  const found = createRequire(join(process.cwd(), 'package.json')).resolve('troupe/package.json');
  projectRoot = realpathSync(dirname(found));
} catch {
  projectRoot = undefined; // no troupe in the project here
}
const projectLauncher = projectRoot && join(projectRoot, 'runtime', 'cli', 'troupe.mjs');
if (projectRoot && projectRoot !== ownRoot && existsSync(projectLauncher)) {
  await import(pathToFileURL(projectLauncher).href);
} else if (existsSync(new URL('./main.ts', import.meta.url))) {
  const { register } = await import('tsx/esm/api');
  register();
  await import('./main.ts');
} else {
  await import(new URL('../../dist/runtime/cli/main.js', import.meta.url).href);
}
