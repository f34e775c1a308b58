// Attacks on the data paths (issue 22): lanes (Unix sockets into workers) and the node's object store. Each test does
// the attack against real processes, checks it is refused, and checks the process goes on serving others.
// The head node's store is on a small tmpfs of its own (mounted here, as root, and unmounted on every exit path), so
// that a put can really fill it.
import test from 'ava';
import net from 'node:net';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { init, shutdown, put, get } from '../../runtime/api/session.ts';
import { kill } from '../../actors/api.ts';
import { currentCore } from '../../runtime/core/core.ts';
import { subjects } from '../../runtime/protocol/subjects.ts';
import { encode } from '../../runtime/base/codec.ts';
import { nodeStoreName } from '../../runtime/base/config.ts';
import { ObjectStoreFullError, ProtocolError } from '../../runtime/base/errors.ts';
import { userLaneAuth } from '../../runtime/bus/lane-auth.ts';
import { parseCredential, signUser } from '../../runtime/bus/credential.ts';
import {
  startHead,
  startNode,
  recordCurrentCluster,
  type StartedCluster,
} from '../../runtime/cluster/local-cluster.ts';
import type { StoredObject } from '../../object-store/store-manager.ts';
import { eventually, isAlive, processesWithHome, terminate } from '../helpers/cluster.ts';
import { Counter, Keeper } from '../fixtures/actors.ts';

const SHM_BYTES = 16 * 1024 * 1024;

let home = '';
let shm = '';
let head: StartedCluster | undefined;
const extraNodes: StartedCluster[] = [];

function unmount(): void {
  if (!shm) return;
  try {
    execFileSync('umount', ['-l', shm], { stdio: 'ignore' });
  } catch {
    /* not mounted */
  }
}
process.on('exit', unmount); // the last line of defence: a tmpfs must not outlive this process

async function stopAll(): Promise<void> {
  await shutdown();
  for (const n of extraNodes.splice(0)) await n.stop();
  await head?.stop();
  head = undefined;
  // Workers of a node killed by a test, should any have outlived it.
  if (home) for (const pid of processesWithHome(home)) await terminate(pid, 2000);
  unmount();
  if (home) rmSync(home, { recursive: true, force: true });
}

