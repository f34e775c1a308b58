// Submitted jobs' records (KV `troupe-submissions`) and their drivers' output (the JetStream stream
// `troupe-job-logs`, one subject per job), written by the node daemon that runs a driver and read by the CLI.
import {
  DiscardPolicy,
  JetStreamApiError,
  StorageType,
  jetstream,
  jetstreamManager,
  type JetStreamManager,
} from '@nats-io/jetstream';
import { nanos } from '@nats-io/nats-core';
import type { Bus } from '../bus/bus.ts';
import { decode } from '../base/codec.ts';
import { subjects } from '../protocol/subjects.ts';
import type { LogRecord, SubmissionInfo } from '../protocol/submissions.ts';
import { openKv } from './buckets.ts';
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
    await jsm.streams.add({
      name: JOB_LOG_STREAM,
      subjects: [subjects.jobLogAll],
      storage: StorageType.File,
      discard: DiscardPolicy.Old,
      max_bytes: MAX_BYTES,
      max_age: nanos(MAX_AGE_S * 1000),
    });
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
