// Where a remote function or class was defined: its module URL (from the call stack) and, once that module has
// loaded, the name it is exported under. Workers import module URL + export name.
import { pathToFileURL } from 'node:url';
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
const LIBRARY = ['runtime', 'actors', 'object-store'].map((d) => new URL(`../${d}/`, import.meta.url).href);

/** The module that called remote() or @remote: the first stack frame outside troupe's own source. */
export function defineSite(value: unknown): Definition {
  const frames = (new Error().stack ?? '').split('\n').slice(1);
  let url: string | undefined;
  for (const f of frames) {
    const m = /\(?((?:file:\/\/)?\/[^()]*?\.[cm]?[jt]sx?)(?:\?[^:)]*)?:\d+:\d+\)?\s*$/.exec(f);
    if (!m) continue;
    const u = m[1].startsWith('file://') ? m[1] : pathToFileURL(m[1]).href;
    if (LIBRARY.some((dir) => u.startsWith(dir))) continue;
    url = u;
    break;
  }
  if (!url) throw new UsageError('remote(): cannot tell which module defines this function; define remote functions and classes at the top level of a module');
  const def: Definition = { url, looked: false, lookup: Promise.resolve(undefined) };
  // The module is still evaluating; this import settles once it has finished, usually before user code calls .remote().
  def.lookup = import(url).then((mod: Record<string, unknown>) => {
    for (const [name, v] of Object.entries(mod)) if (v === value) def.exportName = name;
    return def.exportName;
  }, () => undefined).finally(() => { def.looked = true; });
  return def;
}
