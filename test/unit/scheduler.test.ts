import test from 'ava';
import { UsageError } from '../../runtime/base/errors.ts';
import {
  add,
  allocateGpus,
  fits,
  formatResources,
  normalizeRequest,
  place,
  releaseGpus,
  subtract,
  type NodeView,
  type ResourceRequest,
  type ResourceSet,
} from '../../runtime/scheduling/placement.ts';

const GiB = 1024 ** 3;

function node(nodeId: string, total: ResourceSet, used: ResourceSet = {}, alive = true): NodeView {
  return { nodeId, alive, total, available: subtract(total, used) };
}

test('normalizeRequest applies defaults and omits zeros', (t) => {
  t.deepEqual(normalizeRequest(undefined), { CPU: 1 });
  t.deepEqual(normalizeRequest({}), { CPU: 1 });
  t.deepEqual(normalizeRequest({}, 0), {});
  t.deepEqual(normalizeRequest(undefined, 0), {});
  t.deepEqual(normalizeRequest({ numCpus: 0, numGpus: 0.5 }), { GPU: 0.5 });
  t.deepEqual(normalizeRequest({ numCpus: 2, numGpus: 2, memory: GiB, resources: { ssd: 1, zero: 0 } }), {
    CPU: 2,
    GPU: 2,
    memory: GiB,
    ssd: 1,
  });
});

test('normalizeRequest rejects bad values, naming the field', (t) => {
  const bad = (req: unknown, field: RegExp): void => {
    const err = t.throws(() => normalizeRequest(req as ResourceRequest), { instanceOf: UsageError });
    t.regex(err?.message ?? '', field);
  };
  bad({ numCpus: '1' }, /numCpus/);
  bad({ numCpus: Number.NaN }, /numCpus.*NaN/);
  bad({ memory: Number.POSITIVE_INFINITY }, /memory.*finite/);
  bad({ numGpus: -1 }, /numGpus.*negative/);
  bad({ numGpus: 1.5 }, /numGpus.*whole/);
  bad({ resources: { GPU: 1 } }, /resources\.GPU.*numGpus/);
  bad({ resources: { memory: 1 } }, /resources\.memory/);
  bad({ resources: { ssd: 'x' } }, /resources\.ssd/);
  bad({ numCPUs: 1 }, /numCPUs/);
  t.deepEqual(normalizeRequest({ numGpus: 3 }), { CPU: 1, GPU: 3 });
});

test('fits, subtract and add', (t) => {
  t.true(fits({ CPU: 1, GPU: 0.3 }, { CPU: 1, GPU: 0.1 + 0.2 }));
  t.false(fits({ CPU: 1 }, { CPU: 1, GPU: 0.5 }));
  t.true(fits({}, {}));
  const a = { CPU: 4, GPU: 1 };
  const b = { CPU: 1, ssd: 2 };
  t.deepEqual(subtract(a, b), { CPU: 3, GPU: 1, ssd: -2 });
  t.deepEqual(add(a, b), { CPU: 5, GPU: 1, ssd: 2 });
  t.deepEqual(a, { CPU: 4, GPU: 1 }, 'inputs untouched');
  t.deepEqual(subtract({ GPU: 0.3 }, { GPU: 0.1 + 0.2 }), { GPU: 0 });
});

test('formatResources orders built-ins and humanizes memory', (t) => {
  t.is(formatResources({ ssd: 1, memory: 2 * GiB, GPU: 0.5, CPU: 1 }), '{CPU: 1, GPU: 0.5, memory: 2.0 GiB, ssd: 1}');
  t.is(formatResources({ memory: 512 }), '{memory: 512 B}');
  t.is(formatResources({}), '{}');
});

test('DEFAULT packs onto the busier node while it stays at or under 0.5', (t) => {
  const nodes = [node('a', { CPU: 8 }), node('b', { CPU: 8 }, { CPU: 2 })];
  t.deepEqual(place(nodes, { CPU: 2 }), { kind: 'place', nodeId: 'b' }); // b → 4/8
  t.deepEqual(
    place([node('a', { CPU: 8 }), node('b', { CPU: 8 })], { CPU: 1 }),
    { kind: 'place', nodeId: 'a' },
    'ties by id',
  );
});

test('DEFAULT falls back to the least utilized node past 0.5', (t) => {
  const nodes = [node('a', { CPU: 8 }, { CPU: 6 }), node('b', { CPU: 8 }, { CPU: 4 })];
  t.deepEqual(place(nodes, { CPU: 1 }), { kind: 'place', nodeId: 'b' });
  // the one under the threshold wins even though another is busier
  const mixed = [node('a', { CPU: 8 }, { CPU: 6 }), node('b', { CPU: 8 }, { CPU: 1 })];
  t.deepEqual(place(mixed, { CPU: 1 }), { kind: 'place', nodeId: 'b' });
});

