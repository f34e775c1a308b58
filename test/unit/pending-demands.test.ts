// What status shows of the work waiting for resources (runtime/head/pending-demands.ts): one row per kind of demand,
// however many wait, so that the answer stays within one message.
import test from 'ava';
import { PENDING_ROWS, pendingDemands, type WaitingRequest } from '../../runtime/head/pending-demands.ts';
import { encode } from '../../runtime/base/codec.ts';

test('requests of one kind are one row: how many, from how many clients, the longest wait', (t) => {
  const now = 100_000;
  const waiting: WaitingRequest[] = [
    ...Array.from({ length: 50_000 }, (_, i) => ({ demand: { CPU: 1 }, clientId: `c${i % 3}`, since: now - i })),
    { demand: { GPU: 1, CPU: 1 }, strategy: 'SPREAD', clientId: 'c9', since: now - 7000 },
    { demand: { CPU: 1, GPU: 1 }, strategy: 'SPREAD', clientId: 'c9', since: now - 3000 },
    { demand: { CPU: 1 }, strategy: { nodeId: 'n1' }, clientId: 'c1', since: now - 10 },
  ];
  const { rows, left } = pendingDemands(waiting, now);
  t.deepEqual(rows, [
    { demand: { CPU: 1 }, strategy: 'DEFAULT', count: 50_000, clients: 3, waitingMs: 49_999 },
    { demand: { GPU: 1, CPU: 1 }, strategy: 'SPREAD', count: 2, clients: 1, waitingMs: 7000 },
    { demand: { CPU: 1 }, strategy: { nodeId: 'n1' }, count: 1, clients: 1, waitingMs: 10 },
  ]);
  t.is(left, 0);
});

test('past PENDING_ROWS kinds, those with the fewest waiting are counted, not listed; the answer stays small', (t) => {
  const waiting = Array.from({ length: 20_000 }, (_, i) => ({
    demand: { CPU: 1, [`r${i % 5000}`]: 1 },
    clientId: 'c',
    since: 0,
  }));
  waiting.push(...Array.from({ length: 10 }, () => ({ demand: { CPU: 1, r7: 1 }, clientId: 'c', since: 0 })));
  const { rows, left } = pendingDemands(waiting, 1000);
  t.is(rows.length, PENDING_ROWS);
  t.is(left, 5000 - PENDING_ROWS);
  t.like(rows[0], { demand: { CPU: 1, r7: 1 }, count: 14 });
  t.true(encode(rows).length < 64 * 1024);
});
