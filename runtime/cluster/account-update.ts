// Tells the running servers of a cluster that its account changed (a credential created or revoked): the system
// account's user sends the account's new JWT to its server, which checks the operator's signature, keeps it in its
// resolver and passes it on to the bus's other servers. A revoked signing key's connections close on each of them.
import { Bus } from '../bus/bus.ts';
import { ConnectionError } from '../base/errors.ts';
import { accountJwt, accountOf, serverAuth, systemCredential } from './identities.ts';

/** Pushes the account JWT of the cluster whose keys are in `sessionDir` to its server at `address`; resolves once that
 * server took it. */
export async function pushAccount(o: { sessionDir: string; address: string }): Promise<void> {
  const auth = serverAuth(o.sessionDir);
  const account = accountOf(auth);
  const jwt = accountJwt(auth);
  const bus = await Bus.connect({ address: o.address, token: systemCredential(o.sessionDir), name: 'troupe-account' });
  try {
    const m = await bus.nc.request(`$SYS.REQ.ACCOUNT.${account}.CLAIMS.UPDATE`, jwt, { timeout: 5000 });
    const answer = JSON.parse(new TextDecoder().decode(m.data)) as {
      data?: { code?: number };
      error?: { description?: string };
    };
    if (answer.data?.code !== 200)
      throw new ConnectionError(
        `the cluster's server did not take the account update: ${answer.error?.description ?? m.string()}`,
      );
  } finally {
    await bus.close();
  }
}
