// A connection that landed on another server because its own machine's was down moves back once that one is up
// (runtime/bus/home-server.ts), on real nats-servers: two lone servers with the same users stand for this machine's
// server of a bus and another machine's.
import test from 'ava';
import { connect } from '@nats-io/transport-node';
import { builtinIdentity, createIdentities, serverAuth, writeServerAuth } from '../../runtime/cluster/identities.ts';
import { startNatsServer, startNatsServerAgain } from '../../runtime/cluster/nats-server.ts';
import { HomeServer } from '../../runtime/bus/home-server.ts';
import { parseCredential, signUser, userAuthenticator } from '../../runtime/bus/credential.ts';
import { inboxOf } from '../../runtime/bus/bus.ts';
import { eventually, tempDir } from '../helpers/cluster.ts';

test('a connection on another server moves back to its own once it takes it, keeping its subscriptions', async (t) => {
  t.timeout(40_000);
  const [homeDir, otherDir] = [tempDir(t), tempDir(t)];
  const user = signUser(parseCredential(builtinIdentity(createIdentities(otherDir), 'node').credential), 'home-test');
  writeServerAuth(homeDir, serverAuth(otherDir)); // every server of a bus knows the same accounts
  const other = await startNatsServer({ dir: otherDir, host: '127.0.0.1', detached: false });
  t.teardown(() => other.stop());
  // This machine's server, on a port it keeps when started again, is down when the connection is made.
  const first = await startNatsServer({ dir: homeDir, host: '127.0.0.1', detached: false });
  const homeUrl = `nats://${first.localAddress}`;
  await first.stop();

  const home = new HomeServer([homeUrl]);
  const credential = { authenticator: userAuthenticator(user) };
  const nc = await connect({
    servers: [homeUrl, `nats://${other.localAddress}`],
    noRandomize: true,
    ...credential,
    reconnectTimeWait: 100,
    reconnectToServer: home.pick,
  });
  t.teardown(async () => {
    home.stop();
    await nc.close();
  });
  t.is(nc.getServer(), other.localAddress, 'its own server is down: it talks through the other');
  const moves: string[] = [];
  home.keep(
    nc,
    (host) => connect({ servers: host, ...credential, reconnect: false, timeout: 1000 }).then((p) => p.close()),
    (host) => moves.push(host),
  );
  const heard: string[] = [];
  const subject = `${inboxOf(user.user.publicKey)}.home`; // where this user may listen and anyone may send
  nc.subscribe(subject, {
    callback: (_e, m) => {
      heard.push(m.string());
    },
  });

  await new Promise((r) => setTimeout(r, 6000)); // one check, with its own server still down
  t.is(nc.getServer(), other.localAddress, 'it stays where it is while its own server cannot take it');
  t.deepEqual(moves, []);

  const again = await startNatsServerAgain(homeDir);
  t.teardown(() => again.stop());
  await eventually('back on its own server', async () => nc.getServer() === first.localAddress, 15_000);
  t.deepEqual(moves, [first.localAddress]);
  nc.publish(subject, 'after the move');
  await eventually('its subscription answers there', async () => heard.includes('after the move'), 5000);
});
