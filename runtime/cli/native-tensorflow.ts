// `troupe setup tensorflow`: builds tfjs's native backend from parts the package registries serve, for machines
// where @tensorflow/tfjs-node's own installer cannot download libtensorflow (a closed network, a firewall): the
// library from the TensorFlow wheel (tensorflow-wheel.ts), the npm package without its install script, and its
// binding compiled by npm's own node-gyp against this Node's headers. The built binding is cached per version under
// troupeCache() too, so a second run (or one after npm ci) costs a copy. Each step that cannot run fails with a
// TensorflowSetupError naming it.
import {
  copyFileSync,
  existsSync,
  mkdirSync,
  readFileSync,
  readlinkSync,
  renameSync,
  rmSync,
  symlinkSync,
} from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { TensorflowSetupError, type SetupStep } from '../base/errors.ts';
import { troupeCache } from '../base/config.ts';
import { lastLines, runTool, runToolAsync } from './run-tool.ts';
import { libtensorflow, type Libtensorflow } from './tensorflow-wheel.ts';
import { probeBackend, speeds, type Speed } from './backend-probe.ts';

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

export interface SetupReport {
  pkg: string;
  tfjsVersion: string;
  tensorflowVersion: string;
  /** Nothing was done: the backend already loaded. */
  already: boolean;
  speed: Speed;
}

/** Sets up the native backend; returns what it found or did. Throws TensorflowSetupError naming the failed step. */
export async function setupNativeTensorflow(o: SetupOptions = {}): Promise<SetupReport> {
  const log = o.log ?? (() => undefined);
  const flavor = FLAVORS[o.gpu ? 'gpu' : 'cpu'];
  const tensorflowVersion = o.tensorflowVersion ?? TENSORFLOW_VERSION;
  const projectDir = o.projectDir ?? tfjsProjectDir();
  const tfjsVersion = packageVersion(projectDir, '@tensorflow/tfjs-core');
  if (!tfjsVersion) throw fail('npm', `@tensorflow/tfjs-core is not installed in ${projectDir}: npm install first`);

  const loaded = await probeBackend(projectDir, flavor.pkg, 0);
  if (loaded.backend === 'tensorflow') {
    log(`${flavor.pkg} already loads here (backend tensorflow): nothing to do`);
    return {
      pkg: flavor.pkg,
      tfjsVersion,
      tensorflowVersion,
      already: true,
      speed: await speeds(projectDir, flavor.pkg),
    };
  }

  checkTools();
  const tf = await libtensorflow(flavor.wheel, tensorflowVersion, log);
  installPackage(projectDir, flavor.pkg, tfjsVersion, log);
  const pkgDir = join(projectDir, 'node_modules', flavor.pkg);
  linkDeps(pkgDir, tf);
  await placeBinding(pkgDir, flavor, tfjsVersion, tensorflowVersion, log);

  const after = await probeBackend(projectDir, flavor.pkg, 0);
  if (after.backend !== 'tensorflow')
    throw fail('load', `the built ${flavor.pkg} does not load: ${after.error ?? after.backend}`);
  log(`${flavor.pkg} loads: backend tensorflow`);
  return {
    pkg: flavor.pkg,
    tfjsVersion,
    tensorflowVersion,
    already: false,
    speed: await speeds(projectDir, flavor.pkg),
  };
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

/** Everything the build needs, checked before anything is downloaded. */
function checkTools(): void {
  if (runTool('python3', ['--version']).status !== 0)
    throw fail('python', 'python3 is not on PATH; it fetches and reads the TensorFlow wheel');
  if (runTool('python3', ['-m', 'pip', '--version']).status !== 0)
    throw fail('pip', "python3 has no pip ('python3 -m pip' fails): install python3-pip");
  if (runTool('c++', ['--version']).status !== 0 && runTool('g++', ['--version']).status !== 0)
    throw fail('compiler', 'no C++ compiler (c++ or g++) on PATH: install g++ (build-essential)');
  if (runTool('make', ['--version']).status !== 0)
    throw fail('compiler', 'make is not on PATH: install make (build-essential)');
}

/** The package, without its install script (which would download libtensorflow and fail), at tfjs-core's version:
 * another version would bring a second tfjs-core, whose backends troupe's copy never sees. */
function installPackage(projectDir: string, pkg: string, version: string, log: (l: string) => void): void {
  if (packageVersion(projectDir, pkg) === version) return;
  log(`npm install --no-save --ignore-scripts ${pkg}@${version}`);
  // --save-peer: where the project lists the package as an optional peer (troupe's own checkout does), npm takes a
  // plain request as already met by that edge and installs nothing. With --no-save, nothing is written either way.
  const args = ['install', '--no-save', '--save-peer', '--ignore-scripts', '--no-audit', '--no-fund'];
  const r = runTool('npm', [...args, `${pkg}@${version}`], { cwd: projectDir });
  if (r.status !== 0) throw fail('npm', `npm could not install ${pkg}@${version}:\n${lastLines(r)}`);
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
    const r = await runToolAsync(
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
  const npmPrefix = runTool('npm', ['prefix', '-g']);
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
  const configured = runTool('npm', ['config', 'get', 'nodedir']).stdout?.trim();
  for (const d of [configured, join(dirname(process.execPath), '..'), '/usr'])
    if (d && d !== 'undefined' && existsSync(join(d, 'include', 'node', 'node_api.h'))) return d;
  return undefined;
}
