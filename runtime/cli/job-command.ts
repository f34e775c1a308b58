// `troupe job submit|list|status|logs|stop`: drivers run on the cluster by a node daemon, as `ray job` does.
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { resolve } from 'node:path';
import { statSync } from 'node:fs';
import type { Bus } from '../bus/bus.ts';
import { Gcs } from '../state/gcs.ts';
import { openSubmissions, readJobLog } from '../state/job-logs.ts';
import { subjects } from '../protocol/subjects.ts';
import { UsageError } from '../base/errors.ts';
import type { HeadStatus } from '../protocol/cluster.ts';
import {
  checkEnvName,
  SUBMISSION_ID,
  TERMINAL_STATES,
  type LogRecord,
  type SubmissionInfo,
  type SubmitRequest,
} from '../protocol/submissions.ts';
import { printTable } from './table.ts';
import { printable, printableLog } from './terminal-text.ts';
import { uploadRuntimeEnv } from '../shipping/driver-shipper.ts';

export const JOB_HELP = `troupe job: run a driver on the cluster, as 'ray job submit' does

Usage:
  troupe job submit [--working-dir DIR] [--env K=V]... [--no-wait] -- COMMAND [ARGS...]
  troupe job list [--json]
  troupe job status ID [--json]
  troupe job logs ID [--follow]
  troupe job stop ID [--grace-ms MS]
All take --address HOST:PORT and --token-file F (default: TROUPE_ADDRESS, TROUPE_TOKEN, then the current-cluster file).

submit   The node daemon next to the head runs COMMAND (no shell) in DIR (default: the current directory), with
         --env added and TROUPE_ADDRESS, TROUPE_TOKEN and TROUPE_SUBMISSION_ID set. DIR and its node_modules are
         packed here and uploaded to the cluster first; a node on another machine runs COMMAND in its copy. The
         driver's init() joins this cluster. Prints the job id at once; then, unless --no-wait, prints the
         driver's output until it ends and exits with its status: 0 when it SUCCEEDED, its exit code when it
         FAILED, 1 when it was STOPPED or killed by a signal. --no-wait prints only the id. Ctrl-C stops
         following, not the job.
logs     The driver's stdout and stderr, in order (kept in the bounded 'troupe-job-logs' stream: the oldest go first);
         --follow waits for more until the job ends.
stop     SIGTERM to the driver and what it started, SIGKILL after --grace-ms (default 5000); its actors that are not
         detached end with it. State: STOPPED.
Security: whoever holds a driver credential can run any command on the cluster's machines this way. Keep it
secret; submit and stop need the driver role (list, status and logs work with the read-only cli role).`;

type Values = Record<string, string | boolean | string[] | undefined>;
/** A connection to the cluster the flags name, and the credential it was made with (a submitted driver runs with
 * its submitter's). */
export type Connect = (
  values: Record<string, string | boolean | undefined>,
) => Promise<{ bus: Bus; credential: string }>;

// --token is parsed only to be refused (main.ts tokenFromFlags): use --token-file or TROUPE_TOKEN.
const conn = { address: { type: 'string' }, token: { type: 'string' }, 'token-file': { type: 'string' } } as const;
const options = {
  submit: {
    ...conn,
    'working-dir': { type: 'string' },
    env: { type: 'string', multiple: true },
    'no-wait': { type: 'boolean' },
  },
  list: { ...conn, json: { type: 'boolean' } },
  status: { ...conn, json: { type: 'boolean' } },
  logs: { ...conn, follow: { type: 'boolean', short: 'f' } },
  stop: { ...conn, 'grace-ms': { type: 'string' } },
} satisfies Record<string, ParseArgsConfig['options']>;

export async function jobCommand(argv: string[], connect: Connect): Promise<number> {
  const [sub, ...rest] = argv;
  if (!sub || sub === '--help' || sub === '-h' || sub === 'help') {
    console.log(JOB_HELP);
    return 0;
  }
  if (!(sub in options))
    throw new UsageError(`unknown job command '${sub}'; job commands: ${Object.keys(options).join(', ')}`);
  // submit: everything after `--` is the driver's command, its flags included.
  const dash = sub === 'submit' ? rest.indexOf('--') : -1;
  const flags = dash >= 0 ? rest.slice(0, dash) : rest;
  if (flags.includes('--help') || flags.includes('-h')) {
    console.log(JOB_HELP);
    return 0;
  }
  if (sub === 'submit' && dash < 0)
    throw new UsageError('troupe job submit needs the command after --: troupe job submit -- node main.js');
  let parsed: { values: Values; positionals: string[] };
  try {
    parsed = parseArgs({
      args: flags,
      options: options[sub as keyof typeof options],
      strict: true,
      allowPositionals: sub !== 'submit' && sub !== 'list',
    }) as typeof parsed;
  } catch (e) {
    throw new UsageError(
      `troupe job ${sub}: ${(e as Error).message.replace(/\. To specify a positional argument.*$/s, '')}`,
    );
  }
  const { values, positionals } = parsed;
  const connected = () => connect(values as Record<string, string | boolean | undefined>);
  const bus = async () => (await connected()).bus;
  switch (sub) {
    case 'submit':
      return submit(dash >= 0 ? rest.slice(dash + 1) : [], values, await connected());
    case 'list':
      return withBus(await bus(), (b) => list(b, !!values.json));
    case 'status':
      return withBus(await bus(), (b) => status(b, oneId(sub, positionals), !!values.json));
    case 'logs':
      return withBus(await bus(), (b) => logs(b, oneId(sub, positionals), !!values.follow));
    default:
      return withBus(await bus(), (b) => stop(b, oneId(sub, positionals), graceMs(values['grace-ms'])));
  }
}