test.serial.before(async () => {
  home = mkdtempSync(join(tmpdir(), 'troupe-attacks-data-'));
  process.env.TROUPE_HOME = home;
  shm = join(home, 'shm');
  mkdirSync(shm);
  execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${SHM_BYTES},mode=0700`, 'tmpfs', shm]);
  try {
    head = await startHead({
      detached: false,
      numCpus: 2,
      numGpus: 0,
      objectStoreDir: shm,
      objectStoreMemory: 64 * 1024 * 1024,
      spillDir: join(home, 'spill'),
    });
    recordCurrentCluster(head);
    await init();
  } catch (e) {
    await stopAll();
    throw e;
  }
});
test.serial.after.always(stopAll);

const cluster = () => head!;
const here = () => ({ schedulingStrategy: { nodeId: cluster().nodeId } });
/** The actor's record: its lane and its worker. */
const recordOf = async (actorId: string) => (await (await currentCore().gcs()).actors.get(actorId))!;
const laneOf = async (actorId: string) => (await recordOf(actorId)).direct!;
/** The worker's pid: its lane is lane-<pid>. */
const pidOfLane = (path: string) => Number(path.slice(path.lastIndexOf('-') + 1));
/** Resident memory of a process, in bytes. */
function rss(pid: number): number {
  const kb = /VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1];
  return Number(kb) * 1024;
}

const closed = (s: net.Socket) => new Promise<void>((r) => (s.destroyed ? r() : s.once('close', () => r())));

/** Connects to a lane and proves itself over the server's nonce with a driver's credential, as a caller would. */
async function authenticated(path: string, token: string): Promise<net.Socket> {
  const s = net.connect(path);
  s.on('error', () => undefined);
  const nonce = await new Promise<Buffer>((resolve, reject) => {
    let got = Buffer.alloc(0);
    const onData = (d: Buffer) => {
      got = Buffer.concat([got, d]);
      if (got.length < 37) return;
      s.off('data', onData);
      s.pause(); // reads nothing more unless a test says so
      resolve(got.subarray(5, 37));
    };
    s.on('data', onData);
    s.once('close', () => reject(new Error('closed before its nonce')));
  });
  const proof = userLaneAuth({ user: signUser(parseCredential(token), 'intruder'), allowed: [] }).respond(nonce);
  const proc = Buffer.from('intruder', 'latin1');
  const hello = Buffer.alloc(7 + proof.length + proc.length);
  hello.writeUInt32BE(hello.length - 4, 0);
  hello[4] = 0;
  hello.writeUInt16BE(proof.length, 5);
  hello.set(proof, 7);
  hello.set(proc, 7 + proof.length);
  s.write(hello);
  return s;
}

/** A request frame for one call of `method` on the actor (on worker `workerId`), with encoded arguments. */
function requestFrame(workerId: string, actorId: string, id: string, method: string, args: unknown[]): Buffer {
  const subject = Buffer.from(subjects.actorCall(workerId, actorId, 0), 'latin1');
  const call = encode({ batch: [{ callId: `intruder-${id}`, method, args: encode(args), caller: 'intruder' }] });
  const head = Buffer.alloc(8 + id.length + subject.length);
  head.writeUInt32BE(head.length - 4 + call.length, 0);
  head[4] = 1;
  head[5] = id.length;
  head.write(id, 6, 'latin1');
  head.writeUInt16BE(subject.length, 6 + id.length);
  head.set(subject, 8 + id.length);
  return Buffer.concat([head, call]);
}

/** Writes `chunk` until the socket closes or `total` bytes went; true when it closed first. */
async function flood(s: net.Socket, chunk: Buffer, total: number): Promise<boolean> {
  for (let sent = 0; sent < total && !s.destroyed; sent += chunk.length) {
    if (!s.write(chunk)) await Promise.race([new Promise((r) => s.once('drain', r)), closed(s)]);
  }
  await Promise.race([closed(s), new Promise((r) => setTimeout(r, 2000))]);
  return s.destroyed;
}

test.serial(
  'a lane frame declaring 4 GiB closes its connection before any of it is kept; the worker serves on',
  async (t) => {
    const c = Counter.options(here()).remote(0);
    t.is(await c.add(1), 1);
    const path = await laneOf(c.actorId);
    const pid = pidOfLane(path);
    const before = rss(pid);
    const junk = Buffer.alloc(1024 * 1024, 7);
    const giant = Buffer.from([0xff, 0xff, 0xff, 0xff, 1]);
    // Before proving itself, and after: either way the length alone closes the connection.
    const anonymous = net.connect(path);
    anonymous.on('error', () => undefined);
    anonymous.write(giant);
    t.true(await flood(anonymous, junk, 128 * 1024 * 1024), 'closed (unauthenticated)');
    const known = await authenticated(path, cluster().token);
    known.write(giant);
    t.true(await flood(known, junk, 128 * 1024 * 1024), 'closed (authenticated)');
    t.true(rss(pid) - before < 64 * 1024 * 1024, `the worker kept ${(rss(pid) - before) >> 20} MiB`);
    t.is(await c.add(1), 2, 'the actor still serves its caller');
    await kill(c);
  },
);

test.serial('a lane client that connects and never proves itself is closed after the handshake timeout', async (t) => {
  const c = Counter.options(here()).remote(0);
  t.is(await c.add(1), 1);
  const path = await laneOf(c.actorId);
  const silent = net.connect(path);
  silent.on('error', () => undefined);
  silent.resume(); // reads (the nonce), says nothing
  const gone = await Promise.race([closed(silent).then(() => true), new Promise((r) => setTimeout(r, 20_000, false))]);
  silent.destroy();
  t.true(gone, 'closed by the worker');
  t.is(await c.add(1), 2, 'the actor still serves its caller');
  await kill(c);
});

test.serial('a lane client that never reads its answers: the worker stops reading it, and serves others', async (t) => {
  const k = Keeper.options(here()).remote();
  t.is(await k.echo('x'), 'x');
  const { direct: path, workerId } = await recordOf(k.actorId);
  const pid = pidOfLane(path!);
  const before = rss(pid);
  const greedy = await authenticated(path!, cluster().token);
  // Calls whose answers are 90 KB each (inline in the answer), 2000 of them: 180 MB of answers nobody reads.
  const big = 'y'.repeat(90 * 1024);
  let sent = 0;
  let stalled = false;
  for (let i = 0; i < 2000 && !greedy.destroyed; i++) {
    sent++;
    if (greedy.write(requestFrame(workerId!, k.actorId, i.toString(36), 'echo', [big]))) continue;
    // The worker has stopped reading: wait a little for it to take more, then give up.
    const drained = await Promise.race([
      new Promise((r) => greedy.once('drain', () => r(true))),
      new Promise((r) => setTimeout(r, 3000, false)),
    ]);
    if (!drained) {
      stalled = true;
      break;
    }
  }
  t.true(stalled, `the worker read all ${sent} calls from a client that reads nothing`);
  t.true(rss(pid) - before < 64 * 1024 * 1024, `the worker holds ${(rss(pid) - before) >> 20} MiB more`);
  t.is(await k.echo('z'), 'z', 'the actor still serves its caller');
  greedy.destroy();
  await kill(k);
});

test.serial(
  'ENOSPC in the store: the put fails with ObjectStoreFullError, no .tmp stays, the next put works',
  async (t) => {
    const dir = join(shm, nodeStoreName(cluster().sessionDir, cluster().nodeId));
    t.true(existsSync(dir));
    const tooBig = new Uint8Array(SHM_BYTES * 2).fill(3);
    await t.throwsAsync(put(tooBig), { instanceOf: ObjectStoreFullError, message: /no room/ });
    t.deepEqual(
      readdirSync(dir).filter((f) => f.endsWith('.tmp')),
      [],
    );
    const fits = new Uint8Array(2 * 1024 * 1024).fill(5);
    t.true(Buffer.from(await get(put(fits))).equals(Buffer.from(fits)), 'the next put reads back whole');
    const c = Counter.options(here()).remote(40);
    t.is(await c.add(2), 42, 'the node still runs actors');
    await kill(c);
  },
);

test.serial("kill -9 of a node, then a restart: its store and spill dirs are gone, a live node's stay", async (t) => {
  const node = () =>
    startNode({
      detached: false,
      numCpus: 1,
      numGpus: 0,
      address: cluster().address,
      token: cluster().joinToken!,
      sessionDir: cluster().sessionDir,
      objectStoreDir: shm,
      objectStoreMemory: 4 * 1024 * 1024,
      spillDir: join(home, 'spill'),
    });
  const spillOf = (n: StartedCluster) => join(home, 'spill', `spill-${nodeStoreName(n.sessionDir, n.nodeId)}`);
  const doomed = await node();
  extraNodes.push(doomed);
  const c = Counter.options({ schedulingStrategy: { nodeId: doomed.nodeId } }).remote(0);
  t.is(await c.add(1), 1); // a worker, and its lane socket in the store dir
  t.true(existsSync(doomed.objectDir));
  t.true(existsSync(spillOf(doomed)));
  process.kill(doomed.pids[0], 'SIGKILL');
  await eventually('the node daemon gone', async () => !isAlive(doomed.pids[0]));
  t.true(existsSync(doomed.objectDir), 'left behind by the killed node');

  const again = await node();
  extraNodes.push(again);
  t.false(existsSync(doomed.objectDir), "the killed node's store dir is gone");
  t.false(existsSync(spillOf(doomed)), "the killed node's spill dir is gone");
  const live = join(shm, nodeStoreName(cluster().sessionDir, cluster().nodeId));
  t.true(existsSync(live), "the live head node's store dir stays");
  t.true(existsSync(again.objectDir));
  const d = Counter.options({ schedulingStrategy: { nodeId: again.nodeId } }).remote(10);
  t.is(await d.add(1), 11, 'the new node works');
  await kill(d);
});

test.serial('a fetch naming a wrong size is refused; the node fetches the right one after', async (t) => {
  const other = extraNodes.at(-1)!; // the node the test above started
  const bytes = new Uint8Array(1024 * 1024).map((_, i) => i % 251);
  const ref = put(bytes);
  await get(ref);
  const loc = currentCore().objects.owned.get(ref.id)!.location as { node: string; size: number };
  t.is(loc.node, cluster().nodeId);
  const bus = currentCore().bus;
  const fetch = (size: number) =>
    bus.request(subjects.obj.nodeFetch(other.nodeId), {
      id: ref.id,
      size,
      owner: currentCore().procId,
      from: [loc.node],
    });
  for (const size of [loc.size - 1000, loc.size + 1000, 2 ** 40])
    await t.throwsAsync(fetch(size), { instanceOf: ProtocolError, message: /bytes where it is held/ });
  // Nor may a reader ask a holder for bytes past the object's end, or more than a chunk at once.
  await t.throwsAsync(bus.request(subjects.obj.nodeRead(loc.node), { id: ref.id, offset: 0, length: 2 ** 32 }), {
    instanceOf: ProtocolError,
  });
  await t.throwsAsync(
    bus.request(subjects.obj.nodeRead(loc.node), { id: ref.id, offset: loc.size - 10, length: 100 }),
    { instanceOf: ProtocolError },
  );
  const held = await bus.request<{ objects: StoredObject[] }>(subjects.nodeObjects(other.nodeId), {});
  t.false(
    held.objects.some((o) => o.id === ref.id),
    'no copy made',
  );
  await fetch(loc.size);
  const after = await bus.request<{ objects: StoredObject[] }>(subjects.nodeObjects(other.nodeId), {});
  t.is(after.objects.find((o) => o.id === ref.id)?.size, loc.size);
});
