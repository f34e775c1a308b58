// How troupe starts its own Node processes. Installed, troupe runs the JavaScript built into dist/: `node <entry>.js`.
// In a checkout it runs its TypeScript sources: `node --import <source-loader.mjs> --conditions=troupe-source
// <entry>.ts`, with the condition that makes `import 'troupe'` in a user's module resolve to these same sources, so a
// process never holds two copies of the runtime.
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { compiledHere } from './source-hooks.mjs';

/** True when troupe runs from its .ts sources (a checkout), false when from the JavaScript in dist/. */
export const fromSource = import.meta.url.endsWith('.ts');
/** The extension of troupe's own modules here: '.ts' from source, '.js' from dist/. */
export const moduleExt = fromSource ? '.ts' : '.js';
/** The package.json export condition that points 'troupe' at runtime/index.ts instead of dist/. */
export const SOURCE_CONDITION = 'troupe-source';
const TSX_CACHE_GUARD = new URL('./tsx-cache.mjs', import.meta.url).href;
const SOURCE_LOADER = new URL('./source-loader.mjs', import.meta.url).href;

function nodeCommand(entry: URL, args: string[] = [], flags: string[] = []): [string, string[]] {
  // TROUPE_CPU_PROF_DIR=dir: every daemon and worker writes a V8 CPU profile there when it exits.
  const prof = process.env.TROUPE_CPU_PROF_DIR
    ? ['--cpu-prof', `--cpu-prof-dir=${process.env.TROUPE_CPU_PROF_DIR}`]
    : [];
  const source = fromSource ? ['--import', SOURCE_LOADER, `--conditions=${SOURCE_CONDITION}`] : [];
  return [process.execPath, [...prof, ...flags, ...source, fileURLToPath(entry), ...args]];
}

// --expose-gc: an idle worker collects, so refs it dropped reach their owners (see worker/worker.ts).
export const workerCommand = () =>
  nodeCommand(new URL(`../worker/worker${moduleExt}`, import.meta.url), [], ['--expose-gc']);
export const daemonCommand = (role: 'head' | 'node') =>
  nodeCommand(new URL(`../cluster/daemon${moduleExt}`, import.meta.url), [role]);

let tsxRegistered = false;
/** Before a worker imports a user's module: TypeScript (.ts, .mts, .cts, .tsx) needs tsx, which troupe brings as its
 * own dependency. Registered once, and only then, so JavaScript jobs run on plain Node; with the tsconfig.json of the
 * job's root, if it has one (a worker serves one job), not one found from the directory the node daemon runs in.
 * In a checkout, troupe's own files (its tests' and examples' modules) need none: the source loader runs them. */
export async function registerTsxFor(url: string, jobRoot: string): Promise<void> {
  if (tsxRegistered || !/\.[mc]?tsx?$/.test(new URL(url).pathname)) return;
  if (fromSource && compiledHere(url)) return;
  await import(TSX_CACHE_GUARD);
  const { register } = await import('tsx/esm/api');
  const tsconfig = join(jobRoot, 'tsconfig.json');
  register({ tsconfig: existsSync(tsconfig) ? tsconfig : false });
  tsxRegistered = true;
}
