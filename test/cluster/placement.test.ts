// Placement on two node daemons with fake GPUs and a custom resource.
import test from 'ava';
import { get, InfeasibleError } from '../../runtime/index.ts';
import { useCluster, eventually, runCommand, tempDir } from '../helpers/cluster.ts';
import { join } from 'node:path';
import { writeFileSync } from 'node:fs';
import { env, hold, meet, meetAndHold } from '../fixtures/tasks.ts';
import { Counter as Huge } from '../fixtures/actors.ts';
import { startNode, type StartedCluster } from '../../runtime/cluster/local-cluster.ts';

// The head's node: 2 CPUs, no GPU. The other: 2 CPUs, 2 fake GPUs (--num-gpus), 1 "ssd".
const cluster = useCluster(test, {
  head: { numCpus: 2, numGpus: 0 },
  nodes: [{ numCpus: 2, numGpus: 2, resources: { ssd: 1 } }],
});
const cli = join(import.meta.dirname, '..', '..', 'runtime', 'cli', 'troupe.mjs');
let cpuNode: string, gpuNode: string;
test.serial.before(() => {
  [cpuNode, gpuNode] = cluster().nodeIds;
});

test.serial('CPU tasks see no GPUs; GPU tasks get their ids in CUDA_VISIBLE_DEVICES', async (t) => {
  t.is((await env.remote()).gpus, '');
  const one = await env.options({ numGpus: 1 }).remote();
  t.is(one.node, gpuNode);
  t.true(['0', '1'].includes(one.gpus!));
  const two = await env.options({ numGpus: 2 }).remote();
  t.is(two.gpus, '0,1');
});

test.serial('two 1-GPU tasks at once get different devices; a third waits (pending) until one is free', async (t) => {
  // a and b meet, so they surely run at once, and hold their GPUs until the third is seen waiting.
  const dir = tempDir(t);
  const a = meetAndHold.options({ numGpus: 1 }).remote(dir, 2);
  const b = meetAndHold.options({ numGpus: 1 }).remote(dir, 2);
  const third = hold.options({ numGpus: 1 }).remote(0);
  const pending = await eventually('a pending GPU demand in status', async () =>
    (await cluster().status()).pending.find((p) => p.demand.GPU === 1),
  );
  t.like(pending, { demand: { GPU: 1 }, clients: 1 });
  t.true(pending.count >= 1 && pending.count <= 3);
  // As `troupe status` shows it: one line per kind of demand.
  const shown = await runCommand(process.execPath, [cli, 'status'], { env: { TROUPE_HOME: cluster().home } });
  t.regex(shown.stdout, /Pending demands: \n {2}.*GPU: 1.*: [1-3] waiting \(from 1 client\), the longest \d+\.\d s/);
  writeFileSync(`${dir}/go`, '');
  const [ra, rb, rc] = await get([a, b, third]);
  t.deepEqual([ra.gpus, rb.gpus].sort(), ['0', '1']);
  t.true(['0', '1'].includes(rc.gpus!));
});

test.serial('fractional GPUs: two 0.5-GPU tasks share one device id', async (t) => {
  const half = meet.options({ numGpus: 0.5, numCpus: 0 });
  const dir = tempDir(t);
  const [a, b] = await get([half.remote(dir, 2), half.remote(dir, 2)]); // they wait for each other: both at once
  t.is(a.node, gpuNode);
  t.is(a.gpus, b.gpus);
  t.not(a.pid, b.pid);
});

test.serial(
  'GPU capacity split across devices: a demand that fits the sum but no device waits, then runs',
  async (t) => {
    // 0.6 on each device leaves 0.4 + 0.4: a 0.5 demand fits the total (0.8) but no single device.
    await eventually(
      'idle GPU leases of earlier tests returned',
      async () => (await cluster().status()).nodes.find((n) => n.nodeId === gpuNode)!.available.GPU === 2,
    );
    // They meet, so both hold their 0.6 at once, until the 0.5 demand is seen waiting.
    const dir = tempDir(t);
    const holders = [
      meetAndHold.options({ numGpus: 0.6, numCpus: 0 }).remote(dir, 2),
      meetAndHold.options({ numGpus: 0.6, numCpus: 0 }).remote(dir, 2),
    ];
    await eventually(
      'both holders running',
      async () => (await cluster().status()).nodes.find((n) => n.nodeId === gpuNode)!.available.GPU! < 1,
    );
    const half = hold.options({ numGpus: 0.5, numCpus: 0 }).remote(0);
    await eventually('the 0.5 demand pending', async () =>
      (await cluster().status()).pending.some((p) => p.demand.GPU === 0.5),
    );
    writeFileSync(`${dir}/go`, '');
    const [a, b] = await get(holders);
    t.not(a.gpus, b.gpus);
    t.true(['0', '1'].includes((await half).gpus!));
  },
);

