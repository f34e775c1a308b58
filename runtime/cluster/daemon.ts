// Entry point of the head and node daemon processes: `daemon.ts head|node`, config in TROUPE_DAEMON_CONFIG
// (the environment, not argv, because it carries the token).
import { Head, type HeadOptions } from '../head/head.ts';
import { NodeDaemon, type NodeDaemonOptions } from '../node/node-daemon.ts';
import { writeRunFile, removeRunFile } from './run-files.ts';
import { exitWithParent, isAlive, sleep, terminate } from '../base/processes.ts';
import { asError } from '../base/errors.ts';
import { Bus } from '../bus/bus.ts';
import { CREDENTIALS_SUBJECT, type Credentials } from '../protocol/permissions.ts';
import { followBusUsers, serveBusServers, serveBusUsers, type BusCluster } from './bus-servers.ts';

export type DaemonConfig =
  | {
      role: 'head';
      options: HeadOptions;
      sessionDir: string;
      parentPid?: number;
      natsPid?: number;
      /** What the head gives node daemons (only they may ask: CREDENTIALS_SUBJECT). */
      credentials?: Credentials;
      /** The bus is a NATS cluster this head's machine started: the head signs the other core servers' certificates
       * and gives them the users (bus-servers.ts). */
      bus?: BusCluster;
    }
  | {
      role: 'node';
      options: NodeDaemonOptions;
      sessionDir: string;
      parentPid?: number;
      /** This machine runs a core server of the bus: its users follow the head's. */
      busServer?: { dir: string };
    };

const config = JSON.parse(process.env.TROUPE_DAEMON_CONFIG ?? 'null') as DaemonConfig | null;
delete process.env.TROUPE_DAEMON_CONFIG; // workers must not inherit it
delete process.env.TROUPE_TOKEN; // nor the credential this daemon was started with
if (!config || config.role !== process.argv[2]) {
  console.error('troupe daemon: missing or mismatched TROUPE_DAEMON_CONFIG; start daemons with `troupe start`');
  process.exit(2);
}

let daemon = config.role === 'head' ? new Head(config.options) : new NodeDaemon(config.options);
const run = {
  role: config.role,
  pid: process.pid,
  address: config.options.address,
  sessionDir: config.sessionDir,
  nodeId: config.role === 'node' ? config.options.nodeId : undefined,
};

let stopping = false;
async function stop(code: number, o: { stopNats?: boolean; lastWords?: string } = {}): Promise<never> {
  if (!stopping) {
    stopping = true;
    // A daemon that cannot stop cleanly in 5 s still exits: orphans are worse than an untidy exit.
    void sideBus?.close().catch(() => undefined);
    const stopped = daemon.stop().catch((e) => console.error('troupe: error while stopping:', e));
    await Promise.race([stopped, new Promise((r) => setTimeout(r, 5000))]);
    // An embedded cluster's nats-server dies with its head.
    if (config!.role === 'head' && config!.natsPid && o.stopNats !== false) await terminate(config!.natsPid);
    removeRunFile(run);
  }
  if (o.lastWords) console.error(o.lastWords);
  process.exit(code);
}

process.on('SIGTERM', () => void stop(0));
process.on('SIGINT', () => void stop(0));
process.on('uncaughtException', (e) => {
  console.error('troupe: uncaught exception in daemon:', e);
  void stop(1);
});
process.on('unhandledRejection', (e) => console.error('troupe: unhandled rejection in daemon (continuing):', e));
exitWithParent(config.parentPid, () => stop(0));

/** The head answers node daemons' requests for the worker and driver credentials, and those of the bus's other core
 * servers, on a connection of its own: before it leads, since a bus of several servers has no JetStream (and so no
 * lease) until a second one is up. */
async function serveCredentials(c: Credentials, o: HeadOptions, plan: BusCluster | undefined): Promise<Bus> {
  const bus = await Bus.connect({ address: o.address, token: o.token, name: 'troupe-head-credentials', daemon: true });
  bus.serve(CREDENTIALS_SUBJECT, () => c);
  serveBusUsers(bus, config!.sessionDir);
  if (plan) serveBusServers(bus, config!.sessionDir, plan);
  await bus.flush();
  return bus;
}

