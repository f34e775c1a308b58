// One msgpackr configuration for everything on the bus and in the object store.
// moreTypes keeps typed arrays typed (plain `pack()` turns a Float32Array into corrupt bytes);
// records (self-describing in each message, but for a fixed few every process knows) let a Map come back a Map and
// an object an object.
import { EventEmitter } from 'node:events';
import { Packr, addExtension } from 'msgpackr';
import { SerializationError, toWireError, fromWireError, type WireError } from './errors.ts';
import { registerTensorExtension, rawTensor, makeTensor } from './tensor-codec.ts';

/** Extension type codes owned by troupe (msgpackr's own use letters and 0xff). */
export const ExtType = { error: 1, tensor: 2, objectRef: 3, actorHandle: 4, classData: 5 } as const;

/** The keys, in order, of the objects every call carries: the batch, an actor call, a task, their answers. Each
 * message then names them by a number instead of defining them again (msgpackr's shared structures). Every process
 * has this same list, so it is never learned or saved; other objects are defined in the message that has them, as
 * before. Only ever append: existing numbers are in stored objects. */
const ENVELOPES = [
  ['batch'],
  ['callId', 'method', 'args', 'caller'],
  ['callId', 'method', 'args', 'caller', 'deps'],
  ['taskId', 'name', 'fn', 'args', 'workingDir', 'owner', 'caller'],
  ['taskId', 'name', 'fn', 'args', 'workingDir', 'owner', 'caller', 'deps'],
  ['url', 'exportName'],
  ['result'],
  ['result', 'ms'],
  ['inline'],
  ['notRun'],
  ['value'],
  // An actor call with its caller's sequence number (ActorCaller.call() adds it last, after any deps).
  ['callId', 'method', 'args', 'caller', 'seq'],
  ['callId', 'method', 'args', 'caller', 'deps', 'seq'],
  // A task with its caller's sequence number (TaskSubmitter.send() adds it last).
  ['taskId', 'name', 'fn', 'args', 'workingDir', 'owner', 'caller', 'seq'],
  ['taskId', 'name', 'fn', 'args', 'workingDir', 'owner', 'caller', 'deps', 'seq'],
];

const packr = new Packr({
  moreTypes: true,
  useRecords: true,
  structures: ENVELOPES.map((keys) => [...keys]),
  maxSharedStructures: ENVELOPES.length, // so that no other object becomes one
  mapsAsObjects: false,
  // Silently writing nil for a function would lose an argument; say so at the call site instead.
  // (msgpackr passes the function, though its typings say otherwise.)
  writeFunction: ((fn: unknown) => {
    const name = typeof fn === 'function' && fn.name ? ` '${fn.name}'` : '';
    throw new SerializationError(
      `cannot send the function${name} to another process: pass data, or make it a remote function and pass its result`,
    );
  }) as () => never,
});

/** Serialize a value. Throws SerializationError for what cannot cross a process boundary. */
export function encode(value: unknown): Uint8Array {
  try {
    return packr.pack(value);
  } catch (e) {
    if (e instanceof SerializationError) throw e;
    // msgpackr's own refusals (a Symbol: "Unknown type: symbol") are plain Errors: give them the type users catch.
    const what = /symbol/i.test((e as Error).message) ? 'a Symbol' : 'this value';
    throw new SerializationError(`cannot send ${what} to another process (${(e as Error).message})`, { cause: e });
  }
}

export function decode<T = unknown>(bytes: Uint8Array): T {
  if (bytes[0] === RAW) return decodeRaw(bytes) as T;
  return packr.unpack(bytes) as T;
}

// Large typed arrays and tensors skip msgpack in the object store: a small header, then their bytes as they are in
// memory. Writing them is one copy (into the file), reading them is one copy (out of it) and a view, no decoding.
// 0xc1 is the one byte msgpack never uses, so a raw frame cannot be mistaken for a packed value.
const RAW = 0xc1;
const TYPED = new Map<string, new (b: ArrayBufferLike, offset: number, length: number) => ArrayBufferView>(
  [
    Int8Array,
    Uint8Array,
    Uint8ClampedArray,
    Int16Array,
    Uint16Array,
    Int32Array,
    Uint32Array,
    Float32Array,
    Float64Array,
    BigInt64Array,
    BigUint64Array,
  ].map((C) => [C.name, C as unknown as new (b: ArrayBufferLike, offset: number, length: number) => ArrayBufferView]),
);
interface RawHeader {
  type: string;
  length: number;
  tensor?: { dtype: string; shape: number[] };
}

/** The value as byte parts to write one after the other: [frame header, raw data] for a typed array (copied) or a
 * float32/int32/bool tensor (not copied), else one msgpack buffer. */
