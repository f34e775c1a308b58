// tsx keeps the JavaScript it makes from TypeScript in `<tmpdir>/tsx-<uid>` and reads it back on the next run. Anyone
// may create that directory in /tmp first and plant code there, so every troupe process checks it before tsx loads
// (`--import` before tsx, see launch.ts; `registerTsxFor()`; the CLI launcher) and runs without the cache when it is
// not private. Plain JavaScript: it runs before tsx.
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { privateDirProblem } from './private-dir.mjs';

/** Turns tsx's cache off for this process (and the processes it starts) unless the cache directory is private. */
export function guardTsxCache() {
  if (process.env.TSX_DISABLE_CACHE) return;
  const dir = join(tmpdir(), `tsx-${process.geteuid?.() ?? 'user'}`);
  const problem = privateDirProblem(dir);
  if (!problem) return;
  process.env.TSX_DISABLE_CACHE = '1';
  process.emitWarning(`troupe: not using tsx's cache ${dir}: ${problem}; remove it to get the cache back`);
}

guardTsxCache();