async function withBus(bus: Bus, fn: (bus: Bus) => Promise<number>): Promise<number> {
  try {
    return await fn(bus);
  } finally {
    await bus.close();
  }
}

function oneId(sub: string, positionals: string[]): string {
  if (positionals.length !== 1) throw new UsageError(`troupe job ${sub} takes one job id: troupe job ${sub} ID`);
  const id = positionals[0];
  if (!SUBMISSION_ID.test(id))
    throw new UsageError(`${JSON.stringify(id)} is not a job id: ids look like job-0123456789abcdef`);
  return id;
}

function graceMs(v: unknown): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (typeof v !== 'string' || v.trim() === '' || !Number.isFinite(n) || n < 0)
    throw new UsageError(`--grace-ms must be a non-negative number, got ${JSON.stringify(v)}`);
  return n;
}

function parseEnv(pairs: string[]): Record<string, string> {
  const env: Record<string, string> = {};
  for (const p of pairs) {
    const eq = p.indexOf('=');
    if (eq <= 0) throw new UsageError(`--env takes NAME=VALUE, got ${JSON.stringify(p)}`);
    const name = p.slice(0, eq);
    const bad = checkEnvName(name);
    if (bad) throw new UsageError(`--env: ${bad}`);
    env[name] = p.slice(eq + 1);
  }
  return env;
}

/** The node daemon on the head's machine: drivers run next to the head, as in Ray. */
async function headNode(bus: Bus, gcs: Gcs): Promise<string> {
  const head = await bus.request<HeadStatus>(subjects.headStatus, {}, { timeoutMs: 3000 }).catch(() => undefined);
  const nodes = head?.nodes.filter((n) => n.alive) ?? (await gcs.nodes.list()).filter((n) => n.state === 'ALIVE');
  const node = nodes.find((n) => n.isHead);
  if (!node) throw new UsageError('no node daemon is running on the head machine: cannot run the job');
  return node.nodeId;
}

async function submit(
  command: string[],
  values: Values,
  { bus, credential }: { bus: Bus; credential: string },
): Promise<number> {
  try {
    if (command.length === 0 || command[0] === '')
      throw new UsageError('troupe job submit needs a command after --: troupe job submit -- node main.js');
    const env = parseEnv((values.env as string[] | undefined) ?? []);
    const workingDir = resolve((values['working-dir'] as string | undefined) ?? process.cwd());
    if (!statSync(workingDir, { throwIfNoEntry: false })?.isDirectory())
      throw new UsageError(`working dir ${workingDir} is not a directory on this machine, where submit packs it`);
    const req: SubmitRequest = {
      entrypoint: command,
      workingDir,
      env,
      // The working dir goes into the object store now (what it lacks): the node may be on another machine, and
      // this CLI exits before the driver asks for anything.
      runtimeEnv: await uploadRuntimeEnv(bus, { workingDir }),
      credential,
    };
    const gcs = await Gcs.open(bus);
    const nodeId = await headNode(bus, gcs);
    const info = await bus.request<SubmissionInfo>(subjects.nodeJobSubmit(nodeId), req, { timeoutMs: 30_000 });
    const state = info.state.toLowerCase();
    console.error(printable(`troupe: job ${info.submissionId} submitted (node ${info.nodeId}, ${state})`));
    if (values['no-wait']) {
      console.log(info.submissionId);
      return 0;
    }
    const end = await follow(bus, info.submissionId);
    console.error(printable(`troupe: job ${end.submissionId} ${describe(end)}`));
    return exitStatus(end);
  } finally {
    await bus.close();
  }
}

/** Prints the log until the job ends; its final record. */
async function follow(bus: Bus, id: string): Promise<SubmissionInfo> {
  const [table, gcs] = await Promise.all([openSubmissions(bus), Gcs.open(bus)]);
  const end = await readJobLog(bus, id, { follow: true, write, gone: () => ended(table, gcs, id) });
  return end ?? (await record(bus, id));
}

/** Ended without an end record: its node is dead (it died with it), or the record says it ended. */
async function ended(table: Awaited<ReturnType<typeof openSubmissions>>, gcs: Gcs, id: string): Promise<boolean> {
  const info = await table.get(id);
  if (!info || TERMINAL_STATES.has(info.state)) return true;
  return (await gcs.nodes.get(info.nodeId))?.state !== 'ALIVE';
}

