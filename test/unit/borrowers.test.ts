// An owner's view of who borrows one of its objects (object-store/borrowers.ts), fed the borrow messages of a process
// in the orders the bus can deliver them: a borrow on a lane, the messages after it over NATS.
import test from 'ava';
import { Borrowers } from '../../object-store/borrowers.ts';

test('in order: a borrow, then its end', (t) => {
  const b = new Borrowers();
  b.hear('p', true, 'n1', 1);
  t.is(b.size, 1);
  b.hear('p', false, undefined, 2);
  t.is(b.size, 0);
});

test('a new borrow that overtook the end of the one before keeps the process a borrower', (t) => {
  // p borrowed on the lane (5), let go (6), borrowed again over NATS (7), which came before 6.
  const b = new Borrowers();
  b.hear('p', true, 'n1', 5);
  b.hear('p', true, 'n1', 7);
  b.hear('p', false, undefined, 6);
  t.is(b.size, 1, 'the late end of borrow 5 does not free the object under borrow 7');
  b.hear('p', false, undefined, 8);
  t.is(b.size, 0);
});

test('a borrow that arrives after its own end is old news', (t) => {
  const b = new Borrowers();
  b.hear('p', false, undefined, 6);
  b.hear('p', true, 'n1', 5);
  t.is(b.size, 0, 'no borrower left behind for ever');
  b.hear('p', true, 'n1', 6);
  t.is(b.size, 0, 'a number heard already is old too');
});

test("a borrow sent on a process's behalf holds it until that process's own messages let go", (t) => {
  const b = new Borrowers();
  b.hear('p', true, 'n1', 3);
  b.hear('p', false, undefined, 4);
  b.hear('p', true, 'n1'); // another process handed p the ref again, holding it itself
  t.is(b.size, 1);
  b.hear('p', false, undefined, 2); // older than p's last message: dropped
  t.is(b.size, 1);
  b.hear('p', true, 'n1'); // said twice: still one borrower
  b.hear('p', false); // only p's own (numbered) messages let go
  t.is(b.size, 1);
  b.hear('p', false, undefined, 5);
  t.is(b.size, 0);
});

test('processes are counted apart; drop() forgets those named and says whether one held it', (t) => {
  const b = new Borrowers();
  b.hear('p', true, 'n1', 1);
  b.hear('q', true, 'n2', 1);
  b.hear('r', true, 'n2', 1);
  b.hear('r', false, undefined, 2);
  t.is(b.size, 2);
  t.false(
    b.drop((proc) => proc === 'r'),
    'r no longer held it',
  );
  t.true(b.drop((_proc, node) => node === 'n2'));
  t.is(b.size, 1);
  t.true(b.drop((proc) => proc === 'p'));
  t.is(b.size, 0);
  b.hear('p', true, 'n1', 1); // a process forgotten (exited) starts afresh: ids are not reused, but nothing breaks
  t.is(b.size, 1);
});
