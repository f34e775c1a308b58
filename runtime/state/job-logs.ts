// Submitted jobs' records (KV `troupe-submissions`) and their drivers' output (the JetStream stream
// `troupe-job-logs`, one subject per job), written by the node daemon that runs a driver and read by the CLI.
import {
  DiscardPolicy,
  JetStreamApiError,
  StorageType,
  jetstream,
  jetstreamManager,
  type JetStreamClient,
  type JetStreamManager,
} from '@nats-io/jetstream';
import type { Readable } from 'node:stream';
import { nanos } from '@nats-io/nats-core';
import type { Bus } from '../bus/bus.ts';
import { decode, encode } from '../base/codec.ts';
import { subjects } from '../protocol/subjects.ts';
import type { LogRecord, SubmissionInfo } from '../protocol/submissions.ts';
import { nextOnSubject, openKv, replicated, wantedReplicas } from './buckets.ts';
import { Table } from './gcs.ts';
import { sleep } from '../base/processes.ts';

export const JOB_LOG_STREAM = 'troupe-job-logs';

/** The stream is bounded in bytes and in age, oldest dropped first: a chatty driver must not fill the disk of the
 * machine running nats-server (the whole cluster's state lives there), and logs are for reading soon after a run,
 * not an archive. 256 MiB holds a few thousand ordinary runs; a week covers a weekend. Set TROUPE_JOB_LOG_BYTES /
 * TROUPE_JOB_LOG_AGE_S on the node daemons to change them (the first node to create the stream decides). */
const MAX_BYTES = envNumber('TROUPE_JOB_LOG_BYTES', 256 * 1024 * 1024);
const MAX_AGE_S = envNumber('TROUPE_JOB_LOG_AGE_S', 7 * 24 * 3600);

function envNumber(name: string, fallback: number): number {
  const v = Number(process.env[name]);
  return Number.isFinite(v) && v > 0 ? v : fallback;
}

export async function openSubmissions(bus: Bus): Promise<Table<SubmissionInfo>> {
  return new Table<SubmissionInfo>(await openKv(bus, 'troupe-submissions', { history: 1 }));
}

/** Creates the log stream, or binds to it when it exists (or another node created it at the same moment). */
export async function openJobLogStream(bus: Bus): Promise<void> {
  const jsm = await jetstreamManager(bus.nc);
  if (await streamExists(jsm)) return;
  try {
    await replicated(wantedReplicas(bus), (replicas) =>
      jsm.streams.add({
        name: JOB_LOG_STREAM,
        subjects: [subjects.jobLogAll],
        storage: StorageType.File,
        discard: DiscardPolicy.Old,
        max_bytes: MAX_BYTES,
        max_age: nanos(MAX_AGE_S * 1000),
        num_replicas: replicas,
      }),
    );
  } catch (e) {
    if (!(e instanceof JetStreamApiError) || !(await streamExists(jsm))) throw e; // lost the race: the winner's
  }
}

async function streamExists(jsm: JetStreamManager): Promise<boolean> {
  try {
    await jsm.streams.info(JOB_LOG_STREAM);
    return true;
  } catch (e) {
    if (e instanceof JetStreamApiError && e.code === 10059) return false; // stream not found
    throw e;
  }
}

/** Chunks of one job's output awaiting the server's ack at most: past it the driver's pipes pause, so a driver that
 * prints faster than the stream stores waits in its own write() instead of filling the node daemon's memory. */
const MAX_IN_FLIGHT = 32;
/** Output is stored in records of up to this many bytes, each what one stream (stdout or stderr) printed in a row
 * within GATHER_MS: a reader gets the log one record per request (readJobLog), so a driver that prints a line at a
 * time must not make one record per line. */
const RECORD_BYTES = 64 * 1024;
const GATHER_MS = 50;

/** Writes one job's output to its subject, in order (one connection, acked publishes), then its end record. */
export class JobLogWriter {
  private readonly js: JetStreamClient;
  private readonly subject: string;
  private inFlight = 0;
  private paused = false;
  private warned = false;
  /** Output not yet published: chunks of one stream, in order. */
  private gathered: { kind: 'out' | 'err'; chunks: Uint8Array[]; bytes: number } | undefined;
  private gatherTimer: NodeJS.Timeout | undefined;

  constructor(
    bus: Bus,
    private readonly submissionId: string,
    private readonly pipes: Readable[] = [],
  ) {
    this.js = jetstream(bus.nc);
    this.subject = subjects.jobLog(submissionId);
  }

