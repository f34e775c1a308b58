// The references (raw nats.js, Moleculer) run on the cluster's own nats-server, but they are no troupe role: the bench
// gives them one credential allowed every subject, as a plain bus would be. A reference's figure is then the bus with
// no permission lists, and troupe's ratio to it includes what troupe's per-role permissions cost on the same server.
// Run as a script (`… reference-user.ts ADDRESS`, on the head's machine) it adds the credential to the detached
// cluster there and prints it.
import { addIdentity, headHere } from '../../runtime/cluster/identities.ts';
import { pushAccount } from '../../runtime/cluster/account-update.ts';
import { isCredential, parseCredential, signUser, userAuthenticator } from '../../runtime/bus/credential.ts';
import { permissionsFor, type Role, TEMPLATE_USER } from '../../runtime/protocol/permissions.ts';

/** Adds a reference credential to the cluster whose keys are in `sessionDir` and whose server is at `address`;
 * resolves with it (what the references pass as their token) once the server took it. `listsOf`: instead of every
 * subject, the lists of that troupe role with the references' subjects (`bench.>`) last, for what such lists cost the
 * server. */
export async function addReferenceUser(address: string, sessionDir: string, listsOf?: Role): Promise<string> {
  const lists = listsOf && permissionsFor(listsOf, TEMPLATE_USER);
  const scope = lists
    ? { publish: [...lists.publish, 'bench.>'], subscribe: [...lists.subscribe, 'bench.>'] }
    : { publish: ['>'], subscribe: ['>'] };
  const id = addIdentity(sessionDir, 'driver', `bench-reference-${listsOf ?? 'all'}-${process.pid}`, scope);
  await pushAccount({ sessionDir, address });
  return id.credential;
}

/** nats.js options (of @nats-io/* or of nats v2, which Moleculer uses) that authenticate as `token`: a credential signs
 * a user of the connection's own (runtime/bus/credential.ts), anything else is a plain token. */
export function referenceAuth(
  token: string,
): { authenticator: ReturnType<typeof userAuthenticator> } | { token: string } {
  return isCredential(token)
    ? { authenticator: userAuthenticator(signUser(parseCredential(token), 'bench-reference')) }
    : { token };
}

if (process.argv[1] === new URL(import.meta.url).pathname) {
  const address = process.argv[2];
  const head = headHere(address);
  if (!head) throw new Error(`no detached troupe head for ${address} on this machine`);
  console.log(await addReferenceUser(head.address, head.sessionDir));
}
