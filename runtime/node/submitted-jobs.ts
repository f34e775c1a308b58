// Drivers started by `troupe job submit`: the node daemon runs the command in a process group of its own, streams
// its stdout and stderr into the `troupe-job-logs` stream, keeps its record in `troupe-submissions`, and ends it on
// `troupe job stop`. Whoever holds a driver credential may run any command here: that is the point (as `ray job
// submit`), and why only the driver and head roles may publish its subjects (protocol/permissions.ts).
import { spawn, type ChildProcess } from 'node:child_process';
import type { Readable } from 'node:stream';
import { statSync } from 'node:fs';
import { hostname } from 'node:os';
import { randomBytes } from 'node:crypto';
import type { Bus } from '../bus/bus.ts';
import type { Gcs, Table } from '../state/gcs.ts';
import { JobLogWriter, openJobLogStream, openSubmissions } from '../state/job-logs.ts';
import { UsageError } from '../base/errors.ts';
import { howItExited } from '../base/processes.ts';
import { subjects } from '../protocol/subjects.ts';
import { request } from '../protocol/check.ts';
import { checkStop, checkSubmit } from '../protocol/schemas.ts';
import type { WorkerUser } from '../base/worker-user.ts';
import {
  checkGraceMs,
  checkSubmissionId,
  checkSubmitRequest,
  TERMINAL_STATES,
  type StopRequest,
  type SubmissionInfo,
  type RuntimeEnvRef,
  type SubmitRequest,
} from '../protocol/submissions.ts';

export interface SubmittedJobsOptions {
  bus: Bus;
  gcs: Gcs;
  nodeId: string;
  /** What the driver's init() connects to. */
  address: string;
  /** Drivers run as this user (the node's --worker-user), with `env` in place of the daemon's home. */
  runAs?: WorkerUser & { env: NodeJS.ProcessEnv };
  /** Where a shipped working dir is here (the node's copy of it, or the dir itself on the CLI's machine). */
  localDir?: (ref: RuntimeEnvRef, dir: string) => Promise<string>;
  /** Keeps the node's copy at `dir` from eviction until the returned release is called. */
  hold?: (dir: string) => () => void;
}

interface Running {
  child: ChildProcess;
  info: SubmissionInfo;
  /** Set by stop: the exit is then STOPPED, whatever the code. */
  stopping?: string;
  /** Settles with the final record once the driver has exited and its record and end of log are written. */
  done: Promise<SubmissionInfo>;
}

/** A submission between its PENDING record and its driver's start (the working dir is being made). */
interface Starting {
  pending: SubmissionInfo;
  /** Until its working dir is made; then 'spawning' (a moment: the driver is being started). */
  phase: 'preparing' | 'spawning';
  /** Set by stop (or the node stopping) while preparing: its STOPPED end is recorded then; it never starts. */
  stopping?: string;
  /** Settles once it runs, or its end is recorded. */
  started: Promise<void>;
}

/** How long a driver's output may go on after it exited (something it started still writes): then its group is
 * killed and its record finished. */
const OUTPUT_AFTER_EXIT_MS = 5000;

export class SubmittedJobs {
  private table!: Table<SubmissionInfo>;
  private readonly running = new Map<string, Running>();
  private readonly starting = new Map<string, Starting>();
  /** Record writes per job, in order: a fast exit must not be overwritten by the RUNNING write before it. */
  private readonly writes = new Map<string, Promise<void>>();
  private closing = false;

  constructor(private readonly o: SubmittedJobsOptions) {}

  async start(): Promise<void> {
    const { bus, nodeId } = this.o;
    this.table = await openSubmissions(bus);
    // A nats-server whose JetStream limits refuse the stream must not keep the node from starting: submit says why.
    this.logStream().catch((e) => console.error('troupe: cannot create the job log stream (troupe job submit):', e));
    bus.serve(
      subjects.nodeJobSubmit(nodeId),
      request(checkSubmit, (req) => this.submit(req)),
    );
    bus.serve(
      subjects.nodeJobStop(nodeId),
      request(checkStop, (req) => this.stop(req)),
    );
  }

  private logStreamReady: Promise<void> | undefined;

