// keep-alive: a promise alone does not keep Node running; holdUntil() does, until it settles, and no longer.
import test from 'ava';
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const keepAlive = fileURLToPath(new URL('../../runtime/base/keep-alive.ts', import.meta.url));

/** Runs a script that awaits a value only an unref'd timer brings (in 300 ms), with or without holdUntil. */
async function awaitUnrefd(hold: boolean): Promise<{ code: number; stdout: string }> {
  const script = `
    import { holdUntil, openHolds } from ${JSON.stringify(keepAlive)};
    const value = new Promise((r) => setTimeout(r, 300, 'came').unref());
    console.log(await ${hold ? 'holdUntil(value)' : 'value'}, openHolds());
    const failed = new Promise((_, reject) => setTimeout(reject, 100, new Error('no')).unref());
    await ${hold ? 'holdUntil(failed)' : 'failed'}.catch(() => console.log('failed', openHolds()));
  `;
  try {
    const r = await promisify(execFile)(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script]);
    return { code: 0, stdout: r.stdout };
  } catch (e) {
    const err = e as { code: number; stdout: string };
    return { code: err.code, stdout: err.stdout };
  }
}

test('holdUntil keeps the process running until the promise settles, either way, and then lets it end', async (t) => {
  t.deepEqual(await awaitUnrefd(true), { code: 0, stdout: 'came 0\nfailed 0\n' });
});

test('without it the process ends first (Node: unsettled top-level await)', async (t) => {
  t.deepEqual(await awaitUnrefd(false), { code: 13, stdout: '' });
});
