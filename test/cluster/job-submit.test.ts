// `troupe job submit|list|status|logs|stop` on a real cluster: a node daemon runs the driver, its output goes to the
// job log stream, its end is recorded, `stop` ends it and its actors, bad input is refused and the daemons go on.
import test, { type ExecutionContext } from 'ava';
import { mkdirSync, writeFileSync } from 'node:fs';
import { createHash, randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { startCluster, runCommand, tempDir, eventually, isAlive, type TestCluster } from '../helpers/cluster.ts';
import { Bus } from '../../runtime/bus/bus.ts';
import { subjects } from '../../runtime/protocol/subjects.ts';
import { ProtocolError } from '../../runtime/base/errors.ts';
import { Gcs } from '../../runtime/state/gcs.ts';
import { readJobLog } from '../../runtime/state/job-logs.ts';
import type { SubmissionInfo } from '../../runtime/protocol/submissions.ts';

// Far above the time a stop takes: without its prompt end the head would keep a killed driver's actors this long.
process.env.TROUPE_CLIENT_TIMEOUT_MS = '120000';

const cli = join(import.meta.dirname, '..', '..', 'runtime', 'cli', 'troupe.mjs');
const troupeEntry = pathToFileURL(join(import.meta.dirname, '..', '..', 'runtime', 'index.ts')).href;
const tsx = import.meta.resolve('tsx');
const BOUND_MS = 60_000;

const tasksModule = `
import { remote, Actor } from '${troupeEntry}';
export const double = remote((x: number) => x * 2);
@remote({ maxRestarts: 0 })
export class Holder extends Actor {
  ping() { return process.pid; }
}
`;

/** `node main.ts MODE`: ok (a task, then numbered lines), fail (exit code 3), slow (ticks), flood (7 MB of lines as
 * fast as it can), hang (an actor, then waits for ever). */
const FLOOD = 100_000;
const mainModule = `
const FLOOD = ${FLOOD};
import { init } from '${troupeEntry}';
import { double, Holder } from './tasks.ts';
const mode = process.argv[2];
const info = await init({ logToDriver: false });
const { TROUPE_SUBMISSION_ID, GREETING } = process.env;
console.log('job ' + info.jobId + ' submission ' + TROUPE_SUBMISSION_ID + ' greeting ' + GREETING);
console.log('double ' + (await double.remote(21)));
if (mode === 'fail') {
  console.error('failing on purpose');
  process.exit(3);
}
if (mode === 'slow') {
  for (let i = 1; i <= 3; i++) {
    await new Promise((r) => setTimeout(r, 300));
    console.log('tick ' + i);
  }
}
if (mode === 'flood') for (let i = 1; i <= FLOOD; i++) console.log('flood ' + i + ' ' + 'x'.repeat(60));
if (mode === 'hang') {
  const h = Holder.remote();
  console.log('actor ready ' + (await h.ping()));
  setInterval(() => undefined, 1000);
} else {
  for (let i = 1; i <= 50; i++) console.log('line ' + i);
}
`;

let c: TestCluster | undefined;
test.serial.before(async () => {
  c = await startCluster({ head: { numCpus: 2 } });
});
test.serial.after.always(async () => {
  await c?.stop();
});

function project(t: ExecutionContext): string {
  const dir = join(tempDir(t, 'troupe-submit-'), 'proj');
  mkdirSync(dir);
  writeFileSync(join(dir, 'package.json'), JSON.stringify({ name: 'proj', private: true, type: 'module' }));
  writeFileSync(join(dir, 'tasks.ts'), tasksModule);
  writeFileSync(join(dir, 'main.ts'), mainModule);
  return dir;
}

const troupe = (args: string[], env: NodeJS.ProcessEnv = {}) =>
  runCommand(process.execPath, [cli, ...args], { env: { TROUPE_HOME: c!.home, ...env }, timeoutMs: BOUND_MS });
const driver = (dir: string, mode: string) => ['--', process.execPath, '--import', tsx, join(dir, 'main.ts'), mode];
const submittedId = (stderr: string) => /job (job-[0-9a-f]{16}) submitted/.exec(stderr)?.[1];
/** Whatever a test left of a driver's process group (the node daemon should have ended it). */
function killGroup(pid: number | undefined): void {
  try {
    if (pid) process.kill(-pid, 'SIGKILL');
  } catch {
    /* gone, as it should be */
  }
}
/** Waits are polled over one bus of this process: a CLI run per poll costs a second of CPU, which the driver being
 * waited for needs. What the CLI prints is checked once the wait is over. */
async function onBus<T>(cluster: TestCluster, fn: (bus: Bus) => Promise<T>): Promise<T> {
  const bus = await Bus.connect({ address: cluster.address, token: cluster.token, name: 'test-poll' });
  try {
    return await fn(bus);
  } finally {
    await bus.close();
  }
}
/** A job's output so far, read from the log stream as `troupe job logs` reads it. */
async function logText(bus: Bus, id: string): Promise<string> {
  let text = '';
  const decoder = new TextDecoder();
  await readJobLog(bus, id, {
    follow: false,
    write: (r) => {
      if ('out' in r) text += decoder.decode(r.out, { stream: true });
    },
  });
  return text;
}
/** Waits until the driver of job `id` has printed that its actor is ready; its actor's pid. */
const actorReady = (cluster: TestCluster, id: string) =>
  onBus(cluster, (bus) =>
    eventually(
      'the driver to make its actor',
      async () => Number(/actor ready (\d+)/.exec(await logText(bus, id))?.[1]) || undefined,
      BOUND_MS,
    ),
  );

async function status(id: string): Promise<SubmissionInfo & { jobIds: string[] }> {
  const r = await troupe(['job', 'status', id, '--json']);
  if (r.code !== 0) throw new Error(r.stderr);
  return JSON.parse(r.stdout);
}

test.serial('submit runs the driver next to the head, follows its output and exits with its status', async (t) => {
  t.timeout(BOUND_MS * 3);
  const dir = project(t);
  const r = await troupe(['job', 'submit', '--working-dir', dir, '--env', 'GREETING=hi there', ...driver(dir, 'ok')]);
  t.is(r.code, 0, r.stderr);
  const id = submittedId(r.stderr);
  t.truthy(id, r.stderr);
  t.regex(r.stdout, new RegExp(`submission ${id} greeting hi there`));
  t.regex(r.stdout, /double 42/);
  t.regex(r.stderr, /SUCCEEDED \(exit code 0\)/);

  const info = await status(id!);
  t.like(info, { submissionId: id, state: 'SUCCEEDED', exitCode: 0, nodeId: c!.head.nodeId, workingDir: dir });
  // The driver's init() record names the submission, and ended with it.
  t.is(info.jobIds.length, 1);
  const jobs = JSON.parse((await troupe(['list', 'jobs', '--json'])).stdout) as Array<Record<string, unknown>>;
  t.like(
    jobs.find((j) => j.jobId === info.jobIds[0]),
    { submissionId: id, state: 'SUCCEEDED' },
  );

  const logs = await troupe(['job', 'logs', id!]);
  t.is(logs.code, 0, logs.stderr);
  const lines = logs.stdout.trim().split('\n');
  t.regex(lines[0], /^job [0-9a-f]+ submission job-/);
  t.is(lines[1], 'double 42');
  t.deepEqual(
    lines.slice(2),
    Array.from({ length: 50 }, (_, i) => `line ${i + 1}`),
  );

  const list = await troupe(['job', 'list', '--json']);
  t.true((JSON.parse(list.stdout) as SubmissionInfo[]).some((j) => j.submissionId === id && j.state === 'SUCCEEDED'));
  const table = await troupe(['job', 'list']);
  t.regex(table.stdout, /^SUBMISSIONID\s+STATE\s+EXIT/);
  t.regex(table.stdout, new RegExp(`${id}\\s+SUCCEEDED\\s+0\\s+`));
});

test.serial('a failing driver is FAILED with its exit code; submit exits with it', async (t) => {
  t.timeout(BOUND_MS * 2);
  const dir = project(t);
  const r = await troupe(['job', 'submit', '--working-dir', dir, ...driver(dir, 'fail')]);
  t.is(r.code, 3, r.stderr);
  t.regex(r.stdout, /failing on purpose/);
  const info = await status(submittedId(r.stderr)!);
  t.like(info, { state: 'FAILED', exitCode: 3 });
  t.regex(info.cause ?? '', /exited with code 3/);
});

test.serial('logs --follow prints the output as it comes until the job ends', async (t) => {
  t.timeout(BOUND_MS * 2);
  const dir = project(t);
  const r = await troupe(['job', 'submit', '--no-wait', '--working-dir', dir, ...driver(dir, 'slow')]);
  t.is(r.code, 0, r.stderr);
  const id = r.stdout.trim();
  t.is(id, submittedId(r.stderr) ?? 'no id printed');
  const followed = await troupe(['job', 'logs', id, '--follow']);
  t.is(followed.code, 0, followed.stderr);
  t.regex(followed.stdout, /tick 1\ntick 2\ntick 3\n(line \d+\n){50}$/);
  t.is((await status(id)).state, 'SUCCEEDED'); // --follow returned because it ended
});

test.serial('a driver that prints as fast as it can loses nothing: every line in order, then its end', async (t) => {
  t.timeout(BOUND_MS * 3);
  const dir = project(t);
  const r = await troupe(['job', 'submit', '--working-dir', dir, ...driver(dir, 'flood')]);
  t.is(r.code, 0, r.stderr);
  const expected = Array.from({ length: FLOOD }, (_, i) => `flood ${i + 1} ${'x'.repeat(60)}`);
  const flooded = (out: string) => out.split('\n').filter((l) => l.startsWith('flood '));
  // Compared joined: ava's deepEqual takes seconds over 100,000 lines; a mismatch still shows its diff.
  const sameLines = (got: string[], what: string) =>
    got.join('\n') === expected.join('\n') ? t.pass(what) : t.deepEqual(got, expected, what);
  t.true(r.stdout.trimEnd().endsWith('line 50'));
  sameLines(flooded(r.stdout), 'followed by submit');
  const logs = await troupe(['job', 'logs', submittedId(r.stderr)!]);
  sameLines(flooded(logs.stdout), 'read back by job logs');
});

test.serial('stop ends a long-running driver (STOPPED) and its actor at once', async (t) => {
  t.timeout(BOUND_MS * 2);
  const dir = project(t);
  const r = await troupe(['job', 'submit', '--no-wait', '--working-dir', dir, ...driver(dir, 'hang')]);
  t.is(r.code, 0, r.stderr);
  const id = r.stdout.trim();
  const actorPid = await actorReady(c!, id);
  t.regex((await troupe(['job', 'logs', id])).stdout, new RegExp(`actor ready ${actorPid}\n`));
  const running = await status(id);
  t.teardown(() => killGroup(running.pid));
  t.is(running.state, 'RUNNING');
  t.true(isAlive(running.pid!));

  const stop = await troupe(['job', 'stop', id, '--grace-ms', '2000']);
  t.is(stop.code, 0, stop.stderr);
  t.regex(stop.stdout, /STOPPED/);
  const stopped = await status(id);
  t.like(stopped, { state: 'STOPPED', signal: 'SIGTERM' });
  t.false(isAlive(running.pid!));
  // Its actor ends now, not after the head's silence timeout (120 s here).
  const holderDead = (actors: Array<{ className?: unknown; pid?: unknown; state?: unknown }>) =>
    actors.find((a) => a.className === 'Holder' && a.pid === actorPid)?.state === 'DEAD';
  await onBus(c!, async (bus) => {
    const gcs = await Gcs.open(bus);
    await eventually('its actor to end', async () => holderDead(await gcs.actors.list()));
  });
  t.true(holderDead(JSON.parse((await troupe(['list', 'actors', '--json'])).stdout)), 'troupe list actors shows it');
  await eventually('its actor process to exit', async () => !isAlive(actorPid));
  const again = await troupe(['job', 'stop', id]);
  t.is(again.code, 0);
  t.regex(again.stdout, /had ended already: STOPPED/);
});

test.serial('bad input gets a clear error and the daemons keep running', async (t) => {
  t.timeout(BOUND_MS * 2);
  const dir = project(t);
  const unknown = await troupe(['job', 'status', 'job-0123456789abcdef']);
  t.is(unknown.code, 2);
  t.regex(unknown.stderr, /no job job-0123456789abcdef/);
  const notAnId = await troupe(['job', 'logs', 'nonsense']);
  t.is(notAnId.code, 2);
  t.regex(notAnId.stderr, /"nonsense" is not a job id/);
  const empty = await troupe(['job', 'submit', '--working-dir', dir, '--']);
  t.is(empty.code, 2);
  t.regex(empty.stderr, /needs a command after --/);
  const noDash = await troupe(['job', 'submit', 'node', 'main.ts']);
  t.is(noDash.code, 2);
  t.regex(noDash.stderr, /needs the command after --/);
  const badEnv = await troupe(['job', 'submit', '--env', 'NOEQUALS', ...driver(dir, 'ok')]);
  t.is(badEnv.code, 2);
  t.regex(badEnv.stderr, /--env takes NAME=VALUE/);
  const troupeEnv = await troupe(['job', 'submit', '--env', 'TROUPE_TOKEN=x', ...driver(dir, 'ok')]);
  t.is(troupeEnv.code, 2);
  t.regex(troupeEnv.stderr, /TROUPE_\* names are set by troupe/);
  const noDir = await troupe(['job', 'submit', '--working-dir', join(dir, 'missing'), ...driver(dir, 'ok')]);
  t.is(noDir.code, 2);
  t.regex(noDir.stderr, /is not a directory on this machine/);
  const noCommand = await troupe(['job', 'submit', '--working-dir', dir, '--', join(dir, 'no-such-command')]);
  t.is(noCommand.code, 1);
  t.regex(noCommand.stdout, /could not start/);
  t.regex(noCommand.stderr, /FAILED/);
  t.is((await troupe(['job', 'frobnicate'])).code, 2);

  // Straight on the bus, as a client with the token but not our CLI: refused, field by field.
  const bus = await Bus.connect({ address: c!.address, token: c!.token, name: 'test' });
  t.teardown(() => bus.close());
  const node = subjects.nodeJobSubmit(c!.head.nodeId);
  for (const bad of [
    undefined,
    { entrypoint: 'node main.ts', workingDir: dir, env: {} },
    { entrypoint: [], workingDir: dir, env: {} },
    { entrypoint: ['node', 42], workingDir: dir, env: {} },
    { entrypoint: ['node'], workingDir: 'relative', env: {} },
    { entrypoint: ['node'], workingDir: dir, env: { TROUPE_ADDRESS: 'elsewhere:1' } },
    { entrypoint: ['node'], workingDir: dir, env: { 'A=B': 'x' } },
    { entrypoint: ['node'], workingDir: dir, env: { A: 3 } },
    { entrypoint: ['node'], workingDir: dir, env: {} }, // no credential to run it with
    { entrypoint: ['node'], workingDir: dir, env: {}, credential: 'two\nlines' },
  ])
    await t.throwsAsync(
      bus.request(node, bad, { timeoutMs: 5000 }),
      { instanceOf: ProtocolError },
      JSON.stringify(bad),
    );
  await t.throwsAsync(
    bus.request(subjects.nodeJobStop(c!.head.nodeId), { submissionId: '../x' }, { timeoutMs: 5000 }),
    {
      instanceOf: ProtocolError,
    },
  );
  const after = await c!.status();
  t.true(after.nodes.every((n) => n.alive));
  const ok = await troupe(['job', 'submit', '--working-dir', dir, ...driver(dir, 'ok')]);
  t.is(ok.code, 0, ok.stderr);
});

test.serial("a submitted driver runs with its submitter's credential, not one of its node's", async (t) => {
  t.timeout(BOUND_MS * 2);
  const dir = project(t);
  const bus = await Bus.connect({ address: c!.address, token: c!.token, name: 'test' });
  t.teardown(() => bus.close());
  // What the driver is given, hashed (the credential itself is no log line): revoking the submitter's credential then
  // closes the driver's connections too.
  const hash = (s: string) => createHash('sha256').update(s).digest('hex');
  const printHash =
    "console.log(require('crypto').createHash('sha256').update(process.env.TROUPE_TOKEN).digest('hex'))";
  const req = {
    entrypoint: [process.execPath, '-e', printHash],
    workingDir: dir,
    env: {},
    credential: 'the-submitters',
  };
  const info = await bus.request<SubmissionInfo>(subjects.nodeJobSubmit(c!.head.nodeId), req, { timeoutMs: 5000 });
  await eventually('the job to end', async () => (await status(info.submissionId)).state === 'SUCCEEDED', BOUND_MS);
  const logs = await troupe(['job', 'logs', info.submissionId]);
  t.is(logs.stdout.trim(), hash('the-submitters'));
  t.false(JSON.stringify(await status(info.submissionId)).includes('the-submitters'), 'kept in no record');
});

test.serial('a submission with a wrong token is refused', async (t) => {
  const dir = project(t);
  const r = await troupe(['job', 'submit', '--address', c!.address, '--working-dir', dir, ...driver(dir, 'ok')], {
    TROUPE_TOKEN: 'wrong',
  });
  t.is(r.code, 1);
  t.regex(r.stderr, /refused the token/);
  t.notRegex(r.stderr, /submitted/);
});

test.serial('a node daemon that stops ends the drivers it runs, and what they started', async (t) => {
  t.timeout(BOUND_MS * 2);
  const dir = project(t);
  const own = await startCluster({ head: { numCpus: 1 } });
  t.teardown(() => own.stop());
  const r = await runCommand(
    process.execPath,
    [cli, 'job', 'submit', '--no-wait', '--working-dir', dir, ...driver(dir, 'hang')],
    { env: { TROUPE_HOME: own.home }, timeoutMs: BOUND_MS },
  );
  t.is(r.code, 0, r.stderr);
  const id = r.stdout.trim();
  const logs = () =>
    runCommand(process.execPath, [cli, 'job', 'logs', id], { env: { TROUPE_HOME: own.home }, timeoutMs: BOUND_MS });
  const actorPid = await actorReady(own, id);
  t.regex((await logs()).stdout, new RegExp(`actor ready ${actorPid}\n`));
  const info = JSON.parse(
    (
      await runCommand(process.execPath, [cli, 'job', 'status', id, '--json'], {
        env: { TROUPE_HOME: own.home },
        timeoutMs: BOUND_MS,
      })
    ).stdout,
  ) as SubmissionInfo;
  t.teardown(() => killGroup(info.pid));
  t.true(isAlive(info.pid!));
  await own.stop();
  t.false(isAlive(info.pid!));
  t.false(isAlive(actorPid));
});

test.serial('a node daemon killed by SIGKILL takes its driver with it; the record reads FAILED', async (t) => {
  t.timeout(BOUND_MS * 3);
  const dir = project(t);
  const own = await startCluster({ head: { numCpus: 1 }, nodeTimeoutMs: 3000 });
  t.teardown(() => own.stop());
  const run = (args: string[]) =>
    runCommand(process.execPath, [cli, ...args], { env: { TROUPE_HOME: own.home }, timeoutMs: BOUND_MS });
  const r = await run(['job', 'submit', '--no-wait', '--working-dir', dir, ...driver(dir, 'hang')]);
  t.is(r.code, 0, r.stderr);
  const id = r.stdout.trim();
  await actorReady(own, id);
  const info = JSON.parse((await run(['job', 'status', id, '--json'])).stdout) as SubmissionInfo;
  t.teardown(() => killGroup(info.pid));
  t.is(info.state, 'RUNNING');
  t.true(isAlive(info.pid!));
  const daemon = (await own.status()).nodes.find((n) => n.nodeId === info.nodeId)!;
  process.kill(daemon.pid, 'SIGKILL'); // no handler of its own runs: the driver must still go
  await eventually('the driver to die with its node daemon', async () => !isAlive(info.pid!), BOUND_MS);
  await onBus(own, async (bus) => {
    const gcs = await Gcs.open(bus);
    await eventually(
      'the node to be declared dead',
      async () => (await gcs.nodes.get(info.nodeId))?.state !== 'ALIVE',
      BOUND_MS,
    );
  });
  const dead = await eventually(
    'the record to read FAILED',
    async () => {
      const s = JSON.parse((await run(['job', 'status', id, '--json'])).stdout) as SubmissionInfo;
      return s.state === 'FAILED' ? s : undefined;
    },
    BOUND_MS,
  );
  t.regex(dead.cause ?? '', new RegExp(`its node ${info.nodeId} died`));
  const list = JSON.parse((await run(['job', 'list', '--json'])).stdout) as SubmissionInfo[];
  t.is(list.find((j) => j.submissionId === id)?.state, 'FAILED');
  const followed = await run(['job', 'logs', id, '--follow']);
  t.is(followed.code, 0, followed.stderr);
  const stop = await run(['job', 'stop', id]);
  t.regex(stop.stdout, /had ended already: FAILED/);
});

test.serial(
  'a driver that exits while something it started keeps writing ends anyway; the writer is killed',
  async (t) => {
    t.timeout(BOUND_MS * 2);
    const dir = project(t);
    const script = 'sh -c "while :; do echo tick; sleep 0.2; done" & echo "writer $!"; exit 0';
    const r = await troupe(['job', 'submit', '--working-dir', dir, '--', '/bin/sh', '-c', script]);
    const writer = Number(/writer (\d+)/.exec(r.stdout)?.[1]);
    t.teardown(() => {
      try {
        if (writer > 0) process.kill(writer, 'SIGKILL');
      } catch {
        /* gone, as it should be */
      }
    });
    t.is(r.code, 0, r.stderr);
    t.regex(r.stderr, /SUCCEEDED \(exit code 0\)/);
    t.regex(r.stdout, /tick/);
    t.true(writer > 0, r.stdout);
    await eventually('what it left writing in its group to be killed', async () => !isAlive(writer), BOUND_MS);
  },
);

test.serial(
  'submit answers PENDING at once; a working dir the node cannot make is FAILED with the cause',
  async (t) => {
    t.timeout(BOUND_MS);
    const dir = project(t);
    const bus = await Bus.connect({ address: c!.address, token: c!.token, name: 'test' });
    t.teardown(() => bus.close());
    // Shipped from "another machine", but never uploaded: the node cannot make its copy.
    const runtimeEnv = {
      workingDir: { sha256: randomBytes(32).toString('hex'), bytes: 100 },
      origin: { hostname: 'elsewhere', bootId: 'boot', rootId: '1:2' },
    };
    const req = {
      entrypoint: [process.execPath, '-e', '0'],
      workingDir: dir,
      env: {},
      runtimeEnv,
      credential: c!.token,
    };
    const info = await bus.request<SubmissionInfo>(subjects.nodeJobSubmit(c!.head.nodeId), req, { timeoutMs: 5000 });
    t.is(info.state, 'PENDING');
    const failed = await eventually(
      'the job to fail',
      async () => {
        const s = await status(info.submissionId);
        return s.state === 'FAILED' && s;
      },
      BOUND_MS,
    );
    t.regex(failed.cause ?? '', /could not make the working dir here/);
    t.is(failed.pid, undefined, 'nothing ran');
    const logs = await troupe(['job', 'logs', info.submissionId]);
    t.regex(logs.stdout, /could not make the working dir here/);
  },
);
