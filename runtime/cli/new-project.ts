// `troupe new DIR`: writes a small TypeScript project that uses troupe as a dependency (a remote task, an actor, a
// driver). troupe is not on the npm registry, so by default the project depends on the troupe this command runs
// from, as `file:` its package root; --troupe SPEC names anything else npm accepts (a tarball, a git URL, a version).
import { existsSync, mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { UsageError } from '../base/errors.ts';

interface PackageJson {
  version: string;
  dependencies: Record<string, string>;
  devDependencies: Record<string, string>;
}

const packageJsonUrl = import.meta.resolve('troupe/package.json'); // this package, from source or from dist/
const troupeRoot = dirname(fileURLToPath(packageJsonUrl));

export interface NewProject {
  dir: string;
  troupeSpec: string;
}

export function newProject(target: string, troupeSpec?: string): NewProject {
  const dir = resolve(target);
  if (existsSync(dir) && (!statSync(dir).isDirectory() || readdirSync(dir).length > 0))
    throw new UsageError(`troupe new: ${dir} is a file or a directory that is not empty; name a new or empty one`);
  const own = JSON.parse(readFileSync(fileURLToPath(packageJsonUrl), 'utf8')) as PackageJson;
  const spec = troupeSpec ?? `file:${troupeRoot}`;
  // The names npm accepts: lower case, no spaces; the directory name is only a default.
  const name =
    basename(dir)
      .toLowerCase()
      .replace(/[^a-z0-9._-]+/g, '-')
      .replace(/^[._-]+/, '') || 'troupe-app';
  mkdirSync(dir, { recursive: true });
  const write = (file: string, text: string) => writeFileSync(join(dir, file), `${text.trim()}\n`);
  const packageJson = {
    name,
    version: '0.1.0',
    private: true,
    type: 'module',
    scripts: { start: 'tsx main.ts', typecheck: 'tsc --noEmit' },
    dependencies: { troupe: spec },
    // The same versions troupe itself is built and tested with.
    devDependencies: {
      '@types/node': own.devDependencies['@types/node'],
      tsx: own.dependencies.tsx,
      typescript: own.devDependencies.typescript,
    },
  };
  write('package.json', JSON.stringify(packageJson, null, 2));
  // A file: dependency is packed and copied, not linked: its peers (tfjs) then resolve to this project's own copies.
  write('.npmrc', 'install-links=true');
  write('.gitignore', 'node_modules/');
  write('tsconfig.json', TSCONFIG);
  write('tasks.ts', TASKS);
  write('main.ts', MAIN);
  return { dir, troupeSpec: spec };
}

const TSCONFIG = `
{
  "compilerOptions": {
    "target": "ES2022",
    "module": "NodeNext",
    "moduleResolution": "NodeNext",
    "strict": true,
    "noEmit": true,
    "allowImportingTsExtensions": true,
    "verbatimModuleSyntax": true
  }
}`;

const TASKS = `
// Remote functions and actor classes live in a module of their own: workers import it by URL.
import { remote, Actor } from 'troupe';

export const square = remote((x: number) => x * x);

@remote({})
export class Counter extends Actor {
  private total = 0;
  add(n: number): number {
    this.total += n;
    return this.total;
  }
}`;

const MAIN = `
// Run with \`npm start\`. init() joins the cluster that \`troupe start --head\` started on this machine, or starts a
// local one for this script; the script exits when it is done, and a cluster it started stops with it.
import { init, get } from 'troupe';
import { square, Counter } from './tasks.ts';

await init();
console.log('squares:', await get([1, 2, 3].map((x) => square.remote(x))));
const counter = Counter.remote();
counter.add(2);
console.log('counter:', await counter.add(3));`;