/** A core server's node daemon keeps its server's users the head's, on a connection of its own. */
async function followUsers(o: NodeDaemonOptions, server: { dir: string }): Promise<Bus> {
  const bus = await Bus.connect({ address: o.address, token: o.token, name: 'troupe-node-bus-users', daemon: true });
  followBusUsers({ bus, dir: server.dir });
  return bus;
}

/** A node the head fenced (declared dead, after a partition or a pause) has stopped its workers: it joins again as a
 * new incarnation under the same id (a new startedAt), as soon as the head takes it. Fencing is not the end of a
 * machine's part in the cluster, only of the work it held. */
async function rejoinWhenFenced(node: NodeDaemon, options: NodeDaemonOptions): Promise<void> {
  await node.fenced;
  for (let attempt = 0; !stopping; attempt++) {
    const next = new NodeDaemon(options);
    daemon = next;
    try {
      await next.start();
      console.error(`troupe: node ${options.nodeId} joined again as a new incarnation`);
      return rejoinWhenFenced(next, options);
    } catch (e) {
      await next.stop().catch(() => undefined);
      const waitMs = Math.min(30_000, 1000 * 2 ** attempt);
      console.error(
        `troupe: node ${options.nodeId} could not join again (${asError(e).message}); next try in ${waitMs} ms`,
      );
      await sleep(waitMs);
    }
  }
}

/** A head another head took the lease from (it was paused or cut off past its lease) stops, and stands by again in the
 * same process. */
async function standByWhenDeposed(head: Head, options: HeadOptions): Promise<void> {
  const cause = await head.deposed;
  if (stopping) return;
  console.error(`troupe: this head no longer leads: ${cause}; it stands by`);
  await head.stop().catch(() => undefined);
  return standByAgain(options);
}

/** A new head in this process, standing by until it leads. One that took the lease but could not start (JetStream
 * still electing leaders after a lost server, say) gives the lease up and stands by again, later each time, rather
 * than leave the cluster without a head. */
async function standByAgain(options: HeadOptions): Promise<void> {
  for (let attempt = 0; !stopping; attempt++) {
    const next = new Head(options);
    daemon = next;
    try {
      await next.start();
      return standByWhenDeposed(next, options);
    } catch (e) {
      await next.stop().catch(() => undefined);
      const waitMs = Math.min(30_000, 1000 * 2 ** attempt);
      console.error(`troupe: the head could not start (${asError(e).message}); it stands by again in ${waitMs} ms`);
      await sleep(waitMs);
    }
  }
}

let sideBus: Bus | undefined;
try {
  if (config.role === 'head' && config.credentials)
    sideBus = await serveCredentials(config.credentials, config.options, config.bus);
  if (config.role === 'node' && config.busServer) sideBus = await followUsers(config.options, config.busServer);
  // Before start(), so that `troupe stop` finds the daemon whenever it runs: a standby head's start lasts until it
  // leads, and a node is counted alive by the head (and its `troupe start` returns) a moment before its start() does.
  // A start that fails removes the file (stop()).
  writeRunFile(run);
  await daemon.start();
  if (config.role === 'node') void rejoinWhenFenced(daemon as NodeDaemon, config.options);
  else void standByWhenDeposed(daemon as Head, config.options);
} catch (e) {
  console.error(e); // all of it (stack, cause), for whoever reads the log
  // A standby's start returned to its starter long ago: it stands by again instead (see standByAgain).
  if (config.role === 'head' && (daemon as Head).stoodBy && !stopping) {
    await daemon.stop().catch(() => undefined);
    void standByAgain(config.options);
  } else
    await stop(1, {
      // The starter watches its daemons and stops an embedded nats-server itself: stopping it here would make the
      // nats-server's exit, not ours, the first one it sees.
      stopNats: !config.parentPid || !isAlive(config.parentPid),
      // Last, after anything stopping prints: the starter's error shows the last lines of this log.
      lastWords: `troupe: the ${config.role} daemon failed to start: ${asError(e).message}`,
    });
}
