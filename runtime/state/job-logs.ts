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
import { openKv, replicated, wantedReplicas } from './buckets.ts';
import { Table } from './gcs.ts';

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

/** Writes one job's output to its subject, in order (one connection, acked publishes), then its end record. */
export class JobLogWriter {
  private readonly js: JetStreamClient;
  private readonly subject: string;
  private inFlight = 0;
  private paused = false;
  private warned = false;

  constructor(
    bus: Bus,
    private readonly submissionId: string,
    private readonly pipes: Readable[] = [],
  ) {
    this.js = jetstream(bus.nc);
    this.subject = subjects.jobLog(submissionId);
  }

  /** Chunks not yet stored. */
  get busy(): boolean {
    return this.inFlight > 0;
  }

  write(record: LogRecord): void {
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

/** Replays a job's output in order; resolves with its end record, if it was read. */
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
  if (stopAt === 0) return undefined;
  const consumer = await jetstream(bus.nc).consumers.get(JOB_LOG_STREAM, { filter_subjects: subject });
  const messages = await consumer.consume();
  let seen = 0;
  let watchdog: NodeJS.Timeout | undefined;
  if (o.follow && o.gone) {
    const gone = o.gone;
    watchdog = setInterval(async () => {
      if (!(await gone().catch(() => false))) return;
      clearInterval(watchdog);
      stopAt = await lastSeq().catch(() => 0);
      if (seen >= stopAt) void messages.close();
    }, 1000);
  }
  try {
    for await (const m of messages) {
      seen = m.seq;
      let record: LogRecord;
      try {
        record = decode<LogRecord>(m.data);
      } catch {
        continue; // not ours: skip it
      }
      if ('end' in record) return record.end;
      o.write(record);
      if (seen >= stopAt) break;
    }
    return undefined;
  } finally {
    clearInterval(watchdog);
    await messages.close();
  }
}
