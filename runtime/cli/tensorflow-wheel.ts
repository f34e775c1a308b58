// libtensorflow from the TensorFlow Python wheel: the C and eager C APIs ship inside it as libtensorflow_cc.so.2, with
// their headers. pip downloads the wheel into troupe's cache; only the two libraries and the headers the binding
// includes (followed include by include) are kept beside it, per wheel, version and platform.
import { existsSync, mkdirSync, readdirSync, renameSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { TensorflowSetupError } from '../base/errors.ts';
import { troupeCache } from '../base/config.ts';
import { lastLines, runTool, runToolAsync } from './run-tool.ts';

/** The libraries a binding links, by the names it is linked with (`-ltensorflow`) and loaded by (their SONAMEs). */
const LIBRARIES: Record<string, string> = {
  'libtensorflow.so': 'libtensorflow_cc.so.2',
  'libtensorflow_cc.so.2': 'libtensorflow_cc.so.2',
  'libtensorflow_framework.so': 'libtensorflow_framework.so.2',
  'libtensorflow_framework.so.2': 'libtensorflow_framework.so.2',
};

/** Headers the binding includes; their own includes are followed inside the wheel. */
const ROOT_HEADERS = [
  'tensorflow/c/c_api.h',
  'tensorflow/c/eager/c_api.h',
  'tensorflow/core/platform/ctstring_internal.h',
];

/** Reads a wheel (a zip) with Python's zipfile: extracts the libraries and the closure of ROOT_HEADERS' includes. */
const EXTRACT_PY = `
import json, re, sys, zipfile
wheel, out, libs, roots = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), json.loads(sys.argv[4])
z = zipfile.ZipFile(wheel)
names = set(z.namelist())
for lib in libs:
    if 'tensorflow/' + lib not in names: sys.exit('the wheel has no tensorflow/' + lib)
    z.extract('tensorflow/' + lib, out)
todo, seen = list(roots), set()
while todo:
    h = todo.pop()
    member = 'tensorflow/include/' + h
    if h in seen or member not in names: continue
    seen.add(h)
    z.extract(member, out)
    todo += re.findall(r'^\\s*#\\s*include\\s+"([^"]+)"', z.read(member).decode('utf-8', 'replace'), re.M)
missing = [r for r in roots if r not in seen]
if missing: sys.exit('the wheel has no headers ' + ', '.join(missing))
print(len(seen))
`;

export interface Libtensorflow {
  /** Holds include/ and lib/ (the libraries under every name LIBRARIES gives). */
  dir: string;
}

/** The wheel's libraries and headers, from the cache or fetched into it. */
export async function libtensorflow(
  wheelName: string,
  version: string,
  log: (l: string) => void,
): Promise<Libtensorflow> {
  const dir = join(troupeCache(), 'tensorflow', `${wheelName}-${version}-${process.platform}-${process.arch}`);
  if (existsSync(join(dir, 'ready'))) {
    log(`libtensorflow ${version}: cached in ${dir}`);
    return { dir };
  }
  // Built aside and renamed into place, so a run that stops half-way leaves nothing that looks ready.
  const work = `${dir}.tmp-${process.pid}`;
  rmSync(work, { recursive: true, force: true });
  mkdirSync(join(work, 'wheel'), { recursive: true });
  const spec = `${wheelName}==${version}`;
  log(`downloading ${spec} with pip (a few hundred MB)`);
  const started = Date.now();
  const dl = await runToolAsync('python3', [
    '-m',
    'pip',
    'download',
    '--no-deps',
    '--only-binary=:all:',
    '--disable-pip-version-check',
    '--progress-bar',
    'off',
    '-d',
    join(work, 'wheel'),
    spec,
  ]);
  if (dl.code !== 0) {
    rmSync(work, { recursive: true, force: true });
    throw new TensorflowSetupError(
      `pip could not download ${spec} (is the Python package registry reachable, and does it have ${spec} for ` +
        `this Python and platform?):\n${dl.output.trim().split('\n').slice(-4).join('\n')}`,
      { step: 'registry' },
    );
  }
  const wheel = readdirSync(join(work, 'wheel')).find((f) => f.endsWith('.whl'));
  if (!wheel)
    throw new TensorflowSetupError(`pip reported success but left no wheel for ${spec}`, { step: 'registry' });
  log(`downloaded ${wheel} in ${((Date.now() - started) / 1000).toFixed(0)} s; extracting libtensorflow and headers`);
  const libs = [...new Set(Object.values(LIBRARIES))];
  const ex = runTool('python3', [
    '-c',
    EXTRACT_PY,
    join(work, 'wheel', wheel),
    join(work, 'extracted'),
    JSON.stringify(libs),
    JSON.stringify(ROOT_HEADERS),
  ]);
  if (ex.status !== 0) {
    rmSync(work, { recursive: true, force: true });
    throw new TensorflowSetupError(`${wheel} does not hold the TensorFlow C API: ${lastLines(ex)}`, { step: 'wheel' });
  }
  renameSync(join(work, 'extracted', 'tensorflow', 'include'), join(work, 'include'));
  mkdirSync(join(work, 'lib'));
  for (const lib of libs) renameSync(join(work, 'extracted', 'tensorflow', lib), join(work, 'lib', lib));
  for (const [name, target] of Object.entries(LIBRARIES))
    if (name !== target) symlinkSync(target, join(work, 'lib', name));
  rmSync(join(work, 'extracted'), { recursive: true });
  writeFileSync(join(work, 'ready'), `${JSON.stringify({ wheel, headers: Number(ex.stdout.trim()) })}\n`);
  rmSync(dir, { recursive: true, force: true });
  renameSync(work, dir);
  log(`libtensorflow ${version}: ${libs.join(', ')} and ${ex.stdout.trim()} headers in ${dir}`);
  return { dir };
}
