// Running the tools a set-up needs (python3, pip, npm, node-gyp): their output kept for the error that names them.
import { spawn, spawnSync, type SpawnSyncReturns } from 'node:child_process';

export function runTool(
  cmd: string,
  args: string[],
  o: { cwd?: string; env?: NodeJS.ProcessEnv } = {},
): SpawnSyncReturns<string> {
  return spawnSync(cmd, args, { encoding: 'utf8', maxBuffer: 64 << 20, ...o });
}

/** The last lines of what a command printed, for an error message. */
export function lastLines(r: SpawnSyncReturns<string>, lines = 6): string {
  if (r.error) return r.error.message;
  return `${r.stdout ?? ''}\n${r.stderr ?? ''}`.trim().split('\n').slice(-lines).join('\n');
}

/** Like runTool, without blocking: long steps (a download, a compile) leave the event loop free. */
export function runToolAsync(
  cmd: string,
  args: string[],
  o: { cwd?: string; env?: NodeJS.ProcessEnv } = {},
): Promise<{ code: number; output: string }> {
  return new Promise((resolve) => {
    const child = spawn(cmd, args, { ...o, stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    const keep = (d: Buffer) => {
      output = (output + d.toString()).slice(-64 * 1024);
    };
    child.stdout.on('data', keep);
    child.stderr.on('data', keep);
    child.on('error', (e) => resolve({ code: -1, output: e.message }));
    child.on('close', (code) => resolve({ code: code ?? -1, output }));
  });
}
