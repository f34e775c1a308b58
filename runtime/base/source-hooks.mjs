// Module hooks that run troupe's own TypeScript in a checkout (registered by source-loader.mjs). They do for troupe's
// files what tsx does, at less start-up cost: tsx loads esbuild on every start, in the main thread and in the hooks
// thread, whereas these read what an earlier start compiled from a cache and load esbuild only on a miss. Every
// process troupe starts from a checkout (daemons, workers, the CLI, the test runner) pays that cost, hundreds of times
// per `npm test`. A worker registers tsx for a job's own modules (launch.ts, registerTsxFor), with the job's tsconfig;
// hooks registered later run first, so tsx compiles those. In other processes (the test runner importing a module a
// test wrote to a temp dir) these compile any TypeScript outside node_modules. Plain JavaScript: it is what makes
// TypeScript loadable.
import { createHash } from 'node:crypto';
import { readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { privateDirProblem } from './private-dir.mjs';

const root = new URL('../../', import.meta.url).href;
// Part of every cache key: a change to how files are compiled must miss what the old way made.
const COMPILE = 'esbuild esm node20 inline-sourcemap v2';

/**
 * Whether these hooks compile the module at `url`: troupe's own TypeScript (its runtime, tests, examples, benchmarks).
 * @param {string} url
 */
export const compiledHere = (url) => url.startsWith(root) && compiles(url);
const compiles = (url) => url.startsWith('file:') && /\.m?ts$/.test(url) && !url.includes('/node_modules/');

/** @type {string | undefined} where compiled files are kept; undefined: nowhere (no directory is this user's) */
let cacheDir;
/** @type {Promise<typeof import('esbuild')> | undefined} */
let esbuild;

export function initialize() {
  const checkout = fileURLToPath(new URL('node_modules/.cache/troupe-source', root));
  // A checkout of another user's (workers run as --worker-user): a cache in our own home instead.
  const home = process.env.HOME && join(process.env.HOME, '.cache', 'troupe-source');
  cacheDir = [checkout, home].find((dir) => dir && !privateDirProblem(dir));
}

/** @type {import('node:module').LoadHook} */
export async function load(url, context, next) {
  if (!compiles(url)) return next(url, context);
  const path = fileURLToPath(url);
  const source = readFileSync(path, 'utf8');
  const key = createHash('sha256').update(`${COMPILE}\0${path}\0${source}`).digest('hex');
  const cached = cacheDir && join(cacheDir, `${key}.js`);
  if (cached) {
    try {
      return { format: 'module', source: readFileSync(cached, 'utf8'), shortCircuit: true };
    } catch {} // not compiled yet
  }
  const { code } = await (esbuild ??= import('esbuild')).then((e) =>
    e.transform(source, {
      loader: 'ts',
      format: 'esm',
      target: 'node20',
      sourcemap: 'inline',
      sourcesContent: false,
      sourcefile: path,
      tsconfigRaw: { compilerOptions: { verbatimModuleSyntax: true, useDefineForClassFields: true } },
    }),
  );
  if (cached) {
    // Written whole, then renamed: processes starting at once read all of it or nothing.
    const part = `${cached}.${process.pid}`;
    try {
      writeFileSync(part, code);
      renameSync(part, cached);
    } catch {} // a full disk: compiled again next time
  }
  return { format: 'module', source: code, shortCircuit: true };
}
