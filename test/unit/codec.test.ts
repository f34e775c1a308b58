import test, { type ExecutionContext } from 'ava';
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import net from 'node:net';
import { pack, unpack } from 'msgpackr';
import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-backend-cpu';
import { encode, decode, encodeParts } from '../../runtime/base/codec.ts';
import { TaskError, InfeasibleError, SerializationError } from '../../runtime/base/errors.ts';
import * as errors from '../../runtime/base/errors.ts';
import { ObjectRef } from '../../object-store/object-ref.ts';
import { tensorRoundTrips } from '../helpers/tensor-round-trips.ts';

const repoRoot = fileURLToPath(new URL('../..', import.meta.url));
const roundTrip = <T>(value: T): T => decode<T>(encode(value));

type AnyTypedArray = Exclude<NodeJS.TypedArray, Buffer>;

/** The raw bytes of a view: comparing these is exact for NaN payloads and -0 too. */
const bytesOf = (a: ArrayBufferView): Uint8Array => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);

function assertSameTypedArray(t: ExecutionContext, actual: unknown, expected: AnyTypedArray): void {
  t.is((actual as object)?.constructor, expected.constructor, `expected a ${expected.constructor.name}`);
  t.deepEqual(bytesOf(actual as AnyTypedArray), bytesOf(expected));
}

// ---- typed arrays ---------------------------------------------------------------------------

test('plain msgpackr pack() corrupts a Float32Array', (t) => {
  const f = new Float32Array([1.5, -2.25, 3]);
  const plain = unpack(pack(f)) as Uint8Array;
  t.false(plain instanceof Float32Array);
  t.notDeepEqual(Array.from(plain), Array.from(f));
  // Not even a reinterpretation of the bytes gets the floats back.
  t.notDeepEqual(new Uint8Array(plain), bytesOf(f));
  assertSameTypedArray(t, roundTrip(f), f);
});

const typedArrays: AnyTypedArray[] = [
  new Float32Array([1.5, -2.25, 3.4028234663852886e38, 1e-45]),
  new Float64Array([Math.PI, -Number.MAX_VALUE, Number.MIN_VALUE]),
  new Int8Array([-128, 0, 127]),
  new Int16Array([-32768, 1, 32767]),
  new Int32Array([-2147483648, 7, 2147483647]),
  new Uint8Array([0, 128, 255]),
  new Uint16Array([0, 65535]),
  new Uint32Array([0, 4294967295]),
  new Uint8ClampedArray([0, 300, -5]),
  new BigInt64Array([-(2n ** 63n), 0n, 2n ** 63n - 1n]),
  new BigUint64Array([0n, 2n ** 64n - 1n]),
];
for (const a of typedArrays) {
  test(`${a.constructor.name} round-trips exactly`, (t) => {
    assertSameTypedArray(t, roundTrip(a), a);
  });
}

test('NaN, -0 and ±Infinity survive in float arrays', (t) => {
  for (const a of [
    new Float32Array([NaN, -0, Infinity, -Infinity]),
    new Float64Array([NaN, -0, Infinity, -Infinity]),
  ]) {
    const back = roundTrip(a);
    assertSameTypedArray(t, back, a);
    t.true(Number.isNaN(back[0]));
    t.true(Object.is(back[1], -0));
    t.is(back[2], Infinity);
    t.is(back[3], -Infinity);
  }
});

test('a Float32Array view into a bigger buffer sends only the view', (t) => {
  // A Float32Array cannot start at an odd byte offset (RangeError), so use an offset that is not
  // 8-aligned, and then decode from an odd byte offset, which leaves the float data unaligned.
  const buffer = new ArrayBuffer(4096);
  new Float32Array(buffer).fill(9);
  const view = new Float32Array(buffer, 12, 3);
  view.set([0.1, -7.5, 1e30]);
  const bytes = encode(view);
  t.true(bytes.byteLength < 64, 'the rest of the backing buffer is not sent');
  assertSameTypedArray(t, decode(bytes), view);

  const shifted = new Uint8Array(bytes.byteLength + 2);
  shifted.set(bytes, 1);
  assertSameTypedArray(t, decode(shifted.subarray(1, 1 + bytes.byteLength)), view);
  assertSameTypedArray(t, roundTrip(new Float32Array([0, 1, 2, 3, 4]).subarray(1, 4)), new Float32Array([1, 2, 3]));
});

test('typed arrays nested in objects, arrays and Sets', (t) => {
  const value = {
    weights: [new Float32Array([1, 2]), { bias: new Float64Array([-0.5]) }],
    labels: new Set([new Int32Array([3, 4])]),
    name: 'layer',
  };
  const back = roundTrip(value);
  t.is(Object.getPrototypeOf(back), Object.prototype, 'a plain object stays a plain object');
  assertSameTypedArray(t, back.weights[0], value.weights[0] as Float32Array);
  assertSameTypedArray(t, (back.weights[1] as { bias: Float64Array }).bias, new Float64Array([-0.5]));
  t.true(back.labels instanceof Set);
  assertSameTypedArray(t, [...back.labels][0], new Int32Array([3, 4]));
  t.is(back.name, 'layer');
});

