// Lanes: actor calls and tasks from a process on the worker's machine go straight to it over a Unix socket, not through
// nats-server. Same answers, same order, same behaviour when the worker dies; nothing runs for a connection without
// the cluster token.
import test from 'ava';
import net from 'node:net';
import { existsSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { get, kill, ActorDiedError } from '../../runtime/index.ts';
import { useCluster, tempDir, eventually } from '../helpers/cluster.ts';
import { currentCore } from '../../runtime/core/core.ts';
import { subjects } from '../../runtime/protocol/subjects.ts';
import { encode } from '../../runtime/base/codec.ts';
import { userLaneAuth } from '../../runtime/bus/lane-auth.ts';
import { parseCredential, signUser } from '../../runtime/bus/credential.ts';
import { Lane, laneLimits, type LaneEnd, type Outgoing } from '../../runtime/bus/lane.ts';
import { addIdentity, publicKeyOf, revokeIdentity } from '../../runtime/cluster/identities.ts';
import { pushAccount } from '../../runtime/cluster/account-update.ts';
import { Bus } from '../../runtime/bus/bus.ts';
import { Counter, Phoenix, Journal } from '../fixtures/actors.ts';
import { add, meetAndHold, putHere } from '../fixtures/tasks.ts';

const cluster = useCluster(test, { head: { numCpus: 2, numGpus: 0 }, nodes: [{ numCpus: 2, numGpus: 0 }] });
const actorInfo = async (actorId: string) => (await currentCore().gcs()).actors.get(actorId);
/** The lane this driver's calls to the actor's instance `i` go on (default: the one its record names now). */
const laneOf = async (actorId: string, i?: { workerId?: string; incarnation: number }) => {
  const { workerId, incarnation } = i ?? (await actorInfo(actorId))!;
  return currentCore().bus.laneOf(subjects.actorCall(workerId!, actorId, incarnation));
};

test.serial("calls to actors on this machine go on their worker's lane, whichever node daemon runs them", async (t) => {
  const [here, there] = cluster().nodeIds;
  const near = Counter.options({ schedulingStrategy: { nodeId: here } }).remote(10);
  const far = Counter.options({ schedulingStrategy: { nodeId: there } }).remote(10);
  t.is(await near.add(1), 11);
  t.is(await far.add(1), 11);
  const nearInfo = await actorInfo(near.actorId);
  const farInfo = await actorInfo(far.actorId);
  // The lane is a socket in its node's private object directory; both node daemons are on this machine.
  t.true(statSync(nearInfo!.direct!).isSocket());
  t.true(statSync(farInfo!.direct!).isSocket());
  t.not(nearInfo!.direct, farInfo!.direct);
  t.is(await laneOf(near.actorId), nearInfo!.direct);
  t.is(await laneOf(far.actorId), farInfo!.direct);
  // Many calls at once and one at a time: in order, each with its own answer.
  const burst = await get(Array.from({ length: 2000 }, () => near.add(1)));
  t.deepEqual(
    burst,
    Array.from({ length: 2000 }, (_, i) => 12 + i),
  );
  for (let i = 0; i < 50; i++) t.is(await near.add(1), 2012 + i);
  await kill(near);
  await kill(far);
  await eventually('the socket gone with its process', async () => !existsSync(nearInfo!.direct!));
  t.false(existsSync(nearInfo!.direct!));
});

test.serial("tasks go on their worker's lane too; one whose worker dies with it there runs again", async (t) => {
  const here = { schedulingStrategy: { nodeId: cluster().nodeIds[0] } };
  const first = await get(putHere.options(here).remote(1));
  const lane = currentCore().bus.laneOf(subjects.procTask(first.procId));
  t.is(lane && basename(lane), `lane-${first.pid}`, 'the lane of the worker its lease named');
  t.true(statSync(lane!).isSocket());
  // Sent at once, so on the one lease there is (idle for less than leaseIdleMs): killed with the task on its lane.
  const dir = tempDir(t);
  const held = meetAndHold.options(here).remote(dir, 1);
  const pid = await eventually('the task running', async () => Number(readdirSync(join(dir, 'met'))[0]?.split('-')[0]));
  t.is(pid, first.pid, 'the same worker');
  process.kill(pid, 'SIGKILL');
  writeFileSync(join(dir, 'go'), '');
  t.not((await get(held)).pid, pid, 'run again (maxRetries) by another worker');
  t.is(currentCore().bus.laneOf(subjects.procTask(first.procId)), undefined, 'no route left to the dead one');
  const sums = await get(Array.from({ length: 500 }, (_, i) => add.options(here).remote(i, 1)));
  t.deepEqual(
    sums,
    Array.from({ length: 500 }, (_, i) => i + 1),
  );
});

test.serial('what an actor prints reaches its caller before the answer of the call that printed it', async (t) => {
  const c = Counter.options({ schedulingStrategy: { nodeId: cluster().nodeIds[0] } }).remote(0);
  await c.value();
  t.truthy(await laneOf(c.actorId));
  const seen: string[] = [];
  const write = process.stdout.write.bind(process.stdout);
  process.stdout.write = ((chunk: string | Uint8Array, ...rest: unknown[]) => {
    const text = String(chunk);
    if (text.includes('said ')) seen.push(text.trim().replace(/^\(Counter pid=\d+\) /, ''));
    return (write as (...a: unknown[]) => boolean)(chunk, ...rest);
  }) as typeof process.stdout.write;
  try {
    for (let i = 0; i < 20; i++) {
      await c.say(`said ${i}`);
      seen.push(`answered ${i}`);
    }
  } finally {
    process.stdout.write = write;
  }
  t.deepEqual(seen, Array.from({ length: 20 }, (_, i) => [`said ${i}`, `answered ${i}`]).flat());
  await kill(c);
});

test.serial(
  'a lane runs nothing for a connection that does not prove itself over its nonce first; the worker goes on',
  async (t) => {
    const c = Counter.options({ schedulingStrategy: { nodeId: cluster().nodeIds[0] } }).remote(0);
    t.is(await c.add(1), 1);
    const { direct: path, workerId } = (await actorInfo(c.actorId))!;
    // A well-formed request frame for the actor, sent with a wrong token first, then with none at all.
    const call = encode({ batch: [{ callId: 'intruder', method: 'add', args: [100], caller: 'intruder' }] });
    const request = (id: string): Buffer => {
      const subject = Buffer.from(subjects.actorCall(workerId!, c.actorId, 0));
      const body = Buffer.concat([
        Buffer.from([1, id.length]),
        Buffer.from(id),
        Buffer.from([subject.length >> 8, subject.length & 255]),
        subject,
        call,
      ]);
      const len = Buffer.alloc(4);
      len.writeUInt32BE(body.length);
      return Buffer.concat([len, body]);
    };
    const wrongHello = Buffer.concat([Buffer.from([0, 0, 0, 33, 0]), Buffer.alloc(32, 7)]);
    for (const first of [wrongHello, request('a')]) {
      const socket = net.connect(path!);
      socket.on('error', () => undefined);
      socket.write(Buffer.concat([first, request('b')]));
      // The server's nonce (a 37-byte frame) comes first; anything after it would be an answer.
      let heard = 0;
      socket.on('data', (d: Buffer) => {
        heard += d.length;
      });
      const answered = await new Promise<boolean>((resolve) => socket.once('close', () => resolve(heard > 37)));
      t.false(answered, 'closed without an answer');
    }
    t.is(await c.add(1), 2, 'nothing ran for the intruder, and the actor still serves');
    await kill(c);
  },
);

test.serial(
  'a worker killed with calls in flight on its lane: they are retried or fail as maxTaskRetries says, in order',
  async (t) => {
    const here = { schedulingStrategy: { nodeId: cluster().nodeIds[0] } };
    const p = Phoenix.options(here).remote();
    const { pid } = await p.bump();
    const first = (await actorInfo(p.actorId))!;
    t.truthy(await laneOf(p.actorId, first));
    const inFlight = p.sleepThenBump(5000);
    await new Promise((r) => setTimeout(r, 200));
    process.kill(pid, 'SIGKILL');
    await t.throwsAsync(get(inFlight), { instanceOf: ActorDiedError, message: /sleepThenBump/ });
    const again = await p.bump();
    t.not(again.pid, pid);
    const now = (await actorInfo(p.actorId))!;
    t.is(await laneOf(p.actorId, now), now.direct, "the new process's lane");
    t.is(await laneOf(p.actorId, first), undefined, 'none left for the instance that died');
    await kill(p);

    const j = Journal.options({ ...here, maxRestarts: -1, maxTaskRetries: -1 }).remote();
    const firstPid = await j.log(-1);
    const refs = Array.from({ length: 30 }, (_, i) => j.log(i));
    await new Promise((r) => setTimeout(r, 100));
    process.kill(firstPid, 'SIGKILL');
    for (let i = 30; i < 60; i++) refs.push(j.log(i));
    t.is((await get(refs)).length, 60);
    const history = await j.history();
    t.deepEqual(
      history,
      [...history].sort((a, b) => a - b),
    );
    t.is(history.at(-1), 59);
    await kill(j);
  },
);

test.serial(
  'a lane that is not on this machine, or cannot be opened, is not tried again: its requests go over NATS',
  async (t) => {
    const { address, token } = cluster();
    const server = await Bus.connect({ address, token, name: 'lane-test-server' });
    const caller = await Bus.connect({ address, token, name: 'lane-test-caller' });
    t.teardown(async () => {
      await caller.close();
      await server.close();
    });
    const subject = subjects.obj.procRead(`lane-test-${process.pid}`); // one a driver's credential may serve and ask
    server.serveBatched(subject, (x: number) => x * 2);
    // As a worker's node tells it: who may open lanes into it (here the caller's identity, the same credential).
    server.useLaneAuth(userLaneAuth({ user: server.user!, allowed: [publicKeyOf(token)] }));
    const path = await server.listenLanes(join(tempDir(t), 'lane'));
    await server.flush();
    const call = (x: number) =>
      new Promise((answered, failed) => caller.requestBatched(subject, { body: x, answered, failed }));

    const dir = tempDir(t);
    caller.route(subject, join(dir, 'nobody-listens-here')); // as a lane on another machine looks from here
    t.is(await call(1), 2); // over NATS
    t.is(caller.laneOf(subject), undefined);
    const notASocket = join(dir, 'not-a-socket');
    writeFileSync(notASocket, '');
    caller.route(subject, notASocket);
    t.is(await call(2), 4); // it never left: it goes over NATS, as those after it
    t.is(caller.laneOf(subject), undefined);
    t.is(await call(3), 6);
    caller.route(subject, notASocket);
    t.is(caller.laneOf(subject), undefined, 'not tried again');

    caller.route(subject, path);
    t.is(caller.laneOf(subject), path);
    t.deepEqual(await Promise.all([4, 5, 6].map(call)), [8, 10, 12]);

    // A caller the lane refuses (an identity the worker's node does not name): what it queued there goes over NATS.
    const stranger = await Bus.connect({ address, token: cluster().headToken, name: 'lane-test-stranger' });
    t.teardown(() => stranger.close());
    stranger.route(subject, path);
    const asked = [7, 8].map(
      (x) => new Promise((answered, failed) => stranger.requestBatched(subject, { body: x, answered, failed })),
    );
    t.deepEqual(await Promise.all(asked), [14, 16]);
    t.is(stranger.laneOf(subject), undefined, 'refused: not tried again');
  },
);

test.serial(
  "a driver credential made with 'troupe token create' opens lanes too; revoked, its open lane closes",
  async (t) => {
    t.timeout(60_000);
    const c = Counter.options({ schedulingStrategy: { nodeId: cluster().nodeIds[0] } }).remote(0);
    await c.value();
    const { direct: path, workerId } = (await actorInfo(c.actorId))!;
    t.truthy(path);
    const dir = cluster().head.sessionDir;
    const push = () => pushAccount({ sessionDir: dir, address: cluster().address });
    const made = addIdentity(dir, 'driver', `lanes-${process.pid}`);
    await push();
    // Straight on the socket, as a driver with that credential would open it (its NATS connection aside).
    const wake = (o: Outgoing) => setImmediate(() => o.flush());
    const open = () => {
      let ended!: (e: LaneEnd) => void;
      const end = new Promise<LaneEnd>((r) => {
        ended = r;
      });
      let answered!: () => void;
      const answer = new Promise<void>((r) => {
        answered = r;
      });
      const lane = new Lane(
        path!,
        userLaneAuth({ user: signUser(parseCredential(made.credential), 'made'), allowed: [] }),
        `made-${process.pid}`,
        {
          reply: () => {
            answered();
            return true;
          },
          nobody: () => undefined,
          event: () => undefined,
          end: (_l, e) => ended(e),
        },
        wake,
        laneLimits(1024 * 1024),
      );
      t.teardown(() => lane.close());
      // Not a call the actor can run: answered with an error, which is enough to show the lane is open.
      lane.send('1', subjects.actorCall(workerId!, c.actorId, 0), encode({ not: 'a call' }), true);
      return { answer, end };
    };
    // Its node learns of the new credential within a few seconds (it asks every 2 s).
    const accepted = await eventually(
      'a lane opened with the new credential',
      async () => {
        const l = open();
        return (await Promise.race([l.answer.then(() => l), l.end.then(() => undefined)])) ?? undefined;
      },
      20_000,
    );
    t.is(await c.add(1), 1);
    revokeIdentity(dir, made.name);
    await push();
    const end = await accepted.end;
    t.true(end.opened, 'the open lane of the revoked credential closed');
    const late = open();
    t.false((await late.end).opened, 'and a new one is refused');
    t.is(await c.add(1), 2, 'by the worker, which serves on (the same instance: its state kept)');
  },
);
