// Finds the nats-server binary. Plain JS: scripts/ensure-deps.mjs runs it before node_modules exist.
import { accessSync, constants } from 'node:fs';
import { delimiter, join } from 'node:path';

export const NATS_PACKAGE = 'nats-server';

/** @returns {string | undefined} absolute path of nats-server: $TROUPE_NATS_SERVER, else PATH, else Debian's
 * /usr/sbin. */
export function findNatsServer() {
  const explicit = process.env.TROUPE_NATS_SERVER;
  if (explicit) return isExecutable(explicit) ? explicit : undefined;
  const dirs = [
    ...(process.env.PATH ?? '').split(delimiter),
    '/usr/sbin',
    '/usr/local/sbin',
    '/usr/local/bin',
    '/usr/bin',
  ];
  for (const d of dirs) {
    if (!d) continue;
    const p = join(d, 'nats-server');
    if (isExecutable(p)) return p;
  }
  return undefined;
}

export function missingNatsMessage() {
  const explicit = process.env.TROUPE_NATS_SERVER;
  return explicit
    ? `TROUPE_NATS_SERVER=${explicit} is not an executable file`
    : `nats-server not found: install Debian's '${NATS_PACKAGE}' package (apt-get install ${NATS_PACKAGE}) or set ` +
        `TROUPE_NATS_SERVER to a nats-server binary`;
}

/** @param {string} p */
function isExecutable(p) {
  try {
    accessSync(p, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}
