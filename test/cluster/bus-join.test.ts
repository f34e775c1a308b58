// What the head answers a machine that joins its bus as a core server (runtime/cluster/bus-servers.ts), on a real
// nats-server with the cluster's identities: only the node role may ask; a malformed request or an address the bus
// does not list is refused, saying why; a listed one gets a certificate of the CA for that address and the operator's
// and accounts' JWTs (no seed); the users are sent again only when they changed.
import test from 'ava';
import { readFileSync } from 'node:fs';
import { Bus } from '../../runtime/bus/bus.ts';
import { PermissionDeniedError, ProtocolError } from '../../runtime/base/errors.ts';
import { subjects } from '../../runtime/protocol/subjects.ts';
import { checkBusJoinAnswer, checkBusUsersAnswer, usersDigest } from '../../runtime/protocol/bus-servers.ts';
import { addIdentity, builtinIdentity, createIdentities, serverAuth } from '../../runtime/cluster/identities.ts';
import { pushAccount } from '../../runtime/cluster/account-update.ts';
import { startNatsServer, type NatsServerHandle } from '../../runtime/cluster/nats-server.ts';
import { createClusterTls, newPeerKey, peerServerTls } from '../../runtime/cluster/tls.ts';
import { serveBusServers, serveBusUsers } from '../../runtime/cluster/bus-servers.ts';
import { tempDir } from '../helpers/cluster.ts';

let nats: NatsServerHandle | undefined;
const buses: Bus[] = [];
test.after.always(async () => {
  for (const b of buses) await b.close().catch(() => undefined);
  await nats?.stop();
});

test('a core server joins through the node role only, for a listed address, and follows the users', async (t) => {
  const dir = tempDir(t, 'troupe-bus-join-');
  const ids = createIdentities(dir);
  const ca = createClusterTls(dir, ['127.0.0.1']); // the CA that signs; the server itself stays plain on loopback
  nats = await startNatsServer({ dir, host: '127.0.0.1', detached: false, holdProcess: false });
  const as = async (name: 'head' | 'node' | 'driver') => {
    const bus = await Bus.connect({ address: nats!.localAddress, token: builtinIdentity(ids, name).credential, name });
    buses.push(bus);
    return bus;
  };
  const head = await as('head');
  serveBusServers(head, dir, { name: 'troupe-0123456789abcdef', routePort: 6222, peers: ['10.9.0.2'] });
  serveBusUsers(head, dir);
  const node = await as('node');
  const peerDir = tempDir(t, 'troupe-bus-peer-');
  const publicKeyPem = newPeerKey(peerDir);

  await t.throwsAsync(node.request(subjects.headBusJoin, { host: 'no such host!', publicKeyPem }), {
    instanceOf: ProtocolError,
  });
  const unlisted = await t.throwsAsync(node.request(subjects.headBusJoin, { host: '10.9.0.9', publicKeyPem }), {
    instanceOf: PermissionDeniedError,
  });
  t.regex(unlisted!.message, /10\.9\.0\.9 is not one of this cluster's bus servers \(10\.9\.0\.2\)/);
  const driver = await as('driver');
  await t.throwsAsync(driver.request(subjects.headBusJoin, { host: '10.9.0.2', publicKeyPem }, { timeoutMs: 5000 }), {
    instanceOf: PermissionDeniedError,
  });

  const answer = checkBusJoinAnswer(await node.request(subjects.headBusJoin, { host: '10.9.0.2', publicKeyPem }));
  t.is(answer.clusterName, 'troupe-0123456789abcdef');
  const served = peerServerTls(peerDir, answer.certPem, ca.caPem, '10.9.0.2');
  t.true(readFileSync(served.chainFile, 'utf8').startsWith(answer.certPem.trim()));
  t.deepEqual(answer.auth, serverAuth(dir), "the operator's and accounts' JWTs");
  for (const i of ids) t.false(JSON.stringify(answer).includes(i.credential.split('.')[0]), 'no seed travels');

  const users = checkBusUsersAnswer(await node.request(subjects.headBusUsers, { have: '' }));
  t.deepEqual(
    users.users,
    ids.map((i) => ({ publicKey: i.publicKey, role: i.role })),
  );
  const digest = usersDigest(users.users!);
  t.deepEqual(checkBusUsersAnswer(await node.request(subjects.headBusUsers, { have: digest })), { digest });
  const made = addIdentity(dir, 'cli', 'later');
  await pushAccount({ sessionDir: dir, address: nats.localAddress });
  const changed = checkBusUsersAnswer(await node.request(subjects.headBusUsers, { have: digest }));
  t.not(changed.digest, digest);
  t.truthy(changed.users?.some((u) => u.publicKey === made.publicKey && u.role === 'cli'));
  t.deepEqual(changed.auth, serverAuth(dir), 'and the JWTs that list it');
});