// A job's output is bytes; decoded per stream, so a character split over two records comes out whole.
const outText = new TextDecoder();
const errText = new TextDecoder();
function write(r: LogRecord): void {
  // One stream, in the order it came, as `ray job logs`.
  if ('out' in r) process.stdout.write(printableLog(outText.decode(r.out, { stream: true })));
  else if ('err' in r) process.stdout.write(printableLog(errText.decode(r.err, { stream: true })));
}

function exitStatus(info: SubmissionInfo): number {
  if (info.state === 'SUCCEEDED') return 0;
  if (info.state === 'FAILED' && info.exitCode && info.exitCode > 0 && info.exitCode < 256) return info.exitCode;
  return 1;
}

function describe(info: SubmissionInfo): string {
  const how = info.signal ? `signal ${info.signal}` : info.exitCode !== undefined ? `exit code ${info.exitCode}` : '';
  return `${info.state}${how ? ` (${how})` : ''}${info.cause && info.state !== 'SUCCEEDED' ? `: ${info.cause}` : ''}`;
}

async function record(bus: Bus, id: string): Promise<SubmissionInfo> {
  const info = await (await openSubmissions(bus)).get(id);
  if (!info) throw new UsageError(`no job ${id} on this cluster ('troupe job list' shows them)`);
  return (await withNodes(bus, [info]))[0];
}

/** A record not ended on a node that is DEAD (or unknown): its driver died with it (the daemon's watcher kills the
 * driver's group), but nobody wrote its end. Shown as FAILED. */
async function withNodes(bus: Bus, infos: SubmissionInfo[]): Promise<SubmissionInfo[]> {
  if (infos.every((i) => TERMINAL_STATES.has(i.state))) return infos;
  const nodes = new Map((await (await Gcs.open(bus)).nodes.list()).map((n) => [n.nodeId, n]));
  return infos.map((i) => {
    const node = nodes.get(i.nodeId);
    if (TERMINAL_STATES.has(i.state) || node?.state === 'ALIVE') return i;
    const why = node?.cause ? ` (${node.cause})` : '';
    return { ...i, state: 'FAILED', cause: `its node ${i.nodeId} died${why}`, endedAt: node?.deadAt };
  });
}

async function list(bus: Bus, json: boolean): Promise<number> {
  const all = await (await openSubmissions(bus)).list();
  const rows = (await withNodes(bus, all)).sort((a, b) => a.submittedAt.localeCompare(b.submittedAt));
  if (json) {
    console.log(JSON.stringify(rows, null, 2));
    return 0;
  }
  if (rows.length === 0) {
    console.log('no jobs submitted');
    return 0;
  }
  printTable(
    ['SUBMISSIONID', 'STATE', 'EXIT', 'NODEID', 'PID', 'ENTRYPOINT', 'SUBMITTEDAT'],
    rows.map((r) => [
      r.submissionId,
      r.state,
      r.signal ?? (r.exitCode === undefined ? '' : String(r.exitCode)),
      r.nodeId,
      r.pid === undefined ? '' : String(r.pid),
      r.entrypoint.join(' '),
      r.submittedAt,
    ]),
  );
  return 0;
}

async function status(bus: Bus, id: string, json: boolean): Promise<number> {
  const info = await record(bus, id);
  // The driver's own job (from its init()), linked by TROUPE_SUBMISSION_ID.
  const jobIds = (await (await Gcs.open(bus)).jobs.list()).filter((j) => j.submissionId === id).map((j) => j.jobId);
  if (json) {
    console.log(JSON.stringify({ ...info, jobIds }, null, 2));
    return 0;
  }
  const lines = [
    `Job ${id}: ${describe(info)}`,
    `  command:     ${info.entrypoint.join(' ')}`,
    `  working dir: ${info.workingDir}`,
    `  node:        ${info.nodeId} (${info.hostname})${info.pid ? `, pid ${info.pid}` : ''}`,
    `  submitted:   ${info.submittedAt}${info.endedAt ? `, ended ${info.endedAt}` : ''}`,
  ];
  if (jobIds.length) lines.push(`  driver jobs: ${jobIds.join(', ')} ('troupe list jobs')`);
  for (const line of lines) console.log(printable(line));
  return 0;
}

async function logs(bus: Bus, id: string, following: boolean): Promise<number> {
  await record(bus, id);
  if (following) await follow(bus, id);
  else await readJobLog(bus, id, { follow: false, write });
  return 0;
}

async function stop(bus: Bus, id: string, grace: number | undefined): Promise<number> {
  const info = await record(bus, id);
  if (TERMINAL_STATES.has(info.state)) {
    console.log(printable(`Job ${id} had ended already: ${describe(info)}`));
    return 0;
  }
  const timeoutMs = (grace ?? 5000) + 15_000;
  const end = await bus.request<SubmissionInfo>(
    subjects.nodeJobStop(info.nodeId),
    { submissionId: id, graceMs: grace },
    { timeoutMs },
  );
  console.log(printable(`Job ${id} ${describe(end)}`));
  return 0;
}