  /** Output not yet stored. */
  get busy(): boolean {
    return this.inFlight > 0 || this.gathered !== undefined;
  }

  write(record: { out: Uint8Array } | { err: Uint8Array }): void {
    const kind = 'out' in record ? 'out' : 'err';
    const chunk = 'out' in record ? record.out : record.err;
    if (this.gathered && this.gathered.kind !== kind) this.flush();
    this.gathered ??= { kind, chunks: [], bytes: 0 };
    this.gathered.chunks.push(chunk);
    this.gathered.bytes += chunk.length;
    if (this.gathered.bytes >= RECORD_BYTES) this.flush();
    else this.gatherTimer ??= setTimeout(() => this.flush(), GATHER_MS);
  }

  /** Publishes what was gathered as one record. */
  private flush(): void {
    clearTimeout(this.gatherTimer);
    this.gatherTimer = undefined;
    const g = this.gathered;
    if (!g) return;
    this.gathered = undefined;
    const data = g.chunks.length === 1 ? g.chunks[0]! : Buffer.concat(g.chunks);
    this.publish(g.kind === 'out' ? { out: data } : { err: data });
  }

  private publish(record: LogRecord): void {
    if (++this.inFlight >= MAX_IN_FLIGHT && !this.paused) {
      this.paused = true;
      for (const p of this.pipes) p.pause();
    }
    this.js
      .publish(this.subject, encode(record))
      .catch((e) => {
        if (!this.warned) console.error(`troupe: output of ${this.submissionId} lost from the job log:`, e);
        this.warned = true;
      })
      .finally(() => {
        if (--this.inFlight < MAX_IN_FLIGHT / 2 && this.paused) {
          this.paused = false;
          for (const p of this.pipes) p.resume();
        }
      });
  }

  /** The end record: stored after every chunk written before it. */
  async end(info: SubmissionInfo): Promise<void> {
    this.flush();
    await this.js.publish(this.subject, encode({ end: info } satisfies LogRecord));
  }
}

export interface ReadLogOptions {
  /** Wait for more until the job's end record comes (or `gone()` says it never will). */
  follow: boolean;
  write: (record: LogRecord) => void;
  /** Asked every second while following: true when the job ended without an end record (its node died). */
  gone?: () => Promise<boolean>;
}

/** How long a follower waits before asking again when it has read all there is. */
const FOLLOW_POLL_MS = 200;

/** Replays a job's output in order; resolves with its end record, if it was read. It reads the stream one record at a
 * time with stream gets, not a consumer: readers hold the cli and driver roles, which may make no consumer (each costs
 * the servers memory, and a durable one a replicated raft group for ever; permissions cannot tell the two apart). */
export async function readJobLog(
  bus: Bus,
  submissionId: string,
  o: ReadLogOptions,
): Promise<SubmissionInfo | undefined> {
  const jsm = await jetstreamManager(bus.nc);
  if (!(await streamExists(jsm))) return undefined;
  const subject = subjects.jobLog(submissionId);
  const lastSeq = async () => (await jsm.streams.getMessage(JOB_LOG_STREAM, { last_by_subj: subject }))?.seq ?? 0;
  let stopAt = o.follow ? Number.POSITIVE_INFINITY : await lastSeq();
  let seen = 0;
  let goneAsked = Date.now();
  while (seen < stopAt) {
    const next = jsm.streams.getMessage(JOB_LOG_STREAM, nextOnSubject(subject, seen + 1));
    // A follower rides out what a consumer would (the stream's leader elected again, a reconnect): it asks again.
    const m = o.follow && !bus.isClosed ? await next.catch(() => null) : await next;
    if (!m) {
      if (!o.follow) return undefined; // aged out of the stream meanwhile
      // All there is, read: ask once a second whether more can come.
      if (o.gone && Date.now() - goneAsked >= 1000) {
        goneAsked = Date.now();
        if (await o.gone().catch(() => false)) stopAt = await lastSeq().catch(() => 0);
        if (seen >= stopAt) return undefined;
      }
      await sleep(FOLLOW_POLL_MS);
      continue;
    }
    seen = m.seq;
    let record: LogRecord;
    try {
      record = decode<LogRecord>(m.data);
    } catch {
      continue; // not ours: skip it
    }
    if ('end' in record) return record.end;
    o.write(record);
  }
  return undefined;
}
