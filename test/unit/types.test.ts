// The typed API, checked by `tsc --noEmit` (part of npm test): every @ts-expect-error line must be a type error,
// or the typecheck fails. Nothing here talks to a cluster; the bodies never run.
import test from 'ava';
import { put, type ActorHandle, type ObjectRef } from '../../runtime/index.ts';
import { Counter, Forwarder } from '../fixtures/actors.ts';
import { add, length } from '../fixtures/tasks.ts';

function typeChecks(): void {
  const counter = Counter.remote(1);
  const ok1: ObjectRef<number> = counter.add(2);
  const ok2: ObjectRef<number> = counter.add(put(2)); // a ref of the argument type is fine
  const ok3: ObjectRef<number> = counter.slowAdd(1, 10); // async methods: the ref holds the awaited value
  const handle: ActorHandle<Counter> = counter;
  void [ok1, ok2, ok3, handle];
  // @ts-expect-error: wrong argument type
  counter.add('two');
  // @ts-expect-error: a ref of the wrong type
  counter.add(put('two'));
  // @ts-expect-error: too many arguments
  counter.add(1, 2);
  // @ts-expect-error: no such method
  counter.nope();
  // @ts-expect-error: private fields are not methods of the handle
  counter.n;
  // @ts-expect-error: the result is a ref, not a number
  const wrong: number = counter.add(1);
  // @ts-expect-error: constructor arguments are typed too
  Counter.remote('ten');
  // @ts-expect-error: unknown option
  Counter.options({ numGPUs: 1 });
  // @ts-expect-error: handles are typed by class
  Forwarder.remote().forward(counter, 'x');
  const sum: ObjectRef<number> = add.remote(1, add.remote(2, 3));
  // @ts-expect-error: task arguments are typed
  add.remote(1, 'x');
  // @ts-expect-error: a Float32Array task does not take numbers
  length.remote([1, 2]);
  void [wrong, sum];
}

test('the typed API compiles as declared (see the typecheck)', (t) => {
  t.is(typeof typeChecks, 'function');
});
