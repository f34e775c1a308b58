// Objects between processes: where an object's bytes are (owners hand these out, readers follow them), the values
// that travel as themselves inside a call's message, and the shape of every object-store message (checked before
// anything acts on it: a message from the bus is untrusted).
import * as v from 'valibot';
import { ProtocolError } from '../base/errors.ts';

/** A ref as the wire knows it: the object's id and the process that owns it (an ObjectRef is one). */
export interface RefId {
  readonly id: string;
  readonly owner: string;
}

/** A value small and simple enough to travel as itself, not encoded on its own first (see isPlainValue). */
export type PlainValue = string | number | boolean | null | undefined;

export type ObjectLocation =
  /** Small values travel inside messages. */
  (
    | { inline: Uint8Array }
    /** A plain value (a task's number, an actor method's short string) travels as itself. */
    | { value: PlainValue }
    /** Sealed file in that node's store; `copies`: other nodes that fetched it and keep it in theirs. */
    | { node: string; size: number; copies?: string[] }
    /** Held in that process's memory (a driver with no node daemon on its machine). */
    | { proc: string; size: number }
    /** The task that makes the object failed: reading it throws this. */
    | { error: Error }
  ) & {
    /** Refs serialized inside the value: the object holds them, so they live as long as it does. */
    refs?: RefId[];
  };

/** The owner's answer to a locate (subjects.obj.procLocate): where the object is, or that it is not made yet. The
 * owner answers within callProbeMs either way, and the asker asks again: a locate lost on the bus costs one more
 * ask, never a get that waits for ever. */
export type LocateAnswer = ObjectLocation | { pending: true };

/** Every node whose store has the object. */
export function holders(loc: ObjectLocation): string[] {
  return 'node' in loc ? [loc.node, ...(loc.copies ?? [])] : [];
}

/** A call's arguments: encoded, or (when isPlain) the values themselves, sent inside the call's own message. */
export type CallArgs = Uint8Array | unknown[];

/** A number, boolean, short string, null or undefined: it holds no refs and is never large, so encoding it on its own
 * before the message that carries it would be work for nothing (on both sides). */
export function isPlainValue(v: unknown): v is PlainValue {
  const t = typeof v;
  return (
    v === null ||
    t === 'number' ||
    t === 'boolean' ||
    t === 'undefined' ||
    (t === 'string' && (v as string).length <= 256)
  );
}

/** A few plain values (see isPlainValue). */
export function isPlain(args: readonly unknown[]): boolean {
  if (args.length > 16) return false;
  for (let i = 0; i < args.length; i++) if (!isPlainValue(args[i])) return false;
  return true;
}

/** An owned object as `troupe list objects` shows it. */
export interface ObjectRow {
  id: string;
  owner: string;
  createdBy: string;
  state: 'PENDING' | 'READY' | 'FAILED';
  size: number;
  /** 'inline', the nodes holding it, or the process holding it in memory. */
  where: string;
  /** Live refs in the owner process. */
  refs: number;
  /** Other processes holding refs. */
  borrowers: number;
}

// --- object-store messages --------------------------------------------------------------------------------------

/** The most bytes one chunk request asks for (transfer.ts's chunkSize never goes past it). */
export const MAX_CHUNK_BYTES = 8 * 1024 * 1024;

/** Object ids name files in a node's store: never a path, never a subject wildcard. */
const objectId = v.pipe(v.string(), v.regex(/^[A-Za-z0-9_-]{1,64}$/, 'an object id is 1-64 of A-Z a-z 0-9 _ -'));
/** Process and node ids go into subjects: no dots, no wildcards. */
const processId = v.pipe(
  v.string(),
  v.regex(/^[A-Za-z0-9_-]{1,128}$/, 'a process or node id is 1-128 of A-Z a-z 0-9 _ -'),
);
const byteCount = v.pipe(v.number(), v.safeInteger(), v.minValue(0));

/** Every message of the object store (subjects.obj and nodeObjects), by what it asks. */
export const objectMessages = {
  /** A writer finished object `id`'s tmp file in the node's store (`nodeSeal`). */
  seal: v.object({ id: objectId, size: byteCount, owner: processId }),
  /** Bring a spilled object back into shared memory (`nodeRestore`); also `nodeTouch` and `procLocate`. */
  one: v.object({ id: objectId }),
  /** Copy another node's object here (`nodeFetch`). `size` must be what its holders recorded. */
  fetch: v.object({
    id: objectId,
    size: byteCount,
    owner: processId,
    from: v.pipe(v.array(processId), v.minLength(1), v.maxLength(64)),
  }),
  /** A range of an object's bytes (`nodeRead`, `procRead`); length 0 asks only for the holder's record (its size). */
  read: v.object({ id: objectId, offset: byteCount, length: v.pipe(byteCount, v.maxValue(MAX_CHUNK_BYTES)) }),
  /** What a holder answers to `read`: the bytes, their CRC-32, and the object's size as the holder recorded it. */
  chunk: v.object({
    data: v.instance(Uint8Array),
    crc: v.pipe(v.number(), v.integer()),
    size: v.optional(byteCount),
  }),
  /** Objects to delete (`nodeFree`). */
  free: v.object({ ids: v.pipe(v.array(objectId), v.maxLength(100_000)) }),
  /** A process starts or stops holding refs to one of the owner's objects (`procBorrow`). */
  borrow: v.object({
    id: objectId,
    proc: processId,
    node: v.optional(processId),
    add: v.boolean(),
    seq: v.optional(v.pipe(v.number(), v.safeInteger(), v.minValue(1))),
  }),
  /** A node now keeps a copy of one of the owner's objects (`procCopied`). */
  copied: v.object({ id: objectId, node: processId }),
};

export type ObjectMessage<K extends keyof typeof objectMessages> = v.InferOutput<(typeof objectMessages)[K]>;

/** The message as `kind` has it, or undefined (for events, which have nobody to tell). */
export function parseObjectMessage<K extends keyof typeof objectMessages>(
  kind: K,
  body: unknown,
): ObjectMessage<K> | undefined {
  const r = v.safeParse(objectMessages[kind], body);
  return r.success ? (r.output as ObjectMessage<K>) : undefined;
}

/** The message as `kind` has it, or a ProtocolError saying what is wrong with it (the handler answers with that). */
export function checkObjectMessage<K extends keyof typeof objectMessages>(kind: K, body: unknown): ObjectMessage<K> {
  const r = v.safeParse(objectMessages[kind], body);
  if (r.success) return r.output as ObjectMessage<K>;
  const issue = r.issues[0];
  const at = v.getDotPath(issue);
  throw new ProtocolError(`malformed object-store message (${kind})${at ? ` at ${at}` : ''}: ${issue.message}`);
}
