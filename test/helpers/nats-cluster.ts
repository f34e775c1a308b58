// A user's own NATS cluster, as `troupe start --head --nats URL,URL,URL` uses one: nats-servers with JetStream, routed
// to each other on loopback, one token. Each has a monitoring port, so a test can find which server a connection is on.
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { freePort, terminate } from '../../runtime/base/processes.ts';
import { eventually } from './cluster.ts';

export interface NatsClusterServer {
  name: string;
  /** Its client port on 127.0.0.1. */
  port: number;
  /** Its process, while it runs. */
  child?: ChildProcess;
}

export interface NatsCluster {
  /** Every server's client address, comma-separated: what --nats takes. */
  address: string;
  token: string;
  servers: NatsClusterServer[];
  /** The server that holds the client connection named `name` (nats.js's `name` option), if one does. */
  serverOf(name: string): Promise<NatsClusterServer | undefined>;
  /** SIGKILL: what the server had on its way is lost. Resolves once it has exited. */
  kill(server: NatsClusterServer): Promise<void>;
  /** Stops every server. Safe to call twice. */
  stop(): Promise<void>;
}

/** Starts `n` servers in `dir` and resolves once JetStream has a meta leader (the cluster can keep state).
 * `maxFileStore`: JetStream's bound on each server's disk (its `max_file_store`, such as '1G'), for a small disk. */
export async function startNatsCluster(dir: string, n = 3, o: { maxFileStore?: string } = {}): Promise<NatsCluster> {
  const token = randomBytes(16).toString('hex');
  const servers: Array<NatsClusterServer & { routePort: number; httpPort: number }> = [];
  for (let i = 0; i < n; i++)
    servers.push({ name: `s${i}`, port: await freePort(), routePort: await freePort(), httpPort: await freePort() });
  const logOf = (s: NatsClusterServer) => join(dir, `${s.name}.log`);
  const bound = o.maxFileStore ? `, max_file_store: ${o.maxFileStore}` : '';
  const routes = servers.map((s) => `nats-route://127.0.0.1:${s.routePort}`).join(', ');
  const stop = async () => {
    await Promise.all(servers.map((s) => s.child?.pid && terminate(s.child.pid)));
  };
  try {
    for (const s of servers) {
      mkdirSync(join(dir, s.name), { recursive: true });
      const conf = join(dir, `${s.name}.conf`);
      writeFileSync(
        conf,
        [
          `server_name: ${s.name}`,
          `listen: 127.0.0.1:${s.port}`,
          `http: 127.0.0.1:${s.httpPort}`,
          `authorization { token: "${token}" }`,
          `jetstream { store_dir: ${JSON.stringify(join(dir, s.name))}${bound} }`,
          `cluster { name: users-nats, listen: 127.0.0.1:${s.routePort}, routes: [${routes}] }`,
          '',
        ].join('\n'),
        { mode: 0o600 },
      );
      s.child = spawn('nats-server', ['-c', conf, '-l', logOf(s)], { stdio: 'ignore' });
    }
    await eventually(
      'every server of the NATS cluster to know its JetStream meta leader',
      async () =>
        servers.every(
          (s) =>
            existsSync(logOf(s)) && /new (JetStream cluster )?metadata leader/.test(readFileSync(logOf(s), 'utf8')),
        ),
      30_000,
    );
  } catch (e) {
    await stop();
    const tails = servers.map((s) => {
      const log = existsSync(logOf(s)) ? readFileSync(logOf(s), 'utf8') : '(no log)';
      return `${s.name}:\n${log.split('\n').slice(-8).join('\n')}`;
    });
    throw new Error(`${(e as Error).message}; the servers' logs end:\n${tails.join('\n')}`, { cause: e });
  }
  return {
    address: servers.map((s) => `127.0.0.1:${s.port}`).join(','),
    token,
    servers,
    serverOf: async (name) => {
      for (const s of servers) {
        if (!s.child || s.child.exitCode !== null || s.child.signalCode) continue;
        const connz = (await (await fetch(`http://127.0.0.1:${s.httpPort}/connz?limit=1024`)).json()) as {
          connections?: Array<{ name?: string }>;
        };
        if (connz.connections?.some((c) => c.name === name)) return s;
      }
      return undefined;
    },
    kill: async (s) => {
      const child = s.child!;
      if (child.exitCode === null && !child.signalCode) {
        const exited = new Promise((r) => child.once('exit', r));
        child.kill('SIGKILL');
        await exited;
      }
    },
    stop,
  };
}
