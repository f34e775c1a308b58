// Tasks: what a caller sends a leased worker, what the worker answers, and the events `troupe list tasks` shows.
import type { CallArgs, ObjectLocation } from './objects.ts';

/** What a worker receives. */
export interface TaskSpec {
  taskId: string;
  /** Shown in errors and `troupe list tasks`. */
  name: string;
  fn: { url: string; exportName: string };
  /** Encoded argument array (or plain values as they are); top-level ObjectRefs in it are replaced by their values on
   * the worker. */
  args: CallArgs;
  /** Locations of the top-level ref arguments, resolved before sending; absent when there are none (most calls: an
   * empty object would be encoded into every message). */
  deps?: Record<string, ObjectLocation>;
  workingDir: string;
  /** The driver that owns this work: the task's output goes there. */
  owner: string;
  /** The process that submitted it and owns its result. */
  caller: string;
  /** This caller's order of its sends (a probe's answer says which reached the worker: see ActorCall.seq). */
  seq?: number;
}

export interface TaskReply {
  result: ObjectLocation;
  /** How long the task ran on the worker. */
  ms?: number;
}

/** A task started or ended on a worker (troupe.evt.tasks). */
export interface TaskEvent {
  taskId: string;
  name: string;
  state: 'RUNNING' | 'FINISHED' | 'FAILED';
  nodeId: string;
  workerId: string;
  pid: number;
  startedAt: number;
  endedAt?: number;
  error?: string;
}
