// Lanes on their own, a server and its callers in this process over real Unix sockets: how callers prove themselves
// (the cluster token, or a user of a signing key the server allows), and the limits a server keeps.
import test, { type ExecutionContext } from 'ava';
import net from 'node:net';
import { join } from 'node:path';
import { newNkey } from '../../runtime/bus/nkey.ts';
import {
  encodeJwt,
  formatCredential,
  issueUser,
  jwtClaims,
  parseCredential,
  signUser,
  takeIssuedUser,
} from '../../runtime/bus/credential.ts';
import { Lane, LaneServer, laneLimits, type LaneEnd, type LaneLimits, type Outgoing } from '../../runtime/bus/lane.ts';
import { newNonce, userLaneAuth, tokenLaneAuth, type LaneAuth } from '../../runtime/bus/lane-auth.ts';
import { tempDir } from '../helpers/cluster.ts';

const wake = (o: Outgoing) => setImmediate(() => o.flush());

/** A server that answers every request with its subject, after `delayMs`. */
async function server(
  t: ExecutionContext,
  auth: LaneAuth,
  limits: Partial<LaneLimits> = {},
  delayMs = 0,
): Promise<LaneServer> {
  const path = join(tempDir(t), 'lane');
  const s = await LaneServer.listen(
    path,
    auth,
    (r) => setTimeout(() => r.reply(Buffer.from(r.subject)), delayMs),
    wake,
    { ...laneLimits(1024 * 1024), ...limits },
  );
  t.teardown(() => s!.close());
  return s!;
}

/** A caller's lane; resolves each request's answer, and `ended` once the lane closes. */
function caller(t: ExecutionContext, path: string, auth: LaneAuth, proc = 'caller') {
  const answers = new Map<string, (b: string) => void>();
  let ended!: (e: LaneEnd) => void;
  const end = new Promise<LaneEnd>((r) => {
    ended = r;
  });
  const lane = new Lane(
    path,
    auth,
    proc,
    {
      reply: (id, data) => {
        answers.get(id)?.(data.toString());
        return true;
      },
      nobody: () => undefined,
      event: () => undefined,
      end: (_l, what) => ended(what),
    },
    wake,
    laneLimits(1024 * 1024),
  );
  t.teardown(() => lane.close());
  let n = 0;
  const ask = (subject: string) =>
    new Promise<string>((resolve) => {
      const id = String(n++);
      answers.set(id, resolve);
      lane.send(id, subject, Buffer.from('{}'), true);
    });
  return { lane, ask, end };
}

test('a token proof answers its own nonce only, and only for the same token', (t) => {
  const a = tokenLaneAuth('secret');
  const n1 = newNonce();
  const proof = a.respond(n1);
  t.true(a.verify(n1, proof));
  t.false(a.verify(newNonce(), proof), 'replayed over another nonce');
  t.false(tokenLaneAuth('other').verify(n1, proof));
  t.false(a.verify(n1, proof.subarray(1)));
});

const account = newNkey('account').pair.publicKey;
/** A credential as identities.ts makes one: a signing key of the cluster's account. */
function credential(): { credential: string; publicKey: string } {
  const { seed, pair } = newNkey('account');
  return { credential: formatCredential(seed, account), publicKey: pair.publicKey };
}

/** The lane auth of a process connected with `c`: a user of its own, signed with it; `allowed` on its own lanes. */
const signedWith = (c: { credential: string }, allowed: string[] = []) =>
  userLaneAuth({ user: signUser(parseCredential(c.credential), 'test'), allowed });

test("a user's proof is taken when an allowed key signed it, and the user signed the nonce", (t) => {
  const worker = credential();
  const driver = credential();
  const stranger = credential();
  const serverSide = signedWith(worker, [driver.publicKey]);
  const n = newNonce();
  t.true(serverSide.verify(n, signedWith(driver).respond(n)));
  t.false(serverSide.verify(n, signedWith(stranger).respond(n)), 'not allowed');
  // A user its node issued (a worker's) proves itself the same way.
  const issued = takeIssuedUser(issueUser(parseCredential(driver.credential), 'w', { proc: 'p1', node: 'n1' }));
  t.true(serverSide.verify(n, userLaneAuth({ user: issued, allowed: [] }).respond(n)));
  // An allowed key's user JWT with another user's signature of the nonce (a JWT seen on the wire, say).
  const seen = Buffer.from(signedWith(driver).respond(n));
  const mine = Buffer.from(signedWith(stranger).respond(n));
  seen.set(mine.subarray(mine.length - 64), seen.length - 64);
  t.false(serverSide.verify(n, seen), "another user's signature");
  // A JWT naming an allowed key as its issuer, signed by another key.
  const claims = jwtClaims(issued.jwt)!;
  const forgedJwt = encodeJwt(
    { sub: claims.sub as string, name: 'w', nats: { type: 'user' } },
    { ...parseCredential(stranger.credential).signer, publicKey: driver.publicKey },
  );
  t.false(serverSide.verify(n, userLaneAuth({ user: { ...issued, jwt: forgedJwt }, allowed: [] }).respond(n)));
  t.false(serverSide.verify(n, Buffer.alloc(200, 65)), 'garbage');
  t.false(serverSide.verify(n, Buffer.concat([Buffer.from([0, 5]), Buffer.from('a.b.c'), Buffer.alloc(64)])));
  t.false(serverSide.verify(newNonce(), signedWith(driver).respond(n)), 'a proof for another nonce');
});

