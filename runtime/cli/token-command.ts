// `troupe token create|list|revoke`: the cluster's credentials, on the head's machine (they live in its session
// dir). A change re-signs the cluster's account and pushes it to the servers, which close the connections of revoked
// credentials.
import { parseArgs } from 'node:util';
import { readClusterFile, clusterFilePath } from '../base/config.ts';
import { ConnectionError, UsageError } from '../base/errors.ts';
import {
  addIdentity,
  headHere,
  readIdentities,
  revokeIdentity,
  type HeadHere,
  type Identity,
} from '../cluster/identities.ts';
import { pushAccount } from '../cluster/account-update.ts';
import type { Role } from '../protocol/permissions.ts';
import { printTable } from './table.ts';

export const TOKEN_HELP = `troupe token: the cluster's credentials (run on the head's machine)

  troupe token create --role ROLE [--name N]   prints the new credential on stdout, nothing else
  troupe token list [--json]                   name, role, public key, created
  troupe token revoke NAME|PUBLIC_KEY          its connections are closed; it is refused from now on

Roles: driver (scripts, 'troupe job submit|stop'), node (joining a machine), cli (read-only: status, list, memory,
job list|status|logs), head (a standby head, 'troupe start --head --address': every right the head has). The
built-in head and worker identities cannot be revoked.`;

/** The head on this machine (the current cluster's, if several). */
function localHead(): HeadHere {
  const head = headHere(readClusterFile()?.address);
  if (!head)
    throw new UsageError(
      `no nats-server started by 'troupe start --head' runs here (${clusterFilePath()}): run this on the head's ` +
        'machine (a cluster on a nats-server of your own has no troupe credentials)',
    );
  return head;
}

/** Pushes the account a change of `id` re-signed. The change is saved either way (the server reads it when it starts
 * again): a failed push says so. */
async function pushed(id: Identity, head: HeadHere): Promise<void> {
  try {
    await pushAccount({ sessionDir: head.sessionDir, address: head.address });
  } catch (e) {
    throw new ConnectionError(
      `${id.name} is saved, but the running nats-server did not take the change (${(e as Error).message}): it will ` +
        'when it starts again',
      { cause: e },
    );
  }
}

export async function tokenCommand(argv: string[]): Promise<number> {
  const [sub, ...rest] = argv;
  if (!sub || sub === '--help' || sub === '-h') {
    console.log(TOKEN_HELP);
    return 0;
  }
  const options = {
    create: { role: { type: 'string' }, name: { type: 'string' } },
    list: { json: { type: 'boolean' } },
    revoke: {},
  } as const;
  if (!(sub in options)) throw new UsageError(`troupe token: unknown sub-command '${sub}' (create, list, revoke)`);
  let parsed: { values: Record<string, string | boolean | undefined>; positionals: string[] };
  try {
    parsed = parseArgs({
      args: rest,
      options: options[sub as keyof typeof options],
      strict: true,
      allowPositionals: sub === 'revoke',
    }) as typeof parsed;
  } catch (e) {
    throw new UsageError(`troupe token ${sub}: ${(e as Error).message.replace(/\. To specify a positional.*$/s, '')}`);
  }
  const { values, positionals } = parsed;
  const head = localHead();
  const dir = head.sessionDir;
  if (sub === 'create') {
    if (typeof values.role !== 'string') throw new UsageError('troupe token create needs --role driver|node|cli|head');
    const id = addIdentity(dir, values.role as Role, values.name as string | undefined);
    await pushed(id, head);
    process.stdout.write(`${id.credential}\n`);
    return 0;
  }
  if (sub === 'list') {
    const rows = readIdentities(dir).map(({ credential: _, scope: __, ...rest }) => rest);
    if (values.json) console.log(JSON.stringify(rows, null, 2));
    else
      printTable(
        ['NAME', 'ROLE', 'PUBLIC KEY', 'CREATED'],
        rows.map((i: Omit<Identity, 'credential'>) => [
          i.name,
          i.role + (i.builtin ? ' (built-in)' : ''),
          i.publicKey,
          i.created,
        ]),
      );
    return 0;
  }
  if (positionals.length !== 1) throw new UsageError('troupe token revoke takes one name or public key');
  const id = revokeIdentity(dir, positionals[0]);
  await pushed(id, head);
  console.log(`revoked ${id.name} (${id.role}, ${id.publicKey})`);
  return 0;
}
