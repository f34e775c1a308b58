// Where a remote function or class was defined: its module URL (from the call stack) and, once that module has
// loaded, the name it is exported under. Workers import module URL + export name.
import { pathToFileURL, fileURLToPath } from 'node:url';
import { realpathSync } from 'node:fs';
import { UsageError } from './errors.ts';

/** Where a remote function or class was defined, and under which export name its module has it. */
export interface Definition {
  url: string;
  /** Undefined until the module has finished loading and we looked. */
  exportName?: string;
  /** Settles once we looked: the export name, or undefined if the module does not export it. */
  lookup: Promise<string | undefined>;
  looked: boolean;
}

/** troupe's own source folders: frames in them are the library, not the user's module. */
const LIBRARY = ['runtime', 'actors', 'object-store'].map((d) => new URL(`../../${d}/`, import.meta.url).href);

/** The script node was started with, as the URL its stack frames show; undefined in a REPL or `node -e`. */
let entry: string | null | undefined;
function entryScript(): string | undefined {
  if (entry === undefined) {
    try {
      entry = process.argv[1] ? pathToFileURL(realpathSync(process.argv[1])).href : null;
    } catch {
      entry = null;
    }
  }
  return entry ?? undefined;
}

/** The file URL of a stack frame ("    at f (file:///a/b.ts:3:4)"), if it names a file. */
function frameUrl(frame: string): string | undefined {
  const m = /\(?((?:file:\/\/)?\/[^()]*?\.[cm]?[jt]sx?)(?:\?[^:)]*)?:\d+:\d+\)?\s*$/.exec(frame);
  if (!m) return undefined;
  return m[1].startsWith('file://') ? m[1] : pathToFileURL(m[1]).href;
}

/** The frames of the current stack in the user's files: not troupe's, not Node's own. */
function userFrames(): string[] {
  return (new Error().stack ?? '').split('\n').filter((f) => {
    const u = frameUrl(f);
    return u !== undefined && !LIBRARY.some((dir) => u.startsWith(dir));
  });
}

/** Where the user's code called troupe, as stack lines. A stack capture costs microseconds: take it once per options
 * object of a remote function (a `.options()` result reused is one) or per actor, not per call. */
export function userCallSite(): string {
  return userFrames().join('\n');
}

/** Gives an error the stack of the user's call it is about: one raised by the head (an infeasible demand, a name
 * already taken) would otherwise show only the head's own code. */
export function atCallSite<E extends Error>(e: E, site: string | undefined): E {
  if (!site || !(e instanceof Error)) return e;
  // A copy, as one refusal may fail calls made at several sites; made by `new Error` so that it is a native error
  // (util.types.isNativeError), with the class and fields of the original.
  const copy = Object.setPrototypeOf(new Error(e.message), Object.getPrototypeOf(e)) as E;
  Object.defineProperties(copy, Object.getOwnPropertyDescriptors(e));
  copy.stack = `${e.name}: ${e.message}\n${site}`;
  return copy;
}

/** The module that called remote() or @remote: the first stack frame outside troupe's own source. `what` names the
 * thing defined, for errors ("remote function square"). */
export function defineSite(value: unknown, what: string): Definition {
  const url = userFrames().map(frameUrl)[0];
  if (!url)
    throw new UsageError(
      'remote(): cannot tell which module defines this function; define remote functions and classes at the top ' +
        'level of a module',
    );
  // Workers import the defining module; importing the script being run would run it again. And here its calls would
  // wait for ever: the export name is known once the module has loaded, which it has not while it awaits them.
  if (url === entryScript()) {
    throw new UsageError(
      `${what} is defined in ${fileURLToPath(url)}, the script node is running: workers load the module that defines ` +
        `it, and loading this one would run the script again. Define it in a module of its own and import it here`,
    );
  }
  const def: Definition = { url, looked: false, lookup: Promise.resolve(undefined) };
  // The module is still evaluating; this import settles once it has finished, usually before user code calls .remote().
  def.lookup = import(url)
    .then(
      (mod: Record<string, unknown>) => {
        for (const [name, v] of Object.entries(mod)) if (v === value) def.exportName = name;
        return def.exportName;
      },
      () => undefined,
    )
    .finally(() => {
      def.looked = true;
    });
  return def;
}
