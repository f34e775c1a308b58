// Where an object's bytes are. Owners hand these out; readers follow them.
import type { ObjectRef } from '../../object-store/object-ref.ts';

/** A value small and simple enough to travel as itself, not encoded on its own first (see isPlainValue). */
export type PlainValue = string | number | boolean | null | undefined;

export type ObjectLocation = (
  /** Small values travel inside messages. */
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
  refs?: ObjectRef<unknown>[];
};

/** Every node whose store has the object. */
export function holders(loc: ObjectLocation): string[] {
  return 'node' in loc ? [loc.node, ...(loc.copies ?? [])] : [];
}
