// What a worker keeps of the answers it sent over NATS, for callers that lost them (runtime/bus/kept-answers.ts).
import test from 'ava';
import { KeptAnswers } from '../../runtime/bus/kept-answers.ts';

const bytes = (n: number, v = 1) => new Uint8Array(n).fill(v);

test('answers are found by the reply subject of their batch, every message of it, in order', (t) => {
  const kept = new KeptAnswers({ ttlMs: 60_000, maxBytes: 1 << 20 });
  kept.keep('_INBOX.U1.a.7', bytes(10, 1));
  kept.keep('_INBOX.U1.a.8', bytes(10, 2));
  kept.keep('_INBOX.U1.a.7', bytes(10, 3));
  const probe = '_INBOX.U1.a.99'; // the probe's own reply subject: the same inbox
  t.deepEqual(
    kept.find('_INBOX.U1.a.7', probe).map((d) => d[0]),
    [1, 3],
  );
  t.deepEqual(kept.find('_INBOX.U1.a.9', probe), []);
});

test("a probe from another inbox gets nothing: not another caller's answers, not a flood sent elsewhere", (t) => {
  const kept = new KeptAnswers({ ttlMs: 60_000, maxBytes: 1 << 20 });
  kept.keep('_INBOX.U1.a.7', bytes(10));
  t.deepEqual(kept.find('_INBOX.U1.a.7', '_INBOX.U1.b.1'), []);
  t.deepEqual(kept.find('_INBOX.U1.a.7', '_INBOX.U2.a.1'), []);
  t.deepEqual(kept.find('_INBOX.U1.a.7', 'x'), []);
  kept.keep('troupe.node.n1.fenced', bytes(10)); // a request can name any reply subject: it is never sent again
  t.deepEqual(kept.find('troupe.node.n1.fenced', 'troupe.node.n1.x'), []);
  t.is(kept.find('_INBOX.U1.a.7', '_INBOX.U1.a.1').length, 1);
});

test('the oldest go first once the bytes are spent; one larger than them all is not kept', (t) => {
  const kept = new KeptAnswers({ ttlMs: 60_000, maxBytes: 3 * (1000 + 128) });
  for (let i = 0; i < 5; i++) kept.keep(`_INBOX.U1.a.${i}`, bytes(1000, i));
  t.deepEqual(
    [0, 1, 2, 3, 4].map((i) => kept.find(`_INBOX.U1.a.${i}`, '_INBOX.U1.a.p').length),
    [0, 0, 1, 1, 1],
  );
  kept.keep('_INBOX.U1.a.big', bytes(10_000));
  t.deepEqual(kept.find('_INBOX.U1.a.big', '_INBOX.U1.a.p'), []);
  t.is(kept.find('_INBOX.U1.a.4', '_INBOX.U1.a.p').length, 1, 'and it pushed nothing out');
});

test('an answer older than its time is not given again', async (t) => {
  const kept = new KeptAnswers({ ttlMs: 50, maxBytes: 1 << 20 });
  kept.keep('_INBOX.U1.a.1', bytes(10));
  t.is(kept.find('_INBOX.U1.a.1', '_INBOX.U1.a.p').length, 1);
  await new Promise((r) => setTimeout(r, 80));
  t.is(kept.find('_INBOX.U1.a.1', '_INBOX.U1.a.p').length, 0);
  kept.keep('_INBOX.U1.a.2', bytes(10)); // and it goes from memory at the next keep
  t.is(kept.find('_INBOX.U1.a.2', '_INBOX.U1.a.p').length, 1);
});
