// Where an object's bytes are. Owners hand these out; readers follow them.

export type ObjectLocation =
  /** Small values travel inside messages. */
  | { inline: Uint8Array }
  /** Sealed file in that node's store. */
  | { node: string; size: number }
  /** Held in that process's memory (a driver with no node daemon on its machine). */
  | { proc: string; size: number }
  /** The task that makes the object failed: reading it throws this. */
  | { error: Error };
