// The cross-host rows of npm run bench, on two simulated hosts (test/helpers/hosts.ts: network namespaces joined by
// veth through a bridge, each with its own /tmp, /dev/shm and hostname). A head (and its nats-server) on host A, a
// node with resource `b` on host B; troupe and its references measured across the same link in the same run:
// - actor calls from a driver on A to an actor on B, against a Moleculer broker on A calling a service on B, both over
//   the nats-server on A (workloads/cross-host-driver.ts);
// - an object put on A and read on B, against raw nats.js on B fetching the same bytes from a bulk server on A in the
//   same chunks (workloads/cross-host-bulk.ts).
// The per-host scripts print one JSON line per figure. Without root and `ip netns`, nothing runs: crossHost() says why.
// The bus is TLS, as on any cluster open to the network, and the references use the same TLS; `{ tls: false }` runs
// everything on a plain bus (--no-tls) instead, to show what TLS costs (the tls_* rows, bench/tls-cost.ts).
import { join } from 'node:path';
import type { ChildProcess } from 'node:child_process';
import { hostsUnavailable, makeHosts, type Host } from '../test/helpers/hosts.ts';
import { parseAddress } from '../runtime/base/config.ts';
import { startMoleculerService, type Latency } from './workloads/references.ts';
import { startBulkServer } from './workloads/objects.ts';
import type { Spawner } from './workloads/start-ready.ts';

export interface CrossHostCounts {
  /** Calls one at a time, and calls IN_FLIGHT (1,000) at a time, per turn. */
  sync: number;
  async: number;
  /** Counted turns of each (Moleculer, then troupe) after one that warms both up. */
  rounds: number;
  /** Size of the object (a multiple of 4) and how many are read after one that warms up. */
  objectBytes: number;
  objectRounds: number;
}

/** Calls per second, troupe and Moleculer (medians of the turns). */
export interface CallFigure {
  troupe: number;
  moleculer: number;
}

export interface CrossHostFigures {
  callsSync: CallFigure;
  callsAsync: CallFigure;
  /** Bytes per second: troupe's get() on B of an object put on A, and raw nats.js over the same link. */
  object: { troupe: number; raw_nats: number };
  /** With CROSS_LATENCY=1 in the environment: how long each sync call took (bench/cross-host-calls.ts). */
  latencySync?: { troupe: Latency; moleculer: Latency };
}

const root = join(import.meta.dirname, '..');
const cli = join(root, 'runtime', 'cli', 'troupe.mjs');
const workload = (file: string) => join(root, 'bench', 'workloads', file);
// Each host has a /tmp of its own: the same TROUPE_HOME path names a different folder on each.
const env = { TROUPE_HOME: '/tmp/troupe-home', TROUPE_ADDRESS: '', TROUPE_TOKEN: '' };

/** Runs both comparisons on two fresh simulated hosts, removed again on every exit path; `unavailable` says why they
 * cannot be made here (no root, no `ip netns`). `timeoutMs` bounds each step. */
