// Objects between processes: where an object's bytes are (owners hand these out, readers follow them), and the
// values that travel as themselves inside a call's message.

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
