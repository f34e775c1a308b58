// What every joiner checks first: its troupe and wire-protocol versions against the head's, before it sends or trusts
// any other message. A node, driver or CLI of another version is refused with VersionMismatchError; a head that does
// not answer fails the joiner with HeadUnavailableError.
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { defaults } from '../base/config.ts';
import { HeadUnavailableError, NoRespondersError, RequestTimeoutError, VersionMismatchError } from '../base/errors.ts';
import { sleep } from '../base/processes.ts';

/** Bump whenever a message, subject or stored record changes meaning: processes of two protocols must not talk. */
export const PROTOCOL_VERSION = 14;

export interface Versions {
  /** `version` of the package.json of the troupe install the process runs from. */
  troupe: string;
  protocol: number;
}

/** What a joiner sends on `subjects.headHello`, and what the head answers (its own versions). Plain fields only, so
 * that every version decodes it. */
export interface HelloMsg extends Versions {
  /** 'node', 'driver', 'cli', 'start': for the head's log. */
  role?: string;
}

let own: Versions | undefined;

/** This process's versions (read once). */
export function ownVersions(): Versions {
  if (!own) {
    // The package's own package.json: from source (runtime/protocol/) and from dist (dist/runtime/protocol/) alike.
    const path = fileURLToPath(import.meta.resolve('troupe/package.json'));
    const version = (JSON.parse(readFileSync(path, 'utf8')) as { version?: unknown }).version;
    own = { troupe: typeof version === 'string' ? version : 'unknown', protocol: PROTOCOL_VERSION };
  }
  return own;
}

export function sameVersions(a: Partial<Versions> | undefined, b: Versions): boolean {
  return a?.troupe === b.troupe && a?.protocol === b.protocol;
}

/** "troupe 0.1.0 (protocol 1)"; fields from the bus are cut short, as they may be anything. */
export function describeVersions(v: Partial<Versions> | undefined): string {
  const cut = (x: unknown) => (x === undefined || x === null ? 'unknown' : String(x).slice(0, 40));
  return `troupe ${cut(v?.troupe)} (protocol ${cut(v?.protocol)})`;
}

/** Asks the head for its versions (`ask` sends one HelloMsg on subjects.headHello) and throws VersionMismatchError
 * unless they are ours. `self` names this side in the message ('this node', 'this driver'). A head not answering (it
 * may be starting, or a standby taking over) is asked again until `waitMs` (defaults.headWaitMs), then it is
 * HeadUnavailableError. */
export async function checkHeadVersions(
  ask: (hello: HelloMsg) => Promise<unknown>,
  o: { self: string; role: string; address: string; waitMs?: number },
): Promise<Versions> {
  const mine = ownVersions();
  const waitMs = o.waitMs ?? defaults.headWaitMs;
  const until = Date.now() + waitMs;
  let answer: unknown;
  for (;;) {
    try {
      answer = await ask({ ...mine, role: o.role });
      break;
    } catch (e) {
      if (!(e instanceof NoRespondersError || e instanceof RequestTimeoutError)) throw e;
      if (Date.now() >= until)
        throw new HeadUnavailableError(
          `${o.self}: no head at ${o.address} answered its version check` +
            `${waitMs ? ` within ${waitMs / 1000} s` : ''}: ` +
            'none is running there, or the cluster is between heads for longer than that (see `troupe status`; ' +
            'TROUPE_HEAD_WAIT_MS sets the wait)',
          { cause: e },
        );
      await sleep(100);
    }
  }
  const head = answer as Partial<Versions> | undefined;
  const theirs = { troupe: String(head?.troupe ?? 'unknown'), protocol: Number(head?.protocol ?? Number.NaN) };
  if (!sameVersions(theirs, mine))
    throw new VersionMismatchError(
      `${o.self} runs ${describeVersions(mine)}; the head at ${o.address} runs ${describeVersions(head)}: ` +
        'install the same troupe on every machine',
      { self: mine, head: theirs },
    );
  return theirs;
}