test('a Map holding typed arrays round-trips as a Map, keeping its key types', (t) => {
  const map = new Map<unknown, unknown>([
    ['w', new Float32Array([1, 2])],
    [7, new Int32Array([3])],
  ]);
  const back = roundTrip(map);
  t.true(back instanceof Map);
  assertSameTypedArray(t, back.get('w'), new Float32Array([1, 2]));
  assertSameTypedArray(t, back.get(7), new Int32Array([3]));
  t.is(back.get('7'), undefined);
});

test(
  'the objects every call carries are named by a number, not spelled ' + 'out in each message; other objects still are',
  (t) => {
    const reply = [0, [[0, 0, { result: { inline: new Uint8Array([7]) } }]]];
    const bytes = Buffer.from(encode(reply));
    t.false(bytes.includes('result') || bytes.includes('inline'), 'shared envelope keys are not in the message');
    t.deepEqual(roundTrip(reply), reply);
    t.true(Buffer.from(encode({ resultOf: 1 })).includes('resultOf'));
    // The same keys in another order, and more shapes in one message than msgpackr keeps ids for, still round-trip.
    const mixed = {
      inline: 1,
      result: 2,
      many: Array.from({ length: 100 }, (_, i) => ({ [`k${i}`]: i, callId: 'c' })),
    };
    t.deepEqual(roundTrip(mixed), mixed);
  },
);

// ---- errors ---------------------------------------------------------------------------------

test('every error class troupe defines crosses the wire as itself', (t) => {
  const isErrorClass = (v: unknown) => typeof v === 'function' && v.prototype instanceof Error;
  const classes = (Object.values(errors) as unknown[]).filter(isErrorClass) as Array<new (m: string) => Error>;
  t.true(classes.length >= 16);
  for (const C of classes) {
    const made = (C as unknown) === TaskError ? TaskError.from(new Error('x'), 'task f') : new C('x');
    const back = decode(encode(made)) as Error;
    t.is(back.constructor, C, C.name);
  }
});

test('a RangeError keeps its class, message and stack', (t) => {
  const e = new RangeError('index 9 out of range');
  const back = roundTrip(e);
  t.true(back instanceof RangeError);
  t.is(back.message, e.message);
  t.is(back.stack, e.stack);
});

test('a cause chain and own fields such as code survive', (t) => {
  const root = Object.assign(new Error('open failed'), { code: 'ENOENT', errno: -2, path: '/data/x' });
  const e = new Error('load failed', { cause: new TypeError('bad config', { cause: root }) });
  const back = roundTrip(e);
  const mid = back.cause as TypeError;
  const deep = mid.cause as typeof root;
  t.true(mid instanceof TypeError);
  t.is(mid.message, 'bad config');
  t.is(deep.message, 'open failed');
  t.is(deep.code, 'ENOENT');
  t.is(deep.errno, -2);
  t.is(deep.path, '/data/x');
});

test('troupe error classes come back as the same class', (t) => {
  const te = new TaskError('boom', {
    remoteName: 'RangeError',
    remoteStack: 'RangeError: boom\n    at f (w.js:1:1)',
    where: 'task f',
  });
  const back = roundTrip(te);
  t.true(back instanceof TaskError);
  t.is(back.message, 'boom');
  t.is(back.remoteName, 'RangeError');
  t.is(back.remoteStack, te.remoteStack);
  t.is(back.where, 'task f');
  t.is(back.stack, te.stack);

  t.true(roundTrip(new InfeasibleError('needs 64 GPUs')) instanceof InfeasibleError);
  const se = roundTrip(new SerializationError('nope'));
  t.true(se instanceof SerializationError);
  t.is(se.message, 'nope');
});

test('TaskError.from keeps the original name and stack, also after a round trip', (t) => {
  const original = new TypeError('x');
  const te = TaskError.from(original, 'task f');
  t.truthy(original.stack);
  t.is(te.remoteName, 'TypeError');
  t.is(te.remoteStack, original.stack!);
  t.is(te.where, 'task f');
  const back = roundTrip(te);
  t.true(back instanceof TaskError);
  t.is(back.remoteName, 'TypeError');
  t.is(back.remoteStack, original.stack!);
  t.true(back.cause instanceof TypeError);
});

test('a user-defined error class keeps its name and message', (t) => {
  class MyErr extends Error {
    name = 'MyErr';
  }
  const back = roundTrip(new MyErr('custom failure'));
  t.true(back instanceof Error);
  t.is(back.name, 'MyErr');
  t.is(back.message, 'custom failure');
});

// ---- refusals -------------------------------------------------------------------------------

