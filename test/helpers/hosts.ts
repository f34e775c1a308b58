// Simulated machines for tests: each host is a network namespace with a mount namespace of its own (private /tmp and
// /dev/shm) and its own hostname, joined to the others through a bridge in a namespace of its own, on 10.x.y.0/24.
// Traffic goes only to those addresses. Needs root and `ip netns`; hostsUnavailable() says why not, if not.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { readdirSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { isAlive } from '../../runtime/base/processes.ts';
import type { RunResult } from './cluster.ts';

export interface Host {
  name: string;
  /** Its address on the simulated network. */
  ip: string;
  /** Where troupe's checkout is on this host: the checkout's own path, or the host's `troupeAt`. */
  troupeRoot: string;
  /** A path of this host's file system (its private /tmp included) as this test process reaches it. */
  path(p: string): string;
  /** Takes the host's link to the network down for `ms`, then up again; resolves with when it went down and came back
   * (ms since the epoch). */
  cutOff(ms: number): Promise<{ cutAt: number; healedAt: number }>;
  /** Starts a command on this host (its network, mounts and hostname). */
  spawn(cmd: string, args: string[], o?: { env?: NodeJS.ProcessEnv; cwd?: string }): ChildProcess;
  /** Runs a command on this host to completion, bounded by timeoutMs. */
  run(
    cmd: string,
    args: string[],
    o?: { env?: NodeJS.ProcessEnv; cwd?: string; timeoutMs?: number },
  ): Promise<RunResult>;
}

export interface Hosts {
  hosts: Host[];
  /** Kills every process on the hosts and removes their namespaces. Safe to call twice. */
  remove(): Promise<void>;
}

const PREFIX = 'trh'; // namespace names: trh<pid>n<k>-<host>, so a sweep can tell whose they are
let made = 0;