  /** The log stream, created once; a failed try is tried again at the next submit. */
  private logStream(): Promise<void> {
    this.logStreamReady ??= openJobLogStream(this.o.bus).catch((e) => {
      this.logStreamReady = undefined;
      throw e;
    });
    return this.logStreamReady;
  }

  /** Answers at once with the PENDING record: the copy of a shipped working dir may take longer than the CLI waits.
   * The driver starts in the background; a failure to start is its FAILED record, with the cause in its log. */
  private async submit(body: unknown): Promise<SubmissionInfo> {
    if (this.closing) throw new UsageError(`node ${this.o.nodeId} is stopping`);
    const req = checkSubmitRequest(body);
    if (req.runtimeEnv === undefined)
      this.dirInPlace(req.workingDir); // cheap: said to the CLI, not in a log
    else if (!this.o.localDir) throw new UsageError(`node ${this.o.nodeId} cannot unpack a shipped working dir`);
    await this.logStream().catch((e) => {
      throw new UsageError(`node ${this.o.nodeId} cannot keep job logs: ${(e as Error).message}`, { cause: e });
    });
    const id = `job-${randomBytes(8).toString('hex')}`;
    const info: SubmissionInfo = {
      submissionId: id,
      state: 'PENDING',
      entrypoint: req.entrypoint,
      workingDir: req.workingDir,
      nodeId: this.o.nodeId,
      hostname: hostname(),
      submittedAt: new Date().toISOString(),
    };
    await this.save(info);
    const starting: Starting = { pending: info, phase: 'preparing', started: Promise.resolve() };
    this.starting.set(id, starting);
    starting.started = this.launch(req, info, starting)
      .catch((e) => console.error(`troupe: could not start ${id}:`, e))
      .finally(() => this.starting.delete(id));
    return info;
  }

  /** The working dir used in place must be a directory here. */
  private dirInPlace(dir: string): string {
    let isDir = false;
    try {
      isDir = statSync(dir).isDirectory();
    } catch {
      /* missing: said below */
    }
    if (!isDir)
      throw new UsageError(
        `working dir ${dir} is not a directory on node ${this.o.nodeId} (${hostname()}): the driver runs there, ` +
          'in place',
      );
    return dir;
  }

  /** PENDING to RUNNING: the working dir (this node's copy of a shipped one), then the driver; or FAILED with the
   * cause (unless stopped meanwhile: stopPreparing recorded that end). */
  private async launch(req: SubmitRequest, pending: SubmissionInfo, starting: Starting): Promise<void> {
    const id = pending.submissionId;
    const failed = async (cause: string) => {
      if (starting.stopping) return;
      const info: SubmissionInfo = { ...pending, state: 'FAILED', cause, endedAt: new Date().toISOString() };
      const log = new JobLogWriter(this.o.bus, id);
      log.write({ err: new TextEncoder().encode(`troupe: ${cause}\n`) });
      await this.finish(info, log);
    };
    let cwd: string;
    try {
      cwd = req.runtimeEnv === undefined ? req.workingDir : await this.o.localDir!(req.runtimeEnv, req.workingDir);
    } catch (e) {
      return failed(`could not make the working dir here: ${(e as Error).message}`);
    }
    if (starting.stopping) return; // its end is recorded already
    starting.phase = 'spawning';
    const info: SubmissionInfo = { ...pending, workingDir: cwd };
    const env: NodeJS.ProcessEnv = { ...process.env, ...req.env };
    delete env.TROUPE_DAEMON_CONFIG; // the daemon's own options
    Object.assign(env, {
      ...this.o.runAs?.env,
      TROUPE_ADDRESS: this.o.address,
      TROUPE_TOKEN: req.credential, // the submitter's (SubmitRequest.credential)
      TROUPE_SUBMISSION_ID: id,
    });
    const [cmd, ...args] = req.entrypoint;
    // A group of its own: stop reaches what the command started (npx, tsx), not only the command.
    const as = this.o.runAs && { uid: this.o.runAs.uid, gid: this.o.runAs.gid };
    const child = spawn(cmd, args, { cwd, env, stdio: ['ignore', 'pipe', 'pipe'], detached: true, ...as });
    const started = await new Promise<Error | undefined>((resolve) => {
      child.once('spawn', () => resolve(undefined));
      child.once('error', resolve);
    });
    if (started) return failed(`could not start ${JSON.stringify(cmd)}: ${started.message}`);
    const watcher = watchForDaemonDeath(child.pid!);
    const release = this.o.hold?.(cwd); // the copy stays while the driver runs in it
    const run: Running = {
      child,
      info: { ...info, state: 'RUNNING', pid: child.pid, startedAt: new Date().toISOString() },
    } as Running;
    const { stdout, stderr } = child as { stdout: Readable; stderr: Readable };
    const log = new JobLogWriter(this.o.bus, id, [stdout, stderr]);
    stdout.on('data', (d: Buffer) => log.write({ out: d }));
    stderr.on('data', (d: Buffer) => log.write({ err: d }));
    run.done = new Promise<SubmissionInfo>((resolve) => {
      child.once('exit', (code, signal) => {
        // Output still in the pipes comes before the end record. The pipes close when the driver has exited, unless
        // something it started holds them open: then the end comes once they have been quiet (and stored) for 2 s,
        // or at most OUTPUT_AFTER_EXIT_MS after the exit, when what is left of its group is killed.
        void outputDone(child, log).then(() => {
          watcher.kill('SIGKILL');
          release?.();
          resolve(this.exited(run, code, signal, log));
        });
      });
    });
    this.running.set(id, run);
    if (this.closing) void this.end(run, 'its node stopped', 0); // close() began while it started: it saw no run
    await this.save(run.info);
  }