test('callers with the right proof are served; a lane with the wrong one ends without running anything', async (t) => {
  const d = credential();
  const s = await server(t, signedWith(credential(), [d.publicKey]));
  const good = caller(t, s.path, signedWith(d));
  t.is(await good.ask('troupe.actor.a'), 'troupe.actor.a');
  const bad = caller(t, s.path, tokenLaneAuth('guess'));
  void bad.ask('troupe.actor.a');
  t.deepEqual((await bad.end).unsent.length + (await bad.end).lost.length, 1);
  t.is(await good.ask('troupe.actor.b'), 'troupe.actor.b');
});

test('a worker opens lanes only as its own process, which its user names', async (t) => {
  const w = credential();
  const s = await server(t, signedWith(credential(), [w.publicKey]));
  const worker = () =>
    userLaneAuth({
      user: takeIssuedUser(issueUser(parseCredential(w.credential), 'w', { proc: 'p1', node: 'n1' })),
      allowed: [],
    });
  const own = caller(t, s.path, worker(), 'p1');
  t.is(await own.ask('troupe.x'), 'troupe.x');
  const posing = caller(t, s.path, worker(), 'p2');
  const answered = posing.ask('troupe.x').then(() => 'answered');
  const ended = posing.end.then((e) => (e.opened ? 'closed after it opened' : 'refused'));
  t.is(await Promise.race([answered, ended]), 'refused', 'naming another process');
  t.is(await caller(t, s.path, signedWith(w), 'any').ask('troupe.y'), 'troupe.y', 'an untagged user names any');
});

test('who may open lanes changes: one no longer allowed has its open lane closed and a new one refused', async (t) => {
  const [d, e] = [credential(), credential()];
  const auth = signedWith(credential(), [d.publicKey]);
  const s = await server(t, auth);
  const asD = () => caller(t, s.path, signedWith(d));
  const asE = () => caller(t, s.path, signedWith(e));
  const first = asD();
  t.is(await first.ask('troupe.actor.a'), 'troupe.actor.a');
  auth.allow([d.publicKey, e.publicKey]); // a credential made later
  const second = asE();
  t.is(await second.ask('troupe.actor.b'), 'troupe.actor.b');
  s.recheck();
  t.is(await first.ask('troupe.actor.c'), 'troupe.actor.c', 'still allowed: left open');
  auth.allow([e.publicKey]); // d revoked
  s.recheck();
  t.true((await first.end).opened, 'the open lane of the revoked one closed');
  const again = asD();
  void again.ask('troupe.actor.d');
  t.false((await again.end).opened, 'and a new one is refused');
  t.is(await second.ask('troupe.actor.e'), 'troupe.actor.e');
});

test('an idle connection is closed; one waiting for an answer is not', async (t) => {
  const auth = tokenLaneAuth('k');
  const s = await server(t, auth, { idleMs: 200 }, 600);
  const busy = caller(t, s.path, auth);
  t.is(await busy.ask('slow'), 'slow', 'answered after 600 ms, three idle periods');
  const what = await busy.end; // then idle: closed
  t.true(what.opened);
  t.deepEqual(what.lost, []);
});

test('connections still to prove themselves are capped; over the cap they are refused at once', async (t) => {
  const auth = tokenLaneAuth('k');
  const s = await server(t, auth, { maxHandshakes: 2 });
  const silent = [net.connect(s.path), net.connect(s.path)];
  for (const c of silent) c.on('error', () => undefined).resume();
  t.teardown(() => {
    for (const c of silent) c.destroy();
  });
  await new Promise((r) => setTimeout(r, 100));
  const third = net.connect(s.path).on('error', () => undefined);
  third.resume();
  await new Promise((r) => third.once('close', r));
  t.is(s.connections, 2);
  for (const c of silent) c.destroy();
  await new Promise((r) => setTimeout(r, 100));
  t.is(await caller(t, s.path, auth).ask('again'), 'again', 'served once the silent ones went');
});
