// The references (raw nats.js, Moleculer) run on the cluster's own nats-server, but they are no troupe role: the bench
// gives them one NATS user allowed every subject, as a plain bus would be. A reference's figure is then the bus with
// no permission lists, and troupe's ratio to it includes what troupe's per-role permissions cost on the same server.
// Run as a script (`… reference-user.ts ADDRESS`, on the head's machine) it adds the user to the detached cluster
// there and prints its seed.
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createUser } from '@nats-io/nkeys';
import { AUTH_CONF, headHere, reloadNatsServer } from '../../runtime/cluster/identities.ts';
import { Bus } from '../../runtime/bus/bus.ts';
import { permissionsFor, type Role } from '../../runtime/protocol/permissions.ts';

/** Adds a reference user to the cluster whose nats-server runs from `sessionDir` with `natsPid`; resolves with its
 * seed (what the references pass as their token) once the server takes it. `listsOf`: instead of every subject, the
 * lists of that troupe role with the references' subjects (`bench.>`) last, for what such lists cost the server. */
export async function addReferenceUser(
  address: string,
  sessionDir: string,
  natsPid: number,
  listsOf?: Role,
): Promise<string> {
  const user = createUser();
  const path = join(sessionDir, AUTH_CONF);
  const lists = listsOf && permissionsFor(listsOf, user.getPublicKey());
  const allow = (xs: string[] | undefined) => `{ allow: ${JSON.stringify(xs ? [...xs, 'bench.>'] : ['>'])} }`;
  const permissions = `{ publish: ${allow(lists?.publish)}, subscribe: ${allow(lists?.subscribe)} }`;
  const entry = `    { nkey: ${user.getPublicKey()}, permissions: ${permissions} }`;
  const conf = readFileSync(path, 'utf8');
  if (!/\n {2}\]\n\}\n$/.test(conf)) throw new Error(`${path} does not end as identities.ts writes it`);
  writeFileSync(path, conf.replace(/\n {2}\]\n\}\n$/, `\n${entry}\n  ]\n}\n`), { mode: 0o600 });
  reloadNatsServer(natsPid);
  const seed = new TextDecoder().decode(user.getSeed());
  for (let tries = 0; ; tries++) {
    try {
      await (await Bus.connect({ address, token: seed, name: 'bench-reference-check' })).close();
      return seed;
    } catch (e) {
      if (tries >= 50) throw e;
      await new Promise((r) => setTimeout(r, 100)); // the server reloads its config in the background
    }
  }
}

/** nats.js options that authenticate as `token`: a seed signs the server's nonce, anything else is a plain token. */
export function referenceAuth<A>(
  token: string,
  nkeyAuthenticator: (seed: Uint8Array) => A,
): { authenticator: A } | { token: string } {
  return /^SU[A-Z2-7]{56}$/.test(token)
    ? { authenticator: nkeyAuthenticator(new TextEncoder().encode(token)) }
    : { token };
}

if (process.argv[1] === new URL(import.meta.url).pathname) {
  const address = process.argv[2];
  const head = headHere(address);
  if (!head) throw new Error(`no detached troupe head for ${address} on this machine`);
  console.log(await addReferenceUser(address, head.sessionDir, head.natsPid));
}
