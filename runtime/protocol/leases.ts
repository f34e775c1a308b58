// Leases: what drivers, the head and node daemons say to each other to get a worker process for tasks or an actor,
// and what node daemons report about their workers.
import type { ResourceSet, SchedulingStrategy } from '../scheduling/placement.ts';
import type { ActorSpec } from './actors.ts';
import type { JobRef } from './jobs.ts';

/** A node daemon's heartbeat to the head. */
export interface HeartbeatMsg {
  nodeId: string;
  available: ResourceSet;
  gpuFree: number[];
  leaseRequestsSeen: number;
  workers: number;
  leases: number;
  /** Messages this node refused or dropped as malformed, by message type (protocol/check.ts); absent: none. */
  malformed?: Record<string, number>;
  /** Its incarnation (NodeInfo.startedAt): a node fenced and back under the same id is told from the one fenced. */
  startedAt?: string;
}

export interface LeaseGrant {
  leaseId: string;
  nodeId: string;
  /** The worker's bus id: tasks go to troupe.proc.<workerId>.task */
  workerId: string;
  pid: number;
  gpuIds: number[];
  /** For an actor: the tfjs backend its process computes on, if it uses tfjs. */
  backend?: string;
  /** The worker's lane, when it has one: for an actor ActorInfo.direct; for tasks, where callers on its machine send
   * them (troupe.proc.<workerId>.task goes on it). */
  direct?: string;
}

/** A lease request: for a client's tasks, or (from the head) to start an actor, whose lease lasts its life. */
export interface LeaseRequest {
  clientId: string;
  job: JobRef;
  demand: ResourceSet;
  actor?: { spec: ActorSpec; incarnation: number };
  /** How long the asker waits for the answer (0 or unset: for ever): a grant not made by then is taken back, never
   * kept for an asker that gave up. */
  replyWithinMs?: number;
  /** The head numbers its requests to each node; the node's heartbeat says the highest it has seen. */
  seq?: number;
  /** The asking head's fencing term (HeadLease): a node refuses a request of an older term than it has seen. */
  term: number;
}

/** What a worker's death means to those who used it. */
export interface WorkerDiedMsg {
  workerId: string;
  nodeId: string;
  pid: number;
  cause: string;
  leaseIds: string[];
  actorIds: string[];
}

/** The node cannot take the lease now; its numbers, so the head's view catches up. */
export interface Busy {
  busy: true;
  /** The job's code is still being fetched here (outside any lease): ask again shortly. */
  preparing?: true;
  available: ResourceSet;
  gpuFree: number[];
}

/** A client asks the head for a worker lease of this shape. */
export interface LeaseRequestMsg {
  reqId: string;
  clientId: string;
  job: JobRef;
  demand: ResourceSet;
  strategy: SchedulingStrategy;
}

/** What the head sends to a client about one of its lease requests. */
export type LeaseGrantedMsg = { reqId: string; grant: LeaseGrant } | { reqId: string; error: Error };
