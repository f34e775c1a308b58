// The cost of checking a message on the hot path: a hand-written guard against valibot (`v.is`, the cheapest way it
// checks) on one task and one actor call, next to decoding the message, per message. Run:
//   node --import tsx --conditions=troupe-source bench/message-checks.ts
// 1_1_actor_calls_async runs at about 74k calls/s (bench/RESULTS.md), 13.5 µs a call: what a check adds is a share of
// that. The figures decide which types get hand-written guards in runtime/protocol/schemas.ts.
import * as v from 'valibot';
import { encode, decode } from '../runtime/base/codec.ts';
import { checkActorCall, checkTaskSpec } from '../runtime/protocol/schemas.ts';

const str = (max: number) => v.pipe(v.string(), v.maxLength(max));
const args = v.union([v.instance(Uint8Array), v.pipe(v.array(v.unknown()), v.maxLength(10_000))]);
const taskSchema = v.object({
  taskId: v.pipe(v.string(), v.regex(/^[^\s.*>]{1,200}$/)),
  name: str(1000),
  fn: v.object({ url: str(4096), exportName: str(200) }),
  args,
  deps: v.optional(v.record(v.string(), v.unknown())),
  workingDir: str(4096),
  owner: str(200),
  caller: str(200),
});
const callSchema = v.object({
  callId: str(200),
  method: str(200),
  args,
  deps: v.optional(v.record(v.string(), v.unknown())),
  caller: str(200),
});

const task = {
  taskId: '8f3a9c1d2e4b5a6f',
  name: 'add',
  fn: { url: 'file:///home/me/project/tasks.js', exportName: 'add' },
  args: [1, 2],
  workingDir: '/home/me/project',
  owner: '0a1b2c3d4e5f6a7b',
  caller: '0a1b2c3d4e5f6a7b',
};
const call = { callId: '8f3a9c1d2e4b5a6f', method: 'add', args: [1], caller: '0a1b2c3d4e5f6a7b' };

function perMessageNs(what: string, fn: () => unknown, n = 1_000_000): number {
  for (let i = 0; i < n / 10; i++) fn(); // warm up
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < n; i++) fn();
  const ns = Number(process.hrtime.bigint() - t0) / n;
  console.log(`${what.padEnd(34)} ${ns.toFixed(0).padStart(6)} ns`);
  return ns;
}

const taskBytes = encode({ batch: [task] });
const callBytes = encode({ batch: [call] });
console.log('per message (mean of 1e6 runs; lower is better)');
perMessageNs('task: decode', () => decode(taskBytes));
perMessageNs('task: hand-written guard', () => checkTaskSpec(task));
perMessageNs('task: valibot v.is', () => v.is(taskSchema, task));
perMessageNs('actor call: decode', () => decode(callBytes));
const hand = perMessageNs('actor call: hand-written guard', () => checkActorCall(call));
const vali = perMessageNs('actor call: valibot v.is', () => v.is(callSchema, call));
console.log(
  `at 13.5 µs an actor call: hand-written ${((hand / 13_500) * 100).toFixed(1)} %, ` +
    `valibot ${((vali / 13_500) * 100).toFixed(1)} %`,
);