export function encodeParts(value: unknown): Uint8Array[] {
  const t = rawTensor(value);
  const data = t
    ? t.data
    : ArrayBuffer.isView(value) &&
        TYPED.has(value.constructor.name) &&
        value.constructor === TYPED.get(value.constructor.name)
      ? value
      : undefined;
  if (!data) return [encode(value)];
  const header: RawHeader = {
    type: data.constructor.name,
    length: (data as unknown as { length: number }).length,
    tensor: t && { dtype: t.dtype, shape: t.shape },
  };
  const head = packr.pack(header);
  const start = 8 + head.length;
  const frame = new Uint8Array(start + ((8 - (start % 8)) % 8)); // data starts 8-aligned, so it can be viewed in place
  frame[0] = RAW;
  new DataView(frame.buffer).setUint32(4, head.length, true);
  frame.set(head, 8);
  const view = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  // A typed array may change after put() returns, before it is written: store it as it is now (as Ray's put copies).
  // A tensor's data never changes.
  return [frame, t ? view : view.slice()];
}

/** Bytes of encoded parts, all together. */
export function byteLength(parts: Uint8Array[]): number {
  let n = 0;
  for (const p of parts) n += p.length;
  return n;
}

function decodeRaw(bytes: Uint8Array): unknown {
  const headLength = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength).getUint32(4, true);
  const h = packr.unpack(bytes.subarray(8, 8 + headLength)) as RawHeader;
  const start = 8 + headLength + ((8 - ((8 + headLength) % 8)) % 8);
  const C = TYPED.get(h.type);
  if (!C) throw new SerializationError(`stored object has an unknown array type ${h.type}`);
  const perElement = (C as unknown as { BYTES_PER_ELEMENT: number }).BYTES_PER_ELEMENT;
  if (bytes.length < start + h.length * perElement) throw new SerializationError(`stored ${h.type} is truncated`);
  let offset = bytes.byteOffset + start;
  let buffer = bytes.buffer;
  if (offset % perElement !== 0) {
    // copy (a Buffer's slice would be a view, still misaligned)
    buffer = new Uint8Array(bytes.subarray(start, start + h.length * perElement)).buffer;
    offset = 0;
  }
  const data = new C(buffer, offset, h.length);
  return h.tensor ? makeTensor(data, h.tensor.shape, h.tensor.dtype) : data;
}

export interface CodecExtension<T, W> {
  Class: abstract new (...args: any[]) => T;
  type: number;
  write(value: T): W;
  read(wire: W): T;
}

/** Teach the codec a class. Registration is per process and global to msgpackr. */
export function registerExtension<T, W>(ext: CodecExtension<T, W>): void {
  addExtension({
    Class: ext.Class as unknown as Function,
    type: ext.type,
    write: ext.write as (v: unknown) => unknown,
    read: ext.read as (w: unknown) => unknown,
  });
}

// Instances of the user's own classes. Left to msgpackr they would arrive as plain objects without their methods, in
// silence. Registered first: msgpackr tries the classes registered later before it (the tensor, ObjectRef and
// ActorHandle codecs) and its built-ins (Date, Set, RegExp, typed arrays) after it, so this sees only the rest.
const BUILT_IN_PROTOTYPES = new Set<object>([
  Object.prototype,
  Array.prototype,
  Map.prototype,
  Set.prototype,
  Date.prototype,
  RegExp.prototype,
  ArrayBuffer.prototype,
  SharedArrayBuffer.prototype,
]);
class ClassInstance {
  static [Symbol.hasInstance](v: unknown): boolean {
    if (typeof v !== 'object' || v === null) return false;
    const proto = Object.getPrototypeOf(v);
    return proto !== null && !BUILT_IN_PROTOTYPES.has(proto) && !ArrayBuffer.isView(v) && !(v instanceof Error);
  }
}
registerExtension<object, unknown>({
  Class: ClassInstance,
  type: ExtType.classData,
  write(v) {
    // toJSON is the documented way to send one: its result arrives, as data.
    const toJSON = (v as { toJSON?: unknown }).toJSON;
    if (typeof toJSON === 'function') return toJSON.call(v);
    const name = v.constructor?.name || 'an anonymous class';
    throw new SerializationError(
      `cannot send an instance of ${name} to another process: it would arrive without its methods. Send its data ` +
        `(a plain object, e.g. { ...value }) and rebuild the ${name} on the other side, give ${name} a toJSON() ` +
        'that returns the data to send, or make it an actor and pass its handle',
    );
  },
  read: (data) => data as object,
});
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
      throw new SerializationError(
        `cannot send ${what}${v.constructor?.name ? ` (${v.constructor.name})` : ''} to another process`,
      );
    },
    read: () => undefined,
  });
}
