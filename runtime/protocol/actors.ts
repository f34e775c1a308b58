// What head, node daemons, workers and callers say to each other about actors.
import type { ResourceSet, SchedulingStrategy } from '../scheduling/placement.ts';
import type { CallArgs, ObjectLocation } from './objects.ts';
import type { JobRef } from './jobs.ts';

export type ActorState = 'PENDING' | 'ALIVE' | 'RESTARTING' | 'DEAD';

/** Everything needed to (re)start an actor anywhere. Plain data: it is stored in KV and sent to nodes. */
export interface ActorSpec {
  actorId: string;
  className: string;
  cls: { url: string; exportName: string };
  /** Constructor arguments, as TaskSpec.args; top-level refs are resolved on the worker. */
  args: CallArgs;
  deps: Record<string, ObjectLocation>;
  demand: ResourceSet;
  strategy: SchedulingStrategy;
  /** 0: never restarted; -1: always. */
  maxRestarts: number;
  /** Calls in flight when the actor dies are re-sent this many times (-1: always); else they fail. */
  maxTaskRetries: number;
  maxConcurrency: number;
  name?: string;
  namespace: string;
  /** 'detached' actors outlive the driver that made them. */
  lifetime: 'owned' | 'detached';
  /** 'process': a worker of its own (always for GPU actors); 'shared': many actors in one worker. */
  isolation: 'process' | 'shared';
  /** Process that created it: non-detached actors die with it; its logs go there. */
  owner: string;
  workingDir: string;
  /** The job that created it: its worker is bound to that job. Absent in specs stored before jobs bound workers. */
  job?: JobRef;
  /** The supervising actor: when this one dies the head holds it RESTARTING until its supervisor decides. */
  supervisor?: string;
  /** A method that throws also crashes the actor (restarted like any other death). */
  crashOnError?: boolean;
  /** How long a stop waits for the instance's onStop() before the process goes. */
  shutdownMs?: number;
  /** Calls one caller may queue while it is not ALIVE (-1: no limit); undefined: the default. */
  maxPendingCalls?: number;
  /** Checkpoint every so many calls and/or seconds (the class implements checkpoint() and restore()). */
  checkpointEvery?: { calls?: number; seconds?: number };
}

/** The actors bucket in KV: spec plus where and how it is. */
export interface ActorInfo {
  actorId: string;
  className: string;
  name?: string;
  namespace: string;
  state: ActorState;
  /** Why it is RESTARTING or DEAD, or (ALIVE after a restart) why it last died. */
  cause?: string;
  nodeId?: string;
  workerId?: string;
  /** The node's lease for this incarnation: stops name exactly this instance. */
  leaseId?: string;
  pid?: number;
  /** The tfjs backend its process computes on, when it uses tfjs (and which better ones did not load). */
  backend?: string;
  /** Its process's lane (a Unix socket on its machine): callers on that machine send calls on it, not over NATS. */
  direct?: string;
  restarts: number;
  /** Bumped on each start; lets callers tell a new instance from the one that died. */
  incarnation: number;
  /** RESTARTING, and waiting for its supervisor to restart it or end it. */
  held?: boolean;
  /** Held after a normal stop (kill() by someone other than its supervisor), not a crash. */
  normal?: boolean;
  lifetime: 'owned' | 'detached';
  isolation: 'process' | 'shared';
  owner: string;
  createdAt: string;
  /** When it became DEAD: the head forgets it (record and all) deadActorRetentionMs later. */
  deadAt?: string;
  spec: ActorSpec;
}

/** Published by the head on every state change of an actor. */
export interface ActorStateEvent {
  actorId: string;
  state: ActorState;
  incarnation: number;
  cause?: string;
  /** Its supervisor, which acts on its deaths. */
  supervisor?: string;
  held?: boolean;
  normal?: boolean;
  /** ALIVE: its process's lane (see ActorInfo.direct). */
  direct?: string;
  /** ALIVE: the worker process hosting it, which callers probe for calls they heard nothing of (callProbeMs). */
  workerId?: string;
}

/** A method call on the wire. */
export interface ActorCall {
  callId: string;
  method: string;
  /** As TaskSpec.args. */
  args: CallArgs;
  /** As TaskSpec.deps. */
  deps?: Record<string, ObjectLocation>;
  /** Caller's process, for logs. */
  caller: string;
  /** This caller's submission order of its calls to this actor: a probe's answer says which have not arrived. */
  seq?: number;
}

/** A call's answer; notRun: the instance stopped before running it, so the caller may send it to the next one. */
export type CallReply = { result: ObjectLocation; notRun?: undefined } | { notRun: true };