  private async exited(
    run: Running,
    code: number | null,
    signal: NodeJS.Signals | null,
    log: JobLogWriter,
  ): Promise<SubmissionInfo> {
    this.running.delete(run.info.submissionId);
    const state = run.stopping ? 'STOPPED' : code === 0 ? 'SUCCEEDED' : 'FAILED';
    const info: SubmissionInfo = {
      ...run.info,
      state,
      exitCode: code ?? undefined,
      signal: signal ?? undefined,
      cause: run.stopping ?? (state === 'FAILED' ? `the driver ${howItExited(code, signal)}` : undefined),
      endedAt: new Date().toISOString(),
    };
    await this.finish(info, log).catch((e) =>
      console.error(`troupe: could not record the end of ${info.submissionId}:`, e),
    );
    return info;
  }

  /** The end: record, end of log, and the driver's own job (its init()) ended with its non-detached actors, now
   * rather than when the head finds its driver silent. */
  private async finish(info: SubmissionInfo, log: JobLogWriter): Promise<void> {
    await this.save(info);
    await log.end(info);
    const jobs = (await this.o.gcs.jobs.list()).filter(
      (j) => j.submissionId === info.submissionId && j.state === 'RUNNING',
    );
    for (const j of jobs) {
      const state = info.state === 'SUCCEEDED' ? 'SUCCEEDED' : 'FAILED';
      await this.o.gcs.jobs.put(j.jobId, { ...j, state, endedAt: info.endedAt, cause: info.cause });
      await this.o.bus
        .request(subjects.headActorsOfOwner, { owner: j.procId }, { timeoutMs: 5000 })
        .catch(() => undefined);
    }
  }

  private save(info: SubmissionInfo): Promise<void> {
    const id = info.submissionId;
    const next = (this.writes.get(id) ?? Promise.resolve()).then(() => this.table.put(id, info));
    const kept = next.catch(() => undefined);
    this.writes.set(id, kept);
    void kept.then(() => {
      if (this.writes.get(id) === kept && TERMINAL_STATES.has(info.state)) this.writes.delete(id);
    });
    return next;
  }

  private async stop(req: StopRequest): Promise<SubmissionInfo> {
    const id = checkSubmissionId(req?.submissionId);
    const graceMs = checkGraceMs(req?.graceMs);
    const starting = this.starting.get(id);
    if (starting?.phase === 'preparing') return this.stopPreparing(starting, 'stopped by troupe job stop');
    await starting?.started; // spawning: a moment, then it is running
    const run = this.running.get(id);
    if (!run) {
      const info = await this.table.get(id);
      if (info && TERMINAL_STATES.has(info.state)) return info;
      throw new UsageError(`job ${id} is not running on node ${this.o.nodeId}`);
    }
    return this.end(run, 'stopped by troupe job stop', graceMs);
  }