test.serial('custom resources and node affinity', async (t) => {
  t.is((await env.options({ resources: { ssd: 1 } }).remote()).node, gpuNode);
  t.is((await env.options({ schedulingStrategy: { nodeId: cpuNode } }).remote()).node, cpuNode);
  t.is((await env.options({ schedulingStrategy: { nodeId: gpuNode } }).remote()).node, gpuNode);
  t.is((await env.options({ schedulingStrategy: { nodeId: 'no-such-node', soft: true } }).remote()).gpus, '');
});

test.serial('SPREAD puts concurrent tasks on different nodes', async (t) => {
  // SPREAD spreads over nodes with room now: idle leases kept from earlier tests (1 s) could fill one of them.
  await eventually('idle leases of earlier tests returned', async () =>
    (await cluster().status()).nodes.every((n) => n.available.CPU === 2),
  );
  // They wait for each other, so the first lease stays busy and the second task needs a lease of its own.
  const spread = meet.options({ schedulingStrategy: 'SPREAD' });
  const dir = tempDir(t);
  const rs = await get([spread.remote(dir, 2), spread.remote(dir, 2)]);
  t.deepEqual(rs.map((r) => r.node).sort(), [cpuNode, gpuNode].sort());
});

test.serial('a demand no node can ever meet fails fast, naming the demand and the largest node', async (t) => {
  const e = await t.throwsAsync(get(env.options({ numGpus: 4 }).remote()), { instanceOf: InfeasibleError });
  t.regex(e!.message, /GPU: 4/);
  t.true(e!.message.includes(gpuNode));
  // Its stack is the user's call (this file), not the head's code that decided.
  const frames = e!.stack!.split('\n').slice(1);
  t.regex(frames[0] ?? '', /placement\.test\.ts:\d+/);
  t.false(
    frames.some((f) => /runtime\/(head|core|scheduling)\//.test(f)),
    e!.stack,
  );
  // An actor no node can host: its calls fail with the stack of the line that created it.
  const tooBig = Huge.options({ numGpus: 8 }).remote();
  const ae = await t.throwsAsync(get(tooBig.value()), { instanceOf: InfeasibleError });
  t.regex(ae!.stack!.split('\n')[1] ?? '', /placement\.test\.ts:\d+/, ae!.stack);
  await t.throwsAsync(get(env.options({ resources: { tpu: 1 } }).remote()), {
    instanceOf: InfeasibleError,
    message: /tpu: 1/,
  });
  await t.throwsAsync(get(env.options({ schedulingStrategy: { nodeId: 'no-such-node' } }).remote()), {
    instanceOf: InfeasibleError,
  });
  const status = await cluster().status();
  t.true(status.infeasible.some((i) => i.demand.GPU === 4));
  // The cluster goes on.
  t.is((await env.remote()).gpus, '');
});

test.serial('a node started with CUDA_VISIBLE_DEVICES offers just those GPUs, named as CUDA names them', async (t) => {
  // As an admin keeps GPUs for others: troupe gets one GPU by UUID and GPU 7, and hands out those names.
  const uuid = 'GPU-5a1f3c2e-8d4b-4f6a-9c0e-2b7d1e3f4a5b';
  const before = process.env.CUDA_VISIBLE_DEVICES;
  process.env.CUDA_VISIBLE_DEVICES = `${uuid},7`;
  let node: StartedCluster;
  try {
    node = await startNode({
      detached: false,
      numCpus: 1,
      prestartWorkers: 0,
      address: cluster().address,
      token: cluster().joinToken,
      sessionDir: cluster().head.sessionDir,
      objectStoreDir: cluster().home,
    });
  } finally {
    if (before === undefined) delete process.env.CUDA_VISIBLE_DEVICES;
    else process.env.CUDA_VISIBLE_DEVICES = before;
  }
  t.teardown(() => node.stop());
  const info = (await cluster().status()).nodes.find((n) => n.nodeId === node.nodeId);
  t.is(info?.total.GPU, 2);
  const on = { schedulingStrategy: { nodeId: node.nodeId } };
  t.is((await env.options({ ...on, numGpus: 2 }).remote()).gpus, `${uuid},7`);
  t.true([uuid, '7'].includes((await env.options({ ...on, numGpus: 1 }).remote()).gpus!));
  t.is((await env.options(on).remote()).gpus, '', 'a CPU task still sees none');
});
