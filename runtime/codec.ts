// One msgpackr configuration for everything on the bus and in the object store.
// moreTypes keeps typed arrays typed (plain `pack()` turns a Float32Array into corrupt bytes);
// records (self-describing in each message) let a Map come back a Map and an object an object.
import { EventEmitter } from 'node:events';
import { Packr, addExtension } from 'msgpackr';
import { SerializationError, toWireError, fromWireError, type WireError } from './errors.ts';
import { registerTensorExtension } from './tensor-codec.ts';

/** Extension type codes owned by troupe (msgpackr's own use letters and 0xff). */
export const ExtType = { error: 1, tensor: 2, objectRef: 3, actorHandle: 4 } as const;

const packr = new Packr({
  moreTypes: true,
  useRecords: true,
  mapsAsObjects: false,
  // Silently writing nil for a function would lose an argument; say so at the call site instead.
  // (msgpackr passes the function, though its typings say otherwise.)
  writeFunction: ((fn: unknown) => {
    const name = typeof fn === 'function' && fn.name ? ` '${fn.name}'` : '';
    throw new SerializationError(`cannot send the function${name} to another process: pass data, or make it a remote function and pass its result`);
  }) as () => never,
});

/** Serialize a value. Throws SerializationError for what cannot cross a process boundary. */
export function encode(value: unknown): Uint8Array {
  return packr.pack(value);
}

export function decode<T = unknown>(bytes: Uint8Array): T {
  return packr.unpack(bytes) as T;
}

export interface CodecExtension<T, W> {
  Class: abstract new (...args: any[]) => T;
  type: number;
  write(value: T): W;
  read(wire: W): T;
}

/** Teach the codec a class. Registration is per process and global to msgpackr. */
export function registerExtension<T, W>(ext: CodecExtension<T, W>): void {
  addExtension({ Class: ext.Class as unknown as Function, type: ext.type, write: ext.write as (v: unknown) => unknown, read: ext.read as (w: unknown) => unknown });
}

registerTensorExtension();
registerExtension<Error, WireError>({ Class: Error, type: ExtType.error, write: toWireError, read: fromWireError });

// Things that pack "successfully" into nonsense. Refuse them loudly.
const unsendable: Array<[abstract new (...a: any[]) => object, string]> = [
  [Promise, 'a Promise: await it first, or pass an ObjectRef'],
  [EventEmitter, 'an EventEmitter (socket, stream, process, server)'],
  [WeakMap, 'a WeakMap'],
  [WeakSet, 'a WeakSet'],
];
let nextRefuseType = 100;
for (const [Class, what] of unsendable) {
  addExtension({
    Class: Class as unknown as Function,
    type: nextRefuseType++,
    write(v: object) {
      throw new SerializationError(`cannot send ${what}${v.constructor?.name ? ` (${v.constructor.name})` : ''} to another process`);
    },
    read: () => undefined,
  });
}
