// Starting the bench's helper processes (a Moleculer service, a raw NATS bulk server) here or on a simulated host,
// and waiting until each says it is ready.
import { spawn, type ChildProcess } from 'node:child_process';

/** Starts a command somewhere: here (`here`), or on a simulated host (`Host.spawn` of test/helpers/hosts.ts). */
export type Spawner = (cmd: string, args: string[], o: { env: NodeJS.ProcessEnv }) => ChildProcess;

/** Starts a child of this process, with this process's environment and stderr. */
export const here: Spawner = (cmd, args, o) =>
  spawn(cmd, args, { env: { ...process.env, ...o.env }, stdio: ['ignore', 'pipe', 'inherit'] });

/** Runs `script` (a TypeScript file) under Node and tsx, and resolves once it writes its first line to stdout; rejects,
 * with the end of its stderr when that is piped, if it exits first or takes longer than `timeoutMs`. */
export async function startReady(
  script: URL,
  env: NodeJS.ProcessEnv,
  on: Spawner = here,
  timeoutMs = 30_000,
): Promise<ChildProcess> {
  const child = on(process.execPath, ['--import', 'tsx', script.pathname], { env });
  let stderr = '';
  child.stderr?.on('data', (d) => {
    stderr = (stderr + d).slice(-2000);
  });
  try {
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`${script.pathname} not ready in ${timeoutMs} ms`)), timeoutMs);
      child.stdout!.once('data', () => {
        clearTimeout(timer);
        resolve();
      });
      child.once('exit', (code, signal) => {
        clearTimeout(timer);
        reject(new Error(`${script.pathname} exited with ${code ?? signal}${stderr ? `: ${stderr}` : ''}`));
      });
    });
  } catch (e) {
    child.kill('SIGKILL');
    throw e;
  }
  child.stdout!.resume(); // nothing more is read from it: never let it fill
  return child;
}
