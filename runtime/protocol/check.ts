// Checks messages from the bus before anyone acts on them: one check per message type (protocol/schemas.ts), one
// way to refuse. A request that fails its check is answered with a ProtocolError; an event is dropped. Either way it
// is counted, per message type, and logged at most once every 10 s per type.
import * as v from 'valibot';
import { ProtocolError } from '../base/errors.ts';

/** A message type's check: the message, typed, or a ProtocolError saying what is wrong with it. */
export type Check<T> = ((x: unknown) => T) & { readonly what: string };

/** A check made from a valibot schema. The message is tested with `v.is` (no copy) and passed on as it came; only a
 * failure pays for `safeParse`, to say where it is wrong. */
export function schemaCheck<S extends v.GenericSchema>(what: string, schema: S): Check<v.InferOutput<S>> {
  return named(what, (x) => {
    if (v.is(schema, x)) return x;
    const issue = deepest(v.safeParse(schema, x).issues?.[0]);
    const where = issue ? v.getDotPath(issue) : null;
    throw new ProtocolError(`malformed ${what}${where ? ` at ${where}` : ''}: ${issue?.message ?? 'invalid'}`);
  });
}

/** A union's issue says only that no option matched: the issue of an option that got furthest names the field. */
function deepest(issue: v.GenericIssue | undefined): v.GenericIssue | undefined {
  let best = issue;
  for (const sub of issue?.issues ?? []) {
    const d = deepest(sub);
    if (d && (d.path?.length ?? 0) > (best?.path?.length ?? 0)) best = d;
  }
  return best;
}

/** A check written by hand (for the hot path, where valibot's cost shows): `test` says why x is bad, or nothing. */
export function guardCheck<T>(what: string, test: (x: unknown) => string | undefined): Check<T> {
  return named(what, (x) => {
    const why = test(x);
    if (why !== undefined) throw new ProtocolError(`malformed ${what}: ${why}`);
    return x as T;
  });
}

/** A check written as a function that throws (protocol's older checkX functions): its own error goes to the asker. */
export function thrownCheck<T>(what: string, check: (x: unknown) => T): Check<T> {
  return named(what, check);
}

function named<T>(what: string, f: (x: unknown) => T): Check<T> {
  return Object.assign(f, { what });
}

const dropped = new Map<string, number>();
const lastLogged = new Map<string, number>();

/** Messages refused or dropped as malformed in this process, by message type. */
export function malformedCounts(): Record<string, number> {
  return Object.fromEntries(dropped);
}

/** Counts a malformed message of this type and logs it, at most once every 10 s per type (with the count). */
export function countMalformed(what: string, e: unknown): void {
  const n = (dropped.get(what) ?? 0) + 1;
  dropped.set(what, n);
  const now = Date.now();
  if (now - (lastLogged.get(what) ?? 0) < 10_000) return;
  lastLogged.set(what, now);
  const why = e instanceof Error ? e.message : String(e);
  console.warn(`troupe: refused a malformed ${what} (${n} so far): ${why.slice(0, 300)}`);
}

/** Runs `check` on x, counting a failure; the ProtocolError goes on to the caller (a request handler: the asker
 * gets it as its answer; a requester: its request fails with it). */
export function checked<T>(check: Check<T>, x: unknown): T {
  try {
    return check(x);
  } catch (e) {
    countMalformed(check.what, e);
    throw e;
  }
}

/** A request handler that checks its message first: a malformed one is answered with the ProtocolError. */
export function request<T, M, R>(check: Check<T>, handler: (body: T, msg: M) => R): (body: unknown, msg?: M) => R {
  return (body, msg) => handler(checked(check, body), msg as M);
}

/** An event handler that checks its message first: a malformed one is dropped (counted, logged now and then). */
export function event<T>(check: Check<T>, handler: (body: T, subject: string) => void) {
  return (body: unknown, subject: string): void => {
    let m: T;
    try {
      m = check(body);
    } catch (e) {
      countMalformed(check.what, e);
      return;
    }
    handler(m, subject);
  };
}