test('SPREAD alternates across two equal nodes with the cursor', (t) => {
  const nodes = [node('b', { CPU: 4 }), node('a', { CPU: 4 })];
  const picks = [0, 1, 2, 3].map((c) => place(nodes, { CPU: 1 }, 'SPREAD', { spreadCursor: c }));
  t.deepEqual(
    picks.map((p) => (p.kind === 'place' ? p.nodeId : p.kind)),
    ['a', 'b', 'a', 'b'],
  );
  const uneven = [node('a', { CPU: 4 }, { CPU: 2 }), node('b', { CPU: 4 })];
  t.deepEqual(place(uneven, { CPU: 1 }, 'SPREAD', { spreadCursor: 0 }), { kind: 'place', nodeId: 'b' });
});

test('hard affinity: dead or unknown node is infeasible, busy node waits, never-fits is infeasible', (t) => {
  const nodes = [node('a', { CPU: 2 }, { CPU: 2 }), node('d', { CPU: 8 }, {}, false), node('b', { CPU: 8 })];
  const dead = place(nodes, { CPU: 1 }, { nodeId: 'd' });
  t.is(dead.kind, 'infeasible');
  t.regex(dead.kind === 'infeasible' ? dead.message : '', /d is dead/);
  t.is(place(nodes, { CPU: 1 }, { nodeId: 'zz' }).kind, 'infeasible');
  t.deepEqual(place(nodes, { CPU: 1 }, { nodeId: 'a' }), { kind: 'wait' });
  t.deepEqual(place(nodes, { CPU: 1 }, { nodeId: 'a', soft: false }), { kind: 'wait' });
  t.is(place(nodes, { CPU: 4 }, { nodeId: 'a' }).kind, 'infeasible');
  t.deepEqual(place(nodes, { CPU: 1 }, { nodeId: 'b' }), { kind: 'place', nodeId: 'b' });
});

test('soft affinity uses the node when it fits, else falls back to DEFAULT', (t) => {
  const nodes = [node('a', { CPU: 2 }, { CPU: 2 }), node('b', { CPU: 8 }), node('c', { CPU: 8 }, { CPU: 1 })];
  t.deepEqual(place(nodes, { CPU: 1 }, { nodeId: 'b', soft: true }), { kind: 'place', nodeId: 'b' });
  t.deepEqual(place(nodes, { CPU: 1 }, { nodeId: 'a', soft: true }), { kind: 'place', nodeId: 'c' });
  t.deepEqual(place(nodes, { CPU: 1 }, { nodeId: 'gone', soft: true }), { kind: 'place', nodeId: 'c' });
});

test('infeasible message names the demand and the largest node', (t) => {
  const nodes = [
    node('n-small', { CPU: 16, memory: 8 * GiB }),
    node('n-abc', { CPU: 8, GPU: 2, memory: 16 * GiB }),
    node('n-dead', { CPU: 64, GPU: 8 }, {}, false),
  ];
  const p = place(nodes, { CPU: 1, GPU: 4 });
  t.deepEqual(p, {
    kind: 'infeasible',
    message: 'no node can ever satisfy {CPU: 1, GPU: 4}; the largest node n-abc has {CPU: 8, GPU: 2, memory: 16.0 GiB}',
  });
  t.deepEqual(place(nodes, { CPU: 1, GPU: 2 }), { kind: 'place', nodeId: 'n-abc' });
});

test('busy but feasible waits; zero alive nodes waits', (t) => {
  t.deepEqual(place([node('a', { CPU: 2 }, { CPU: 2 })], { CPU: 1 }), { kind: 'wait' });
  t.deepEqual(place([], { CPU: 1000 }), { kind: 'wait' });
  t.deepEqual(place([node('d', { CPU: 1 }, {}, false)], { CPU: 1000 }), { kind: 'wait' });
});

test('custom resources are matched like built-ins', (t) => {
  const nodes = [node('a', { CPU: 8 }), node('b', { CPU: 8, ssd: 2 })];
  t.deepEqual(place(nodes, normalizeRequest({ resources: { ssd: 1 } })), { kind: 'place', nodeId: 'b' });
  const busy = [node('a', { CPU: 8 }), node('b', { CPU: 8, ssd: 2 }, { ssd: 2 })];
  t.deepEqual(place(busy, { CPU: 1, ssd: 1 }), { kind: 'wait' });
  const p = place(nodes, { CPU: 1, tpu: 1 });
  t.is(p.kind, 'infeasible');
  t.regex(p.kind === 'infeasible' ? p.message : '', /tpu: 1/);
});

