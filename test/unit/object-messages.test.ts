// Every object-store message is checked before the store acts on it: ids that could name a path or a subject
// wildcard, sizes and ranges that are not byte counts, ranges longer than a chunk, are refused with a ProtocolError
// that says where.
import test from 'ava';
import { ProtocolError } from '../../runtime/base/errors.ts';
import { checkObjectMessage, parseObjectMessage, MAX_CHUNK_BYTES } from '../../runtime/protocol/objects.ts';

test('well-formed messages pass as they are', (t) => {
  t.deepEqual(checkObjectMessage('seal', { id: 'a1_b-2', size: 10, owner: 'f00d' }), {
    id: 'a1_b-2',
    size: 10,
    owner: 'f00d',
  });
  t.deepEqual(checkObjectMessage('read', { id: 'x', offset: 0, length: MAX_CHUNK_BYTES }), {
    id: 'x',
    offset: 0,
    length: MAX_CHUNK_BYTES,
  });
  t.deepEqual(checkObjectMessage('fetch', { id: 'x', size: 3, owner: 'p', from: ['n1', 'n2'] }).from, ['n1', 'n2']);
});

test('malformed ones are refused, saying where', (t) => {
  const bad: Array<[Parameters<typeof checkObjectMessage>[0], unknown, RegExp]> = [
    ['seal', null, /seal/],
    ['seal', { id: '../../etc/passwd', size: 1, owner: 'p' }, /at id/],
    ['seal', { id: 'x', size: -1, owner: 'p' }, /at size/],
    ['seal', { id: 'x', size: 1.5, owner: 'p' }, /at size/],
    ['seal', { id: 'x', size: 1, owner: 'a.>' }, /at owner/],
    ['read', { id: 'x', offset: 0, length: 2 ** 32 }, /at length/],
    ['read', { id: 'x', offset: '0', length: 1 }, /at offset/],
    ['fetch', { id: 'x', size: 1, owner: 'p', from: [] }, /at from/],
    ['fetch', { id: 'x', size: 1, owner: 'p', from: ['*'] }, /at from/],
    ['free', { ids: 'x' }, /at ids/],
    ['one', { id: 'x'.repeat(65) }, /at id/],
  ];
  for (const [kind, body, where] of bad) {
    const e = t.throws(() => checkObjectMessage(kind, body), { instanceOf: ProtocolError });
    t.regex(e!.message, where, JSON.stringify(body));
  }
  t.is(parseObjectMessage('borrow', { id: 'x', proc: 'p', add: 'yes' }), undefined);
  t.truthy(parseObjectMessage('borrow', { id: 'x', proc: 'p', add: true }));
  t.is(parseObjectMessage('borrow', { id: 'x', proc: 'p', add: true, seq: 3 })?.seq, 3);
  for (const seq of [0, -1, 1.5, '2', Number.MAX_SAFE_INTEGER + 2])
    t.is(parseObjectMessage('borrow', { id: 'x', proc: 'p', add: false, seq }), undefined, String(seq));
});
