// Which tfjs backend the tests expect troupe to choose: tensorflow once `npm run setup:tensorflow` has put the native
// binding into node_modules (CI runs it first), else wasm. Tests assert it, so a native backend that stops loading
// fails them instead of passing quietly on wasm.
import { existsSync, readdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const pkgDir = fileURLToPath(new URL('../../node_modules/@tensorflow/tfjs-node/', import.meta.url));

/** The built binding is in place (lib/napi-v<N>/tfjs_binding.node). */
export function nativeInstalled(): boolean {
  try {
    return readdirSync(`${pkgDir}lib`).some((d) => existsSync(`${pkgDir}lib/${d}/tfjs_binding.node`));
  } catch {
    return false;
  }
}

export const expectedBackend: 'tensorflow' | 'wasm' = nativeInstalled() ? 'tensorflow' : 'wasm';

/** Says plainly, once per file, what is not tested on tensorflow here. */
export function warnNoNative(what: string): void {
  console.warn(
    `troupe: ${what}: not tested on the tensorflow backend here, which is not set up (npm run setup:tensorflow); ` +
      'wasm only',
  );
}
