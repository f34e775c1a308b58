// Ids that name subjects: an actor id becomes `troupe.proc.<worker>.call.<id>.<incarnation>`, so one from the bus is
// checked before any subscription or lookup uses it (a `*` or `>` would subscribe to every actor's calls).
import { ProtocolError } from '../base/errors.ts';

/** What newId() (runtime/core/core.ts) makes: a 16-hex-digit prefix and a hex counter (at most 14 digits). */
export const ACTOR_ID = /^[0-9a-f]{17,30}$/;

/** Whether `id` is an actor id as troupe makes them: no wildcard, dot, space or other character a subject splits on. */
export function isActorId(id: unknown): id is string {
  return typeof id === 'string' && ACTOR_ID.test(id);
}

/** The actor id of a message from the bus, checked; `what` names the message in the error. */
export function checkActorId(id: unknown, what: string): string {
  if (!isActorId(id))
    throw new ProtocolError(
      `${what} needs an actor id of 17 to 30 lowercase hex digits, as troupe makes them; got ` +
        `${typeof id === 'string' ? JSON.stringify(id.slice(0, 80)) : typeof id}`,
    );
  return id;
}
