// Actor ids from the bus: only the format newId() makes, so none can be a wildcard or split a subject.
import test from 'ava';
import { checkActorId, isActorId } from '../../runtime/protocol/ids.ts';
import { ProtocolError } from '../../runtime/base/errors.ts';
import { newId } from '../../runtime/core/core.ts';

test('ids newId() makes are actor ids', (t) => {
  for (let i = 0; i < 100; i++) t.true(isActorId(newId()));
  t.true(isActorId(`${'a'.repeat(16)}${Number.MAX_SAFE_INTEGER.toString(16)}`));
});

test('wildcards, dots, empty, over-long and other shapes are refused with ProtocolError', (t) => {
  const id = newId();
  for (const bad of [
    '*',
    '>',
    `${id}.*`,
    `${id}.>`,
    `${id}.x`,
    '',
    ' ',
    `${id} `,
    'a'.repeat(31),
    'deadbeef',
    `${id.toUpperCase()}`,
    `${id}\n`,
    '../x',
    undefined,
    null,
    42,
    {},
    [id],
  ]) {
    t.false(isActorId(bad), String(bad));
    t.throws(() => checkActorId(bad, 'an actor start'), { instanceOf: ProtocolError, message: /an actor start needs/ });
  }
});