test('fractional GPUs: two 0.5 demands share id 0, a third goes to id 1', (t) => {
  const first = allocateGpus([1, 1], 0.5);
  t.deepEqual(first, { ids: [0], free: [0.5, 1] });
  const second = allocateGpus(first!.free, 0.5);
  t.deepEqual(second, { ids: [0], free: [0, 1] });
  const third = allocateGpus(second!.free, 0.5);
  t.deepEqual(third, { ids: [1], free: [0, 0.5] });
  const big = allocateGpus([0.5, 1], 0.7)!;
  t.deepEqual(big.ids, [1], 'only id 1 has room for 0.7');
  t.true(Math.abs(big.free[1]! - 0.3) < 1e-9);
  t.is(allocateGpus([0.2, 0.4], 0.5), null);
  t.deepEqual(allocateGpus([1], 0), { ids: [], free: [1] });
});

test('integer GPU demands need wholly free ids, lowest first', (t) => {
  const free = [0.5, 1, 1, 1];
  t.deepEqual(allocateGpus(free, 2), { ids: [1, 2], free: [0.5, 0, 0, 1] });
  t.deepEqual(free, [0.5, 1, 1, 1], 'input untouched');
  t.is(allocateGpus([0.5, 1], 2), null);
  t.throws(() => allocateGpus([1, 1], 1.5), { instanceOf: UsageError });
});

test('releaseGpus restores what allocateGpus took', (t) => {
  const start = [1, 1, 1];
  const a = allocateGpus(start, 0.5)!;
  const b = allocateGpus(a.free, 2)!;
  t.deepEqual(b.ids, [1, 2]);
  const afterB = releaseGpus(b.free, b.ids, 2);
  t.deepEqual(afterB, [0.5, 1, 1]);
  t.deepEqual(releaseGpus(afterB, a.ids, 0.5), start);
  const thirds = [0.1, 0.1, 0.1].reduce<{ ids: number[][]; free: number[] }>(
    (acc, amt) => {
      const r = allocateGpus(acc.free, amt)!;
      return { ids: [...acc.ids, r.ids], free: r.free };
    },
    { ids: [], free: [1] },
  );
  const back = thirds.ids.reduce((f, ids) => releaseGpus(f, ids, 0.1), thirds.free);
  t.deepEqual(back, [1], 'float dust snaps back to a whole free GPU');
  t.throws(() => releaseGpus([1], [3], 1), { instanceOf: UsageError });
});

test('free resources may hold a fractional GPU count above 1; a demand may not', async (t) => {
  const { checkResources, checkDemand } = await import('../../runtime/scheduling/placement.ts');
  t.deepEqual(checkResources({ CPU: 2, GPU: 1.4 }), { CPU: 2, GPU: 1.4 });
  t.throws(() => checkDemand({ GPU: 1.4 }), { instanceOf: UsageError });
  t.throws(() => checkResources({ CPU: -1 }), { instanceOf: UsageError });
  t.throws(() => checkResources('lots'), { instanceOf: UsageError });
});

test('checkStrategy accepts the three shapes and names what it got otherwise', async (t) => {
  const { checkStrategy } = await import('../../runtime/scheduling/placement.ts');
  t.is(checkStrategy(undefined), 'DEFAULT');
  t.is(checkStrategy('SPREAD'), 'SPREAD');
  t.deepEqual(checkStrategy({ nodeId: 'n1', soft: true }), { nodeId: 'n1', soft: true });
  t.throws(() => checkStrategy('PACKED'), { instanceOf: UsageError, message: /"PACKED"/ });
  t.throws(() => checkStrategy({ nodeId: 'n1', soft: 'yes' }), { instanceOf: UsageError, message: /soft/ });
});

test('a suspect node takes nothing new, not even a demand of zero, yet still counts for feasibility', (t) => {
  const a = node('a', { CPU: 2 });
  const b = { ...node('b', { CPU: 2, b: 1 }), suspect: true };
  t.deepEqual(place([a, b], {}, 'DEFAULT'), { kind: 'place', nodeId: 'a' });
  t.deepEqual(place([a, b], { CPU: 1 }, 'SPREAD', { spreadCursor: 1 }), { kind: 'place', nodeId: 'a' });
  t.deepEqual(place([a, b], {}, { nodeId: 'b', soft: true }), { kind: 'place', nodeId: 'a' });
  // Only b could ever run these: they wait for it to be heard again, they do not fail.
  t.deepEqual(place([a, b], { b: 1 }, 'DEFAULT'), { kind: 'wait' });
  t.deepEqual(place([a, b], {}, { nodeId: 'b', soft: false }), { kind: 'wait' });
  t.deepEqual(place([a, { ...b, suspect: false }], { b: 1 }, 'DEFAULT'), { kind: 'place', nodeId: 'b' });
});
