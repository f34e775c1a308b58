// A driver's heartbeat, from a thread with its own connection: a driver busy computing for seconds (a long
// synchronous loop, a big tensor op) still beats, so the head does not take it for dead and end its actors.
// Plain JavaScript: threads do not inherit every way tsx can be loaded.
import { workerData } from 'node:worker_threads';
import { checkServerIdentity } from 'node:tls';
import { sign } from 'node:crypto';
import { connect } from '@nats-io/transport-node';

const { servers, inOrder, pingInterval, token, user, name, subject, everyMs, tlsCa, tlsHosts } = workerData;
// As the Bus's tlsOptions(): the certificate must name one of the servers.
const named = (cert) => {
  const errors = tlsHosts.map((host) => checkServerIdentity(host, cert));
  return errors.includes(undefined) ? undefined : errors[0];
};
const tls = tlsCa ? { tls: { ca: tlsCa, checkServerIdentity: (_, cert) => named(cert) } } : {};
// A user signed with the credential (bus/credential.ts) signs the server's nonce, as the Bus's does; a plain token is
// for a user's own nats-server.
const auth = user
  ? {
      authenticator: (nonce) => ({
        jwt: user.jwt,
        sig: sign(null, Buffer.from(nonce ?? ''), user.privateKey).toString('base64'),
      }),
    }
  : { token };
const nc = await connect({
  servers,
  noRandomize: inOrder,
  ...auth,
  name,
  maxReconnectAttempts: -1,
  reconnectTimeWait: 500,
  pingInterval, // as the Bus's: beats must not stall on a server that is cut off
  ...tls,
});
const EMPTY_MAP = Uint8Array.of(0x80); // `{}` in MessagePack, as every troupe message is encoded
const beat = () => {
  if (!nc.isClosed()) nc.publish(subject, EMPTY_MAP);
};
beat();
setInterval(beat, everyMs);
