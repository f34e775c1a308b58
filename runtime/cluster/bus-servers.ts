// A bus troupe runs as a NATS cluster of core servers (`troupe start --head --bus-peers B,C`): the head's machine
// and the machines it names each run a nats-server, routed to the others. What the daemons do for it: the head
// signs the other servers' certificates (serveBusServers) and gives out the credentials' public keys and the account
// JWTs (serveBusUsers, which every node asks too, for its workers' lanes); each other server's node daemon keeps its
// server's config current with them (followBusUsers), for its next start: while it runs, the servers pass account
// updates on among themselves. Starting a server is in own-bus-server.ts.
import { PermissionDeniedError } from '../base/errors.ts';
import { sleep } from '../base/processes.ts';
import type { Bus } from '../bus/bus.ts';
import { subjects } from '../protocol/subjects.ts';
import { request } from '../protocol/check.ts';
import {
  checkBusJoinRequest,
  checkBusUsersAnswer,
  checkBusUsersRequest,
  usersDigest,
  type BusJoinAnswer,
  type BusUsersAnswer,
} from '../protocol/bus-servers.ts';
import { busUsers, serverAuth, writeServerAuth } from './identities.ts';
import { signPeerCertificate } from './tls.ts';

/** A NATS cluster of core servers, as one of them sees it (the head's machine's: its plan for the bus). */
export interface BusCluster {
  name: string;
  /** Where this server listens for routes (its bind host) and where the others do. */
  routePort: number;
  /** The other core servers' hosts. */
  peers: string[];
}

/** The head that started the bus (it holds the CA's key) answers core servers that join: a certificate for the host
 * they serve at, if it is one of the plan's. On the head daemon's side connection. Standby heads do not: they hold
 * no CA key. */
export function serveBusServers(bus: Bus, sessionDir: string, plan: BusCluster): void {
  bus.serve(
    subjects.headBusJoin,
    request(checkBusJoinRequest, (req): BusJoinAnswer => {
      if (!plan.peers.includes(req.host))
        throw new PermissionDeniedError(
          `${req.host} is not one of this cluster's bus servers (${plan.peers.join(', ')}); it joins as a node`,
        );
      return {
        clusterName: plan.name,
        routePort: plan.routePort,
        certPem: signPeerCertificate(sessionDir, req.publicKeyPem, req.host),
        auth: serverAuth(sessionDir),
      };
    }),
  );
}

/** The head's machine (it holds the identities) answers asks for the users, when they changed: the bus's other core
 * servers render the JWTs into their config, and every node lets the driver and worker credentials onto its workers'
 * lanes. On the head daemon's side connection; standby heads hold no identities. */
export function serveBusUsers(bus: Bus, sessionDir: string): void {
  bus.serve(
    subjects.headBusUsers,
    request(checkBusUsersRequest, (req): BusUsersAnswer => {
      const users = busUsers(sessionDir);
      const digest = usersDigest(users);
      return digest === req.have ? { digest } : { digest, users, auth: serverAuth(sessionDir) };
    }),
  );
}

/** On a core server's machine, in its node daemon: asks the head for the users every `everyMs`, and when they changed
 * (`troupe token create|revoke` on the head's machine) rewrites the server's auth config, so that it starts again
 * with them (never a reload: in operator mode that closes every connection; the running server has them from its
 * peers). While no head answers (its machine is gone), the config stays as it is. Ends when `bus` closes. */
export function followBusUsers(o: { bus: Bus; dir: string; everyMs?: number }): void {
  let have = '';
  void (async () => {
    while (!o.bus.isClosed) {
      try {
        const a = checkBusUsersAnswer(await o.bus.request(subjects.headBusUsers, { have }, { timeoutMs: 2000 }));
        const digest = a.users && usersDigest(a.users);
        if (a.users && a.auth && digest !== have) {
          writeServerAuth(o.dir, a.auth);
          have = digest!;
        }
      } catch {
        // no head now, or a lost answer: asked again next time
      }
      await sleep(o.everyMs ?? 2000);
    }
  })();
}
