// `troupe setup tensorflow`: builds tfjs's native backend from parts the package registries serve, for machines
// where @tensorflow/tfjs-node's own installer cannot download libtensorflow (a closed network, a firewall).
// - libtensorflow: the TensorFlow C and eager C APIs ship inside the Python wheel (`tensorflow-cpu`, or `tensorflow`
//   for --gpu) as libtensorflow_cc.so.2, with their headers; pip downloads the wheel, and only those parts are kept.
// - the binding: the npm package carries its C++ sources and binding.gyp; it is installed without its install script
//   and compiled by node-gyp (npm's own) against this Node's headers.
// Wheel, libraries and built binding are cached per version under troupeCache(), so a second run (or a new
// node_modules) costs a copy. Each step that cannot run fails with a TensorflowSetupError saying which and why.
import { spawn, spawnSync, type SpawnSyncReturns } from 'node:child_process';
import {
  copyFileSync,
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  renameSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { TensorflowSetupError, type SetupStep } from '../base/errors.ts';
import { troupeCache } from '../base/config.ts';

const fail = (step: SetupStep, message: string) => new TensorflowSetupError(message, { step });

/** The TensorFlow release whose C API the binding is built against (tfjs-node 4.x asks for 2.9; the C API it uses is
 * stable, and 2.21 is what the registry serves for Python 3.11 and newer). */
export const TENSORFLOW_VERSION = '2.21.0';

export interface NativeFlavor {
  /** The npm package whose binding is built. */
  pkg: '@tensorflow/tfjs-node' | '@tensorflow/tfjs-node-gpu';
  /** The Python wheel that carries libtensorflow. */
  wheel: 'tensorflow-cpu' | 'tensorflow';
}

export const FLAVORS: Record<'cpu' | 'gpu', NativeFlavor> = {
  cpu: { pkg: '@tensorflow/tfjs-node', wheel: 'tensorflow-cpu' },
  gpu: { pkg: '@tensorflow/tfjs-node-gpu', wheel: 'tensorflow' },
};

export interface SetupOptions {
  gpu?: boolean;
  tensorflowVersion?: string;
  /** The project whose node_modules gets the package: by default the one troupe's tfjs-core is installed in, so
   * troupe, its workers and the user's code all resolve the same copy. */
  projectDir?: string;
  /** Each step, as it is done. */
  log?: (line: string) => void;
}

export interface Speed {
  /** 1024×1024 float32 matMul, GFLOP/s. */
  oneThread: number;
  allThreads: number;
  /** The same on the wasm backend in this run, for comparison. */
  wasm?: number;
}

export interface SetupReport {
  pkg: string;
  tfjsVersion: string;
  tensorflowVersion: string;
  /** Nothing was done: the backend already loaded. */
  already: boolean;
  speed: Speed;
}

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

/** Sets up the native backend; returns what it found or did. Throws TensorflowSetupError naming the failed step. */
export async function setupNativeTensorflow(o: SetupOptions = {}): Promise<SetupReport> {
  const log = o.log ?? (() => undefined);
  const flavor = FLAVORS[o.gpu ? 'gpu' : 'cpu'];
  const tensorflowVersion = o.tensorflowVersion ?? TENSORFLOW_VERSION;
  const projectDir = o.projectDir ?? tfjsProjectDir();
  const tfjsVersion = packageVersion(projectDir, '@tensorflow/tfjs-core');
  if (!tfjsVersion) throw fail('npm', `@tensorflow/tfjs-core is not installed in ${projectDir}: npm install first`);

  const loaded = await probeBackend(projectDir, flavor.pkg, 1);
  if (loaded.backend === 'tensorflow') {
    log(`${flavor.pkg} already loads here (backend tensorflow): nothing to do`);
    return { pkg: flavor.pkg, tfjsVersion, tensorflowVersion, already: true, speed: await speeds(projectDir, flavor) };
  }

  checkTools();
  const tf = await libtensorflow(flavor, tensorflowVersion, log);
  installPackage(projectDir, flavor.pkg, tfjsVersion, log);
  const pkgDir = join(projectDir, 'node_modules', flavor.pkg);
  linkDeps(pkgDir, tf);
  await placeBinding(pkgDir, flavor, tfjsVersion, tensorflowVersion, log);

  const after = await probeBackend(projectDir, flavor.pkg, 1);
  if (after.backend !== 'tensorflow')
    throw fail('load', `the built ${flavor.pkg} does not load: ${after.error ?? after.backend}`);
  log(`${flavor.pkg} loads: backend tensorflow`);
  return { pkg: flavor.pkg, tfjsVersion, tensorflowVersion, already: false, speed: await speeds(projectDir, flavor) };
}

/** The directory whose node_modules holds the @tensorflow/tfjs-core that troupe imports. */
export function tfjsProjectDir(): string {
  const core = createRequire(import.meta.url).resolve('@tensorflow/tfjs-core/package.json');
  return dirname(dirname(dirname(dirname(core))));
}

function packageVersion(projectDir: string, pkg: string): string | undefined {
  try {
    const file = join(projectDir, 'node_modules', pkg, 'package.json');
    return (JSON.parse(readFileSync(file, 'utf8')) as { version: string }).version;
  } catch {
    return undefined;
  }
}

function run(cmd: string, args: string[], o: { cwd?: string; env?: NodeJS.ProcessEnv } = {}): SpawnSyncReturns<string> {
  return spawnSync(cmd, args, { encoding: 'utf8', maxBuffer: 64 << 20, ...o });
}

/** The last lines of what a command printed, for an error message. */
function tail(r: SpawnSyncReturns<string>, lines = 6): string {
  if (r.error) return r.error.message;
  return `${r.stdout ?? ''}\n${r.stderr ?? ''}`.trim().split('\n').slice(-lines).join('\n');
}

/** Everything the build needs, checked before anything is downloaded. */
function checkTools(): void {
  if (run('python3', ['--version']).status !== 0)
    throw fail('python', 'python3 is not on PATH; it fetches and reads the TensorFlow wheel');
  if (run('python3', ['-m', 'pip', '--version']).status !== 0)
    throw fail('pip', "python3 has no pip ('python3 -m pip' fails): install python3-pip");
  if (run('c++', ['--version']).status !== 0 && run('g++', ['--version']).status !== 0)
    throw fail('compiler', 'no C++ compiler (c++ or g++) on PATH: install g++ (build-essential)');
  if (run('make', ['--version']).status !== 0)
    throw fail('compiler', 'make is not on PATH: install make (build-essential)');
}

interface Libtensorflow {
  /** Holds include/ and lib/ (the libraries under every name LIBRARIES gives). */
  dir: string;
}

/** The wheel's libraries and headers, from the cache or fetched into it. */
async function libtensorflow(flavor: NativeFlavor, version: string, log: (l: string) => void): Promise<Libtensorflow> {
  const dir = join(troupeCache(), 'tensorflow', `${flavor.wheel}-${version}-${process.platform}-${process.arch}`);
  if (existsSync(join(dir, 'ready'))) {
    log(`libtensorflow ${version}: cached in ${dir}`);
    return { dir };
  }
  // Built aside and renamed into place, so a run that stops half-way leaves nothing that looks ready.
  const work = `${dir}.tmp-${process.pid}`;
  rmSync(work, { recursive: true, force: true });
  mkdirSync(join(work, 'wheel'), { recursive: true });
  const spec = `${flavor.wheel}==${version}`;
  log(`downloading ${spec} with pip (a few hundred MB)`);
  const started = Date.now();
  const dl = await runAsync('python3', [
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
    throw fail(
      'registry',
      `pip could not download ${spec} (is the Python package registry reachable, and does it have ${spec} for ` +
        `this Python and platform?):\n${dl.output.trim().split('\n').slice(-4).join('\n')}`,
    );
  }
  const wheel = readdirSync(join(work, 'wheel')).find((f) => f.endsWith('.whl'));
  if (!wheel) throw fail('registry', `pip reported success but left no wheel for ${spec}`);
  log(`downloaded ${wheel} in ${((Date.now() - started) / 1000).toFixed(0)} s; extracting libtensorflow and headers`);
  const libs = [...new Set(Object.values(LIBRARIES))];
  const ex = run('python3', [
    '-c',
    EXTRACT_PY,
    join(work, 'wheel', wheel),
    join(work, 'extracted'),
    JSON.stringify(libs),
    JSON.stringify(ROOT_HEADERS),
  ]);
  if (ex.status !== 0) {
    rmSync(work, { recursive: true, force: true });
    throw fail('wheel', `${wheel} does not hold the TensorFlow C API: ${tail(ex)}`);
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

/** The package, without its install script (which would download libtensorflow and fail), at tfjs-core's version:
 * another version would bring a second tfjs-core, whose backends troupe's copy never sees. */
function installPackage(projectDir: string, pkg: string, version: string, log: (l: string) => void): void {
  if (packageVersion(projectDir, pkg) === version) return;
  log(`npm install --no-save --ignore-scripts ${pkg}@${version}`);
  // --save-peer: where the project lists the package as an optional peer (troupe's own checkout does), npm takes a
  // plain request as already met by that edge and installs nothing. With --no-save, nothing is written either way.
  const args = ['install', '--no-save', '--save-peer', '--ignore-scripts', '--no-audit', '--no-fund'];
  const r = run('npm', [...args, `${pkg}@${version}`], { cwd: projectDir });
  if (r.status !== 0) throw fail('npm', `npm could not install ${pkg}@${version}:\n${tail(r)}`);
  const nested = join(projectDir, 'node_modules', pkg, 'node_modules', '@tensorflow', 'tfjs-core');
  if (existsSync(nested)) throw fail('npm', `${pkg}@${version} brought its own @tensorflow/tfjs-core (${nested})`);
}

/** deps/ is where binding.gyp looks for headers and libraries, and where the binding's rpath finds them at run time
 * ($ORIGIN/../../deps/lib): a link to the cache, so the 800 MB library is not copied into every node_modules. */
function linkDeps(pkgDir: string, tf: Libtensorflow): void {
  const deps = join(pkgDir, 'deps');
  try {
    if (readlinkSync(deps) === tf.dir) return;
  } catch {
    // not a link (missing, or the package's own empty dir)
  }
  rmSync(deps, { recursive: true, force: true });
  symlinkSync(tf.dir, deps);
}

/** The N-API version node-pre-gyp will look for: the highest the package lists that this Node supports. */
function napiVersion(pkgDir: string): number {
  const listed = (
    JSON.parse(readFileSync(join(pkgDir, 'package.json'), 'utf8')) as { binary: { napi_versions: number[] } }
  ).binary.napi_versions;
  const ours = Number(process.versions.napi);
  return Math.max(...listed.filter((v) => v <= ours));
}

async function placeBinding(
  pkgDir: string,
  flavor: NativeFlavor,
  tfjsVersion: string,
  tensorflowVersion: string,
  log: (l: string) => void,
): Promise<void> {
  const napi = napiVersion(pkgDir);
  const platform = `${process.platform}-${process.arch}`;
  const key = `${flavor.pkg.split('/')[1]}-${tfjsVersion}-tf${tensorflowVersion}-napi${napi}-${platform}`;
  const cached = join(troupeCache(), 'tensorflow', 'bindings', key, 'tfjs_binding.node');
  if (!existsSync(cached)) {
    const started = Date.now();
    log(`building the binding with node-gyp (N-API ${napi}; about a minute)`);
    const gyp = nodeGyp();
    const nodedir = nodeHeadersDir();
    const r = await runAsync(
      process.execPath,
      [
        gyp,
        'rebuild',
        ...(nodedir ? [`--nodedir=${nodedir}`] : []),
        `--napi_build_version=${napi}`,
        '--module_name=tfjs_binding',
        `--module_path=lib/napi-v${napi}`,
      ],
      { cwd: pkgDir },
    );
    const built = join(pkgDir, 'build', 'Release', 'tfjs_binding.node');
    if (r.code !== 0 || !existsSync(built))
      throw fail(
        'build',
        `node-gyp could not build ${flavor.pkg}'s binding` +
          `${nodedir ? '' : ' (no Node headers found next to this node: node-gyp tried to download them)'}:\n` +
          r.output.trim().split('\n').slice(-8).join('\n'),
      );
    mkdirSync(dirname(cached), { recursive: true });
    copyFileSync(built, `${cached}.tmp-${process.pid}`);
    renameSync(`${cached}.tmp-${process.pid}`, cached);
    rmSync(join(pkgDir, 'build'), { recursive: true, force: true });
    log(`built in ${((Date.now() - started) / 1000).toFixed(0)} s; cached as ${cached}`);
  } else {
    log(`binding: cached (${cached})`);
  }
  const target = join(pkgDir, 'lib', `napi-v${napi}`);
  mkdirSync(target, { recursive: true });
  copyFileSync(cached, join(target, 'tfjs_binding.node'));
}

/** npm's own node-gyp: it comes with every npm, so nothing is downloaded. */
function nodeGyp(): string {
  const candidates = [
    join(
      dirname(process.execPath),
      '..',
      'lib',
      'node_modules',
      'npm',
      'node_modules',
      'node-gyp',
      'bin',
      'node-gyp.js',
    ),
  ];
  const npmPrefix = run('npm', ['prefix', '-g']);
  if (npmPrefix.status === 0)
    candidates.push(
      join(npmPrefix.stdout.trim(), 'lib', 'node_modules', 'npm', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js'),
    );
  const found = candidates.find((c) => existsSync(c));
  if (!found) throw fail('compiler', `npm's node-gyp was not found (looked in ${candidates.join(', ')})`);
  return found;
}

/** Where this Node's headers are (include/node/node_api.h under it), so node-gyp need not download them. */
function nodeHeadersDir(): string | undefined {
  const configured = run('npm', ['config', 'get', 'nodedir']).stdout?.trim();
  for (const d of [configured, join(dirname(process.execPath), '..'), '/usr'])
    if (d && d !== 'undefined' && existsSync(join(d, 'include', 'node', 'node_api.h'))) return d;
  return undefined;
}

function runAsync(
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

/** A child process in the project loads `pkg` and, asked to, times a 1024² matMul (GFLOP/s). */
const PROBE_JS = `
const [pkg, reps] = process.argv.slice(1);
const out = (o) => { process.stdout.write(JSON.stringify(o)); process.exit(0); };
(async () => {
  const tf = await import('@tensorflow/tfjs-core');
  try { await import(pkg); } catch (e) { return out({ backend: 'none', error: String(e.message).split('\\n')[0] }); }
  if (pkg.endsWith('wasm')) await tf.setBackend('wasm');
  await tf.ready();
  let gflops;
  if (Number(reps) > 0) {
    const a = tf.randomNormal([1024, 1024]), b = tf.randomNormal([1024, 1024]);
    tf.matMul(a, b).dataSync();
    const t0 = performance.now();
    for (let i = 0; i < Number(reps); i++) tf.matMul(a, b).dataSync();
    gflops = (Number(reps) * 2 * 1024 ** 3) / ((performance.now() - t0) / 1000) / 1e9;
  }
  out({ backend: tf.getBackend(), gflops });
})();
`;

interface Probe {
  backend: string;
  error?: string;
  gflops?: number;
}

async function probeBackend(projectDir: string, pkg: string, reps: number, threads?: number): Promise<Probe> {
  const env = { ...process.env, TF_CPP_MIN_LOG_LEVEL: '2' };
  if (threads) Object.assign(env, { TF_NUM_INTRAOP_THREADS: String(threads), TF_NUM_INTEROP_THREADS: '1' });
  const r = await runAsync(process.execPath, ['--input-type=commonjs', '-e', PROBE_JS, pkg, String(reps)], {
    cwd: projectDir,
    env,
  });
  const last = r.output.trim().split('\n').pop() ?? '';
  try {
    return JSON.parse(last.slice(last.indexOf('{'))) as Probe;
  } catch {
    return { backend: 'none', error: r.output.trim().split('\n').slice(-3).join(' ') };
  }
}

async function speeds(projectDir: string, flavor: NativeFlavor): Promise<Speed> {
  const one = await probeBackend(projectDir, flavor.pkg, 10, 1);
  const all = await probeBackend(projectDir, flavor.pkg, 20);
  const wasm = await probeBackend(projectDir, '@tensorflow/tfjs-backend-wasm', 5);
  return { oneThread: one.gflops ?? 0, allThreads: all.gflops ?? 0, wasm: wasm.gflops };
}