export async function crossHost(
  counts: CrossHostCounts,
  timeoutMs = 180_000,
  o: { tls?: boolean } = {},
): Promise<CrossHostFigures | { unavailable: string }> {
  const why = hostsUnavailable();
  if (why) return { unavailable: why };
  const net = await makeHosts(['host-a', 'host-b']);
  const [a, b] = net.hosts;
  const children: ChildProcess[] = [];
  try {
    const troupe = async (h: Host, args: string[], extra: NodeJS.ProcessEnv = {}) => {
      const r = await h.run(process.execPath, [cli, ...args], { cwd: root, timeoutMs, env: { ...env, ...extra } });
      if (r.code !== 0) throw new Error(`troupe ${args.join(' ')} on ${h.name}: ${r.signal ?? r.code}\n${tail(r)}`);
      return r.stdout;
    };
    const plain = o.tls === false ? ['--no-tls'] : [];
    const started = await troupe(a, ['start', '--head', '--host', a.ip, '--num-cpus', '2', ...plain]);
    const joinLine = /TROUPE_TOKEN=(\S+) .*start --address (\S+?)( --ca-sha256 \S+| --no-tls)?\n/.exec(started);
    if (!joinLine) throw new Error(`no join line from troupe start --head:\n${started}`);
    const [, token, address, trust] = joinLine;
    const joinFlags = trust?.trim().split(' ') ?? [];
    await troupe(b, ['start', '--address', address, ...joinFlags, '--num-cpus', '2', '--resources', '{"b": 4}'], {
      TROUPE_TOKEN: token,
    });
    const url = parseAddress(address);
    // The references' own NATS user, allowed every subject (workloads/reference-user.ts), added on the head's host.
    const user = await a.run(
      process.execPath,
      ['--import', 'tsx', '--conditions=troupe-source', workload('reference-user.ts'), address],
      {
        cwd: root,
        timeoutMs,
        env,
      },
    );
    if (user.code !== 0) throw new Error(`reference-user.ts on ${a.name}: ${user.signal ?? user.code}\n${tail(user)}`);
    const reference = user.stdout.trim().split('\n').pop()!;

    // In the checkout, where `--import tsx` resolves (a host's commands start in its root directory otherwise).
    // In a session of their own, as troupe's daemons and the workers they start are. With autogroup scheduling
    // (Linux's default), a session's processes share one CPU share: a Moleculer service in the driver's session wrote
    // its answers about 3× faster (20–35 µs a write() against 70–100 µs) than the same service in its own session or
    // troupe's worker on this loaded machine, which two real hosts would not give it.
    const on =
      (h: Host): Spawner =>
      (cmd, args, o) =>
        // The host's TROUPE_HOME: where the references find the CA the node saved.
        h.spawn('setsid', [cmd, ...args], { env: { ...env, ...o.env }, cwd: root });
    children.push(await startMoleculerService(url, reference, on(b)));
    const subject = `bench.bulk.cross.${process.pid}`;
    children.push(await startBulkServer(address, reference, subject, counts.objectBytes, on(a)));

    const driver = await script(a, 'cross-host-driver.ts', timeoutMs, {
      CROSS_SYNC: String(counts.sync),
      CROSS_ASYNC: String(counts.async),
      CROSS_ROUNDS: String(counts.rounds),
      CROSS_BYTES: String(counts.objectBytes),
      CROSS_OBJECT_ROUNDS: String(counts.objectRounds),
      CROSS_NATS_URL: url,
      CROSS_TOKEN: reference,
    });
    const bulk = await script(b, 'cross-host-bulk.ts', timeoutMs, {
      BULK_ADDRESS: address,
      BULK_TOKEN: reference,
      BULK_SUBJECT: subject,
      BULK_BYTES: String(counts.objectBytes),
      BULK_ROUNDS: String(counts.objectRounds),
    });
    const call = (figure: string): CallFigure => ({
      troupe: number(driver, figure, 'troupe'),
      moleculer: number(driver, figure, 'moleculer'),
    });
    return {
      callsSync: call('actor_calls_sync'),
      callsAsync: call('actor_calls_async'),
      object: { troupe: number(driver, 'object', 'troupe'), raw_nats: number(bulk, 'raw_bulk', 'raw_nats') },
      latencySync: driver.get('latency_sync') as CrossHostFigures['latencySync'],
    };
  } finally {
    for (const c of children) c.kill('SIGKILL');
    // A clean stop where it works; remove() kills whatever is left in the hosts anyway.
    for (const h of [b, a]) await h.run(process.execPath, [cli, 'stop'], { cwd: root, timeoutMs: 30_000, env });
    await net.remove();
  }
}

type Figures = Map<string, Record<string, unknown>>;

/** Runs a workload script on a host and reads its figures: the lines of stdout that are JSON with a `figure`. */
async function script(h: Host, file: string, timeoutMs: number, extra: NodeJS.ProcessEnv): Promise<Figures> {
  // TROUPE_CPU_PROF_DIR=dir: the scripts write CPU profiles there too, as troupe's own processes do (base/launch.ts).
  const dir = process.env.TROUPE_CPU_PROF_DIR;
  const prof = dir ? ['--cpu-prof', `--cpu-prof-dir=${dir}`] : [];
  const r = await h.run(process.execPath, [...prof, '--import', 'tsx', '--conditions=troupe-source', workload(file)], {
    cwd: root,
    timeoutMs,
    env: { ...env, ...extra },
  });
  if (r.code !== 0) throw new Error(`${file} on ${h.name}: ${r.signal ?? `exit ${r.code}`}\n${tail(r)}`);
  const figures: Figures = new Map();
  for (const line of r.stdout.split('\n')) {
    if (!line.startsWith('{"figure"')) continue;
    const o = JSON.parse(line) as Record<string, unknown>;
    figures.set(String(o.figure), o);
  }
  return figures;
}

function number(figures: Figures, figure: string, field: string): number {
  const v = figures.get(figure)?.[field];
  if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0)
    throw new Error(`no ${field} for ${figure} in ${JSON.stringify([...figures.values()])}`);
  return v;
}

function tail(r: { stdout: string; stderr: string }): string {
  return `${r.stdout.slice(-1500)}\n${r.stderr.slice(-1500)}`;
}
