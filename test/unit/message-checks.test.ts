// The message checks (runtime/protocol/check.ts, schemas.ts): valid messages pass as they came, every broken variant
// is refused with a ProtocolError, and refusals are counted per message type.
import test from 'ava';
import { ProtocolError } from '../../runtime/base/errors.ts';
import { event, malformedCounts, request } from '../../runtime/protocol/check.ts';
import {
  checkActorCall,
  checkActorStart,
  checkCallReply,
  checkLeaseRequest,
  checkTaskReply,
  checkTaskSpec,
  checkWorkerDied,
} from '../../runtime/protocol/schemas.ts';
import { SeenTable } from '../../runtime/protocol/seen-table.ts';
import { mutations } from '../helpers/fuzz.ts';

const job = { id: 'job1', driver: 'drv1', root: '/home/me/project' };
const spec = {
  actorId: '0123456789abcdef',
  className: 'Counter',
  cls: { url: 'file:///home/me/project/actors.js', exportName: 'Counter' },
  args: new Uint8Array(4),
  deps: {},
  demand: { CPU: 1 },
  strategy: { nodeId: 'n1', soft: undefined },
  maxRestarts: -1,
  maxTaskRetries: 0,
  maxConcurrency: 1,
  name: undefined,
  namespace: 'default',
  lifetime: 'owned' as const,
  isolation: 'process' as const,
  owner: 'abcdef0123456789',
  workingDir: '/home/me/project',
  job,
  crashOnError: undefined,
  checkpointEvery: { calls: 10 },
  maxPendingCalls: undefined,
};
const task = {
  taskId: '8f3a9c1d2e4b5a6f',
  name: 'add',
  fn: { url: 'file:///home/me/project/tasks.js', exportName: 'add' },
  args: [1, 2],
  workingDir: '/home/me/project',
  owner: 'abcdef0123456789',
  caller: 'abcdef0123456789',
};
const call = { callId: '8f3a9c1d2e4b5a6f', method: 'add', args: [1], caller: 'abcdef0123456789' };

test('valid messages pass as they came (no copy)', (t) => {
  const lease = { clientId: 'c1', job, demand: {}, actor: { spec, incarnation: 1 }, replyWithinMs: 0, term: 1 };
  t.is(checkLeaseRequest(lease), lease);
  t.is(checkActorStart({ spec, incarnation: 1 }).spec, spec);
  t.throws(() => checkActorStart({ spec }), { message: /incarnation/ }); // it names the subject its calls come on
  t.is(checkTaskSpec(task), task);
  t.is(checkActorCall(call), call);
  for (const result of [
    { inline: new Uint8Array(2) },
    { value: 3 },
    { value: undefined },
    { node: 'n1', size: 10, copies: ['n2'] },
    { proc: 'p1', size: 10, refs: [{ id: 'a', owner: 'b' }] },
    { error: new Error('x') },
  ]) {
    t.notThrows(() => checkTaskReply({ result, ms: 1 }), JSON.stringify(result));
    t.notThrows(() => checkCallReply({ result }));
  }
  t.notThrows(() => checkCallReply({ notRun: true }));
});

test('every broken variant of a lease, a task and an actor call is refused with ProtocolError', (t) => {
  const lease = { clientId: 'c1', job, demand: { CPU: 1 }, actor: { spec, incarnation: 1 } };
  const cases: Array<[(x: unknown) => unknown, Record<string, unknown>]> = [
    [checkLeaseRequest, lease],
    [checkTaskSpec, task],
    [checkActorCall, call],
  ];
  for (const [check, base] of cases) {
    let refused = 0;
    for (const m of mutations(base)) {
      try {
        check(m);
      } catch (e) {
        t.true(e instanceof ProtocolError, String(e));
        refused++;
      }
    }
    // A few variants stay valid (an extra field; a wildcard where any text will do): most must not.
    t.true(refused > mutations(base).length * 0.6, `${refused} of ${mutations(base).length}`);
  }
  const e = t.throws(() => checkLeaseRequest({ ...lease, actor: {} }), { instanceOf: ProtocolError });
  t.regex(e.message, /lease request at actor\.spec/);
  t.throws(() => checkTaskReply(null), { instanceOf: ProtocolError });
  t.throws(() => checkCallReply({ result: { node: 'n1', size: -1 } }), { instanceOf: ProtocolError });
});

test('a refused request or event is counted per message type; a good one reaches its handler', (t) => {
  const before = malformedCounts()['worker_died event'] ?? 0;
  const seen: unknown[] = [];
  const onEvent = event(checkWorkerDied, (m) => seen.push(m));
  onEvent(null, 'troupe.evt.worker_died');
  onEvent({ workerId: '*' }, 'troupe.evt.worker_died');
  const good = { workerId: 'w1', nodeId: 'n1', pid: 7, cause: 'x', leaseIds: [], actorIds: [] };
  onEvent(good, 'troupe.evt.worker_died');
  t.deepEqual(seen, [good]);
  t.is(malformedCounts()['worker_died event'], before + 2);
  const handler = request(checkActorCall, (c) => c.method);
  t.is(handler(call), 'add');
  t.throws(() => handler({ ...call, method: 5 }), { instanceOf: ProtocolError });
  t.true((malformedCounts()['actor call'] ?? 0) >= 1);
});

test('the table of processes heard from stays bounded under made-up ids, and forgets the silent', (t) => {
  const seen = new SeenTable(1000, 100);
  for (let i = 0; i < 10_000; i++) seen.heard(`made-up-${i}`, 5000);
  t.true(seen.has('made-up-0'));
  t.false(seen.has('made-up-100'), 'a full table records no new ids');
  seen.heard('a.b.*', 5000);
  t.false(seen.has('a.b.*'), 'not an id');
  seen.heard('made-up-0', 6500);
  seen.heard('newcomer', 6500); // full: the silent are forgotten first, so there is room
  t.true(seen.has('newcomer'));
  t.true(seen.has('made-up-0'));
  t.false(seen.has('made-up-1'));
});