test('unsendable values are refused at encode time with SerializationError', (t) => {
  const socket = new net.Socket();
  t.teardown(() => socket.destroy());
  const normal = { ok: [1, 2, 3], f: new Float32Array([1]) };
  const normalBytes = encode(normal);

  const cases: Array<[string, unknown, RegExp]> = [
    ['function', function train() {}, /function 'train'/],
    ['nested function', { opts: { onDone: function onDone() {} } }, /function 'onDone'/],
    ['Promise', Promise.resolve(1), /Promise/],
    ['net.Socket', socket, /EventEmitter.*Socket/],
    ['WeakMap', new WeakMap(), /WeakMap/],
    ['Symbol', Symbol('tag'), /a Symbol/],
    ['nested Symbol', { kind: Symbol.iterator }, /a Symbol/],
  ];
  for (const [label, value, message] of cases) {
    t.throws(() => encode(value), { instanceOf: SerializationError, message }, label);
    // The codec is not left half-way through a value.
    t.deepEqual(encode(normal), normalBytes, `after refusing ${label}`);
  }
  t.deepEqual(decode(encode(normal)), normal);
});

class Point {
  constructor(
    readonly x: number,
    readonly y: number,
  ) {}
  norm(): number {
    return Math.hypot(this.x, this.y);
  }
}

test("an instance of the user's class is refused, naming the class and what to do", (t) => {
  for (const value of [new Point(3, 4), { at: [new Point(1, 2)] }, new (class extends Map {})()]) {
    const e = t.throws(() => encode(value), { instanceOf: SerializationError });
    t.regex(e.message, /instance of (Point|\w*)/);
    t.regex(e.message, /toJSON\(\)/);
  }
  t.regex(t.throws(() => encode(new Point(3, 4)))?.message ?? '', /instance of Point .*without its methods/);
});

test('a class with toJSON() is sent as what toJSON() returns; built-in classes keep their types', (t) => {
  class Money {
    constructor(readonly cents: number) {}
    toJSON() {
      return { cents: this.cents, currency: 'EUR' };
    }
  }
  t.deepEqual(roundTrip({ price: new Money(250) }), { price: { cents: 250, currency: 'EUR' } });
  const when = new Date(0);
  const back = roundTrip({
    when,
    tags: new Set(['a']),
    re: /x+/g,
    bytes: Buffer.from([1, 2]),
    none: Object.create(null),
  });
  t.true(back.when instanceof Date && back.when.getTime() === 0);
  t.deepEqual([...back.tags], ['a']);
  t.true(back.re instanceof RegExp && back.re.source === 'x+');
  t.deepEqual([...back.bytes], [1, 2]);
  t.deepEqual({ ...back.none }, {});
});

// ---- object refs ----------------------------------------------------------------------------

test('an ObjectRef round-trips as an ObjectRef with the same id and owner', (t) => {
  const ref = new ObjectRef('obj-123', 'driver-abc');
  const [back] = roundTrip([ref]);
  t.true(back instanceof ObjectRef);
  t.is(back.id, 'obj-123');
  t.is(back.owner, 'driver-abc');
});

// ---- tensors --------------------------------------------------------------------------------

tensorRoundTrips(test, 'cpu');

test('a process that has not loaded tfjs can decode a tensor', async (t) => {
  const x = tf.tensor2d([
    [1.5, -2],
    [0.25, 3],
  ]);
  const child = `
    import { decode } from './runtime/base/codec.ts';
    const loadedBefore = '_tfengine' in globalThis;
    const t = decode(Buffer.from(process.env.TENSOR_B64, 'base64'));
    console.log(JSON.stringify({ loadedBefore, dtype: t.dtype, shape: t.shape, values: t.arraySync() }));
  `;
  const { stdout } = await promisify(execFile)(
    process.execPath,
    ['--import', 'tsx', '--input-type=module', '-e', child],
    {
      cwd: repoRoot,
      env: { ...process.env, TENSOR_B64: Buffer.from(encode(x)).toString('base64') },
    },
  );
  const lastLine = stdout.trim().split('\n').at(-1)!;
  t.deepEqual(JSON.parse(lastLine), {
    loadedBefore: false,
    dtype: 'float32',
    shape: [2, 2],
    values: [
      [1.5, -2],
      [0.25, 3],
    ],
  });
});

test(
  'raw frames (large typed arrays and tensors in the store) decode from any offset, and encoding copies a typed ' +
    'array',
  (t) => {
    const a = new Float32Array([1.5, 2.5, -3.25, 1e-3]);
    const parts = encodeParts(a);
    t.is(parts.length, 2);
    a[0] = 99; // changed after encoding: the parts hold the value as it was
    for (const pad of [0, 1, 3, 5]) {
      const joined = Buffer.concat([Buffer.alloc(pad), ...parts]).subarray(pad); // a Buffer view at an odd offset
      t.deepEqual(decode(joined), new Float32Array([1.5, 2.5, -3.25, 1e-3]));
    }
  },
);