function ip(...args: string[]): void {
  const r = spawnSync('ip', args, { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`ip ${args.join(' ')}: ${r.stderr || r.error?.message}`);
}

/** Why hosts cannot be simulated here, or undefined when they can. */
export function hostsUnavailable(): string | undefined {
  if (process.getuid?.() !== 0) return 'simulated hosts need root (network and mount namespaces)';
  const probe = `${PREFIX}${process.pid}probe`;
  const r = spawnSync('ip', ['netns', 'add', probe], { encoding: 'utf8' });
  if (r.status !== 0) return `simulated hosts need \`ip netns\`: ${r.stderr?.trim() || r.error?.message}`;
  spawnSync('ip', ['netns', 'del', probe]);
  for (const tool of ['unshare', 'nsenter', 'setpriv'])
    if (spawnSync('which', [tool]).status !== 0) return `simulated hosts need ${tool} (util-linux)`;
  return undefined;
}

/** Namespaces left by a test process that is gone (killed before it could remove them). */
function sweep(): void {
  const list = spawnSync('ip', ['netns', 'list'], { encoding: 'utf8' }).stdout ?? '';
  for (const line of list.split('\n')) {
    const name = line.split(' ')[0];
    const owner = new RegExp(`^${PREFIX}(\\d+)n\\d+-`).exec(name)?.[1];
    if (owner && !isAlive(Number(owner))) removeNamespace(name);
  }
}

function removeNamespace(name: string): void {
  const pids = (spawnSync('ip', ['netns', 'pids', name], { encoding: 'utf8' }).stdout ?? '').split('\n');
  for (const pid of pids.filter(Boolean)) {
    try {
      process.kill(Number(pid), 'SIGKILL');
    } catch {
      /* gone already */
    }
  }
  spawnSync('ip', ['netns', 'del', name]);
}

/** A host's name, or its name and where troupe is installed on it. */
/** A host's name, or its name and: `troupeAt`, where it sees troupe's checkout; `tmpSize`, the size of its /tmp (a
 * tmpfs: `mount -o size=`, such as '4g'; default half the RAM), for a machine with a small disk. */
export type HostSpec = string | { name: string; troupeAt?: string; tmpSize?: string };

/** Makes one host per spec, on one network. Each host sees troupe's checkout at the checkout's path, or, given
 * `troupeAt` (a path under /tmp), only there: the checkout's own path is hidden on that host, as on a machine where
 * troupe was installed elsewhere. Call remove() when done (a teardown); a test process killed before that leaves a
 * watchdog behind that removes them, and the next makeHosts() sweeps what is left anyway. */
export async function makeHosts(specs: HostSpec[]): Promise<Hosts> {
  sweep();
  const names = specs.map((s) => (typeof s === 'string' ? s : s.name));
  const k = ++made;
  const id = `${PREFIX}${process.pid}n${k}`;
  const net = `10.${200 + (process.pid % 50)}.${k % 250}`;
  const namespaces = [`${id}-sw`, ...names.map((_, i) => `${id}-h${i}`)];
  const anchors: ChildProcess[] = [];
  let removed = false;
  const remove = async () => {
    if (removed) return;
    removed = true;
    watchdog.kill('SIGKILL');
    for (const a of anchors) a.kill('SIGKILL');
    for (const ns of namespaces) removeNamespace(ns);
  };
  // If this process dies without remove(), this removes the namespaces (and so every process in them) instead.
  const watchdog = spawn(
    'sh',
    [
      '-c',
      `while kill -0 ${process.pid} 2>/dev/null; do sleep 1; done; for ns in ${namespaces.join(' ')}; do ` +
        'for p in $(ip netns pids $ns); do kill -9 $p; done; ip netns del $ns; done',
    ],
    { detached: true, stdio: 'ignore' },
  );
  watchdog.unref();
  try {
    ip('netns', 'add', namespaces[0]);
    ip('-n', namespaces[0], 'link', 'add', 'br0', 'type', 'bridge');
    ip('-n', namespaces[0], 'link', 'set', 'br0', 'up');
    const hosts: Host[] = [];
    for (const [i, name] of names.entries()) {
      const ns = namespaces[i + 1];
      const { troupeAt, tmpSize } = typeof specs[i] === 'string' ? {} : (specs[i] as Exclude<HostSpec, string>);
      const [inHost, inSwitch] = [`v${process.pid}n${k}h${i}`, `v${process.pid}n${k}s${i}`];
      ip('netns', 'add', ns);
      ip('link', 'add', inHost, 'type', 'veth', 'peer', 'name', inSwitch);
      ip('link', 'set', inSwitch, 'netns', namespaces[0]);
      ip('link', 'set', inHost, 'netns', ns);
      ip('-n', namespaces[0], 'link', 'set', inSwitch, 'master', 'br0', 'up');
      ip('-n', ns, 'link', 'set', inHost, 'name', 'eth0');
      ip('-n', ns, 'addr', 'add', `${net}.${i + 1}/24`, 'dev', 'eth0');
      ip('-n', ns, 'link', 'set', 'eth0', 'up');
      ip('-n', ns, 'link', 'set', 'lo', 'up');
      // The host's mount and UTS namespaces live as long as this anchor, which dies with this process.
      const anchor = spawn(
        'ip',
        [
          'netns',
          'exec',
          ns,
          'setpriv',
          '--pdeathsig',
          'SIGKILL',
          'unshare',
          '--mount',
          '--uts',
          '--propagation',
          'private',
          'sh',
          '-c',
          `${privateTmp(checkout, troupeAt, tmpSize)} && mount -t tmpfs tmpfs /dev/shm && hostname ${name} && ` +
            'echo up && exec sleep 3600',
        ],
        { stdio: ['ignore', 'pipe', 'pipe'] },
      );
      anchors.push(anchor);
      const [line] = (await Promise.race([once(anchor.stdout!, 'data'), once(anchor, 'exit')])) as [unknown];
      if (String(line).trim() !== 'up') throw new Error(`host ${name} did not come up`);
      hosts.push(hostOn(name, `${net}.${i + 1}`, ns, anchor.pid!, troupeAt ?? checkout));
    }
    return { hosts, remove };
  } catch (e) {
    await remove();
    throw e;
  }
}

/** The checkout (the tests, troupe, node_modules) is on every host, as on machines with the same install. */
const checkout = resolve(import.meta.dirname, '..', '..');

const q = (s: string) => `'${s.replace(/'/g, "'\\''")}'`;

/** Shell that gives the host an empty /tmp of its own, in which troupe's checkout is still reachable: at its own path,
 * or only at `troupeAt` (under /tmp), its own path then covered by an empty tmpfs. The old /tmp is bound at /mnt (in
 * this mount namespace only) long enough to bind a checkout that lives under /tmp (a CI clone) back. */
const tsxCacheName = `tsx-${process.geteuid?.() ?? 'user'}`;
const tsxCache = `/mnt/${tsxCacheName}`;

function privateTmp(keep: string, troupeAt?: string, tmpSize?: string): string {
  if (troupeAt !== undefined && !troupeAt.startsWith('/tmp/'))
    throw new Error(`troupeAt must be under /tmp (the host's private /tmp), not ${troupeAt}`);
  const inTmp = keep.startsWith('/tmp/');
  const source = inTmp ? `/mnt${keep.slice('/tmp'.length)}` : keep;
  const target = troupeAt ?? (inTmp ? keep : undefined);
  return [
    'mount --bind /tmp /mnt',
    `mount -t tmpfs ${tmpSize ? `-o size=${q(tmpSize)} ` : ''}tmpfs /tmp`,
    // tsx's cache of compiled TypeScript, as a machine that has run troupe before has its own: without it every
    // driver on the host compiles again. It holds nothing but compiled code. (troupe's own processes keep theirs in
    // the checkout, which every host shares.)
    `if [ -d ${tsxCache} ]; then mkdir -p /tmp/${tsxCacheName} && mount --bind ${tsxCache} /tmp/${tsxCacheName}; fi`,
    ...(target ? [`mkdir -p ${q(target)}`, `mount --bind ${q(source)} ${q(target)}`] : []),
    'umount -l /mnt',
    ...(troupeAt && !inTmp ? [`mount -t tmpfs tmpfs ${q(keep)}`] : []),
  ].join(' && ');
}

function hostOn(name: string, address: string, ns: string, anchorPid: number, troupeRoot: string): Host {
  const enter = ['-t', String(anchorPid), '-n', '-m', '-u', '--'];
  const host: Host = {
    name,
    ip: address,
    troupeRoot,
    // The anchor's root is the host's: through /proc, its private mounts are reachable from here.
    path: (p) => `/proc/${anchorPid}/root${resolve('/', p)}`,
    cutOff: async (ms) => {
      ip('-n', ns, 'link', 'set', 'eth0', 'down');
      const cutAt = Date.now();
      await new Promise((r) => setTimeout(r, ms));
      ip('-n', ns, 'link', 'set', 'eth0', 'up');
      return { cutAt, healedAt: Date.now() };
    },
    // nsenter opens --wd before it enters the host's mounts, so a directory only the host has (in its private /tmp)
    // is entered by `env -C` inside; without cwd, the host's root directory.
    spawn: (cmd, args, o = {}) =>
      spawn('nsenter', [...enter, ...(o.cwd ? ['env', '-C', o.cwd] : []), cmd, ...args], {
        env: { ...process.env, ...o.env },
        stdio: ['ignore', 'pipe', 'pipe'],
      }),
    run: (cmd, args, o = {}) =>
      new Promise((resolve) => {
        const child = host.spawn(cmd, args, o);
        let stdout = '';
        let stderr = '';
        child.stdout!.on('data', (d) => {
          stdout += d;
        });
        child.stderr!.on('data', (d) => {
          stderr += d;
        });
        const timer = setTimeout(() => child.kill('SIGKILL'), o.timeoutMs ?? 60_000);
        child.on('close', (code, signal) => {
          clearTimeout(timer);
          resolve({ code, signal, stdout, stderr });
        });
      }),
  };
  return host;
}

/** `troupe ARGS` on `h`, with the troupe installed there, from `cwd` (default: that troupe's directory). */
export function troupeOn(h: Host, args: string[], env: NodeJS.ProcessEnv = {}, cwd = h.troupeRoot): Promise<RunResult> {
  return h.run(process.execPath, [join(h.troupeRoot, 'runtime', 'cli', 'troupe.mjs'), ...args], {
    cwd,
    timeoutMs: 90_000,
    env,
  });
}

/** The run file of the `role` troupe started on `h` (`$TROUPE_HOME/run`, with TROUPE_HOME in h's own /tmp). */
export function runFileOn(h: Host, role: 'nats' | 'head' | 'node'): { pid: number; sessionDir: string } {
  const dir = h.path('/tmp/troupe-home/run');
  for (const f of readdirSync(dir)) {
    const r = JSON.parse(readFileSync(join(dir, f), 'utf8')) as { role: string; pid: number; sessionDir: string };
    if (r.role === role) return r;
  }
  throw new Error(`no ${role} run file on ${h.name}`);
}

/** The name of the bus server `h` runs (its nats-server's `server_name`, as JetStream names stream leaders). */
export function busServerName(h: Host): string {
  const bus = join(runFileOn(h, 'nats').sessionDir, 'bus.json');
  return (JSON.parse(readFileSync(h.path(bus), 'utf8')) as { serverName: string }).serverName;
}

/** The credential in `h`'s current-cluster file: the driver one its `troupe start` was given by the head. */
export function clusterTokenOn(h: Host): string {
  return (JSON.parse(readFileSync(h.path('/tmp/troupe-home/current-cluster.json'), 'utf8')) as { token: string }).token;
}

/** The join line `start --head` prints, with TLS: its credential, the address (every server, with `--bus-peers`) and
 * the CA's fingerprint. */
export const JOIN_LINE = /TROUPE_TOKEN=(\S+) .*start --address (\S+) --ca-sha256 (sha256:[0-9a-f]{64})\n/;

/** A cluster whose bus is a NATS cluster on `hosts`: `troupe start --head --bus-peers` on the first (which waits for a
 * peer, so it runs beside the joins) and its join line on each of the others, each with `flags[i]` too. Resolves
 * when every start has ended, with what the head's start printed; throws if one failed. */
export async function startBusOnHosts(
  hosts: Host[],
  env: NodeJS.ProcessEnv,
  flags: string[][] = [],
): Promise<{ address: string; joinToken: string; caSha256: string; headOutput: string }> {
  const [head, ...peers] = hosts;
  const peerIps = peers.map((h) => h.ip).join(',');
  const child = head.spawn(
    process.execPath,
    [
      join(head.troupeRoot, 'runtime', 'cli', 'troupe.mjs'),
      ...['start', '--head', '--host', head.ip, '--bus-peers', peerIps, ...(flags[0] ?? [])],
    ],
    { env: { ...process.env, ...env }, cwd: head.troupeRoot },
  );
  let out = '';
  child.stdout!.on('data', (d) => {
    out += d;
  });
  child.stderr!.on('data', (d) => {
    out += d;
  });
  const ended = new Promise<number | null>((done) => child.on('close', done));
  let line: RegExpExecArray | null = null;
  for (const until = Date.now() + 60_000; !(line = JOIN_LINE.exec(out)); await new Promise((r) => setTimeout(r, 50)))
    if (Date.now() > until || child.exitCode !== null) {
      child.kill();
      throw new Error(`start --head on ${head.name} printed no join line: ${out}`);
    }
  const [, joinToken, address, caSha256] = line;
  const joins = await Promise.all(
    peers.map((h, i) =>
      troupeOn(h, ['start', '--address', address, '--ca-sha256', caSha256, ...(flags[i + 1] ?? [])], {
        ...env,
        TROUPE_TOKEN: joinToken,
      }),
    ),
  );
  for (const [i, r] of joins.entries())
    if (r.code !== 0) throw new Error(`the join on ${peers[i].name}: ${r.stdout}${r.stderr}`);
  if ((await ended) !== 0) throw new Error(`start --head on ${head.name}: ${out}`);
  return { address, joinToken, caSha256, headOutput: out };
}

/** An environment for troupe on the hosts with its default timings (none of the test-shortened ones leak in from this
 * process) and a TROUPE_HOME in the host's own /tmp. */
export const defaultTimingsEnv: NodeJS.ProcessEnv = {
  TROUPE_HOME: '/tmp/troupe-home',
  TROUPE_ADDRESS: '',
  TROUPE_TOKEN: '',
  TROUPE_NODE_TIMEOUT_MS: '',
  TROUPE_NODE_SUSPECT_MS: '',
  TROUPE_HEARTBEAT_MS: '',
  TROUPE_CLIENT_TIMEOUT_MS: '',
};

/** A script of test/fixtures started on host `h` from this checkout (a driver, as a user's script), killed after
 * 150 s at most. `ready` says 'ready' once it printed `marker`, or how it exited first. */
export function startFixture(h: Pick<Host, 'spawn'>, fixture: string, env: NodeJS.ProcessEnv, marker: string) {
  const root = resolve(import.meta.dirname, '..', '..');
  const child = h.spawn(
    process.execPath,
    ['--import', 'tsx', '--conditions=troupe-source', join(root, 'test', 'fixtures', fixture)],
    { cwd: root, env },
  );
  let out = '';
  let err = '';
  child.stderr!.on('data', (d) => {
    err += d;
  });
  const exited = new Promise<number | null>((done) => child.on('close', (code) => done(code)));
  const ready = new Promise<string>((done) => {
    child.stdout!.on('data', (d) => {
      out += d;
      if (out.includes(marker)) done('ready');
    });
    void exited.then((code) => done(`exited ${code}`));
  });
  const kill = setTimeout(() => child.kill('SIGKILL'), 150_000);
  return {
    ready,
    exited,
    output: () => out + err,
    /** Its last JSON line: what it saw. */
    lastLine: () =>
      out
        .trim()
        .split('\n')
        .filter((l) => l.startsWith('{'))
        .pop()!,
    stop: () => {
      clearTimeout(kill);
      child.kill('SIGKILL');
    },
  };
}
