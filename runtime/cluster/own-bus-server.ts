// This machine's core server of the bus (see bus-servers.ts), started by `troupe start --address LIST` when LIST,
// the cluster's servers, names this machine: the rest join as plain clients of every server, since one more server
// per machine would add routes to every message, and JetStream's quorum gains nothing past three.
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { clusterCa, hostsOf, isLoopback, ownAddresses, serverUrls, writePrivateFile } from '../base/config.ts';
import { NoRespondersError, RequestTimeoutError, UsageError } from '../base/errors.ts';
import { sleep } from '../base/processes.ts';
import { Bus } from '../bus/bus.ts';
import { subjects } from '../protocol/subjects.ts';
import { checkBusJoinAnswer, type BusJoinAnswer } from '../protocol/bus-servers.ts';
import { AUTH_CONF, writeServerAuth } from './identities.ts';
import { keptPeerTls, newPeerKey, peerServerTls, type ClusterTls } from './tls.ts';
import { startNatsServer, type NatsServerHandle } from './nats-server.ts';

/** This machine's entry in the server list `address` (not loopback: a list names machines), if it has one. */
export function ownServer(address: string): { host: string; port: number } | undefined {
  const mine = ownAddresses();
  const hosts = hostsOf(address);
  const i = hosts.findIndex((h) => mine.has(h) && !isLoopback(h));
  if (i < 0) return undefined;
  return { host: hosts[i]!, port: Number(/:(\d+)$/.exec(serverUrls(address)[i]!)![1]) };
}

/** Starts this machine's core server of the bus at `address` (this machine is `self` in its list), in `dir`: asks the
 * head for its certificate (the key is made here and stays here) and the accounts' JWTs, then routes to the other
 * servers. The head may still be starting: it is asked again for up to a minute. A dir that joined before starts
 * without it. */
export async function startBusServer(o: {
  address: string;
  token: string;
  self: { host: string; port: number };
  dir: string;
  detached: boolean;
  holdProcess?: boolean;
}): Promise<NatsServerHandle> {
  const ca = clusterCa(o.address);
  if (!ca) throw new UsageError(`a bus server routes over TLS: this machine needs the cluster's CA (--ca-sha256)`);
  // Started again (a reboot, a crash), the server needs nothing from the head, whose machine may be the one that is
  // down: it keeps its certificate while the CA's and good, and its node daemon brings its users up to date.
  const joined = join(o.dir, 'bus-join.json');
  let kept: { tls: ClusterTls; clusterName: string; routePort: number } | undefined;
  try {
    const j = JSON.parse(readFileSync(joined, 'utf8')) as { clusterName: string; routePort: number };
    const tls = keptPeerTls(o.dir, ca, o.self.host);
    if (tls && existsSync(join(o.dir, AUTH_CONF))) kept = { ...j, tls };
  } catch {
    // never joined from this dir
  }
  if (!kept) {
    const publicKeyPem = newPeerKey(o.dir);
    const bus = await Bus.connect({ address: o.address, token: o.token, name: 'troupe-start' });
    let answer: BusJoinAnswer;
    try {
      answer = checkBusJoinAnswer(await askUntilServed(bus, { host: o.self.host, publicKeyPem }));
    } finally {
      await bus.close();
    }
    kept = { ...answer, tls: peerServerTls(o.dir, answer.certPem, ca, o.self.host) };
    writeServerAuth(o.dir, answer.auth);
    writePrivateFile(joined, `${JSON.stringify({ clusterName: answer.clusterName, routePort: answer.routePort })}\n`);
  }
  return startNatsServer({
    dir: o.dir,
    host: o.self.host,
    port: o.self.port,
    tls: kept.tls,
    cluster: {
      name: kept.clusterName,
      routePort: kept.routePort,
      peers: hostsOf(o.address).filter((h) => h !== o.self.host),
    },
    detached: o.detached,
    holdProcess: o.holdProcess,
  });
}

async function askUntilServed(bus: Bus, body: unknown): Promise<unknown> {
  const until = Date.now() + 60_000;
  for (;;) {
    try {
      return await bus.request(subjects.headBusJoin, body, { timeoutMs: 5000 });
    } catch (e) {
      const unanswered = e instanceof NoRespondersError || e instanceof RequestTimeoutError;
      if (!unanswered || Date.now() > until) throw e;
      await sleep(500);
    }
  }
}