  /** A submission still waiting for its working dir never starts: STOPPED now, not after the download. */
  private async stopPreparing(starting: Starting, why: string): Promise<SubmissionInfo> {
    if (!starting.stopping) {
      starting.stopping = why;
      const info: SubmissionInfo = {
        ...starting.pending,
        state: 'STOPPED',
        cause: why,
        endedAt: new Date().toISOString(),
      };
      await this.finish(info, new JobLogWriter(this.o.bus, info.submissionId));
    }
    return (await this.table.get(starting.pending.submissionId)) ?? starting.pending;
  }

  /** SIGTERM to the driver's group, SIGKILL after graceMs. */
  private end(run: Running, why: string, graceMs: number): Promise<SubmissionInfo> {
    run.stopping ??= why;
    const pid = run.child.pid!;
    const signal = (s: NodeJS.Signals) => {
      try {
        process.kill(-pid, s);
      } catch {
        /* the group is gone */
      }
    };
    signal('SIGTERM');
    const timer = setTimeout(() => signal('SIGKILL'), graceMs);
    return run.done.finally(() => {
      clearTimeout(timer);
      signal('SIGKILL'); // what the driver left running in its group
    });
  }

  /** The node is stopping: its drivers end with it. */
  async close(): Promise<void> {
    this.closing = true;
    await Promise.all(
      [...this.starting.values()].map((s) =>
        s.phase === 'preparing' ? this.stopPreparing(s, 'its node stopped') : s.started,
      ),
    );
    await Promise.all([...this.running.values()].map((r) => this.end(r, 'its node stopped', 3000)));
  }
}

/** Settles when the driver's pipes have closed, or have been quiet with nothing left to store for 2 s, or at most
 * OUTPUT_AFTER_EXIT_MS after the driver exited: then what it left writing in its group is killed. */
function outputDone(child: ChildProcess, log: JobLogWriter): Promise<void> {
  if (child.stdout?.closed && child.stderr?.closed) return Promise.resolve();
  return new Promise<void>((resolve) => {
    let timer: NodeJS.Timeout | undefined;
    const quiet = () => {
      clearTimeout(timer);
      timer = setTimeout(() => (log.busy ? quiet() : finish()), 2000);
    };
    let cut: NodeJS.Timeout | undefined;
    const cap = setTimeout(() => {
      try {
        process.kill(-child.pid!, 'SIGKILL');
      } catch {
        /* the group is gone */
      }
      // The pipes close once the group is dead; a writer outside the group is cut off a second later.
      cut = setTimeout(() => {
        child.stdout?.destroy();
        child.stderr?.destroy();
        finish();
      }, 1000);
    }, OUTPUT_AFTER_EXIT_MS);
    const finish = () => {
      clearTimeout(timer);
      clearTimeout(cap);
      clearTimeout(cut);
      child.stdout?.off('data', quiet);
      child.stderr?.off('data', quiet);
      resolve();
    };
    child.once('close', finish);
    child.stdout?.on('data', quiet);
    child.stderr?.on('data', quiet);
    quiet();
  });
}

/** A driver must not outlive its node daemon, even one killed by SIGKILL (which no handler sees): a tiny watcher, in
 * a session of its own, reads a pipe only this daemon writes to; at its end of file (the daemon is gone) it kills the
 * driver's process group. The daemon kills the watcher once the driver has ended. */
function watchForDaemonDeath(pgid: number): ChildProcess {
  const watcher = spawn('/bin/sh', ['-c', 'read _ ; kill -9 -"$1" 2>/dev/null', 'troupe-driver-watch', String(pgid)], {
    stdio: ['pipe', 'ignore', 'ignore'],
    detached: true,
  });
  watcher.on('error', (e) => console.error(`troupe: no watcher for driver group ${pgid}:`, e));
  watcher.stdin?.on('error', () => undefined); // it was killed: nothing to write anyway
  watcher.unref();
  return watcher;
}
