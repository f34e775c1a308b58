// The cluster's records and reports: nodes and jobs as kept in KV, and what the head's status request answers.
import type { ResourceSet, SchedulingStrategy } from '../scheduling/placement.ts';
import type { Versions } from './versions.ts';

/** A node, as its daemon registers it. */
export interface NodeInfo {
  nodeId: string;
  hostname: string;
  /** The IP other machines reach it at (`--node-ip-address`, else the local address routed to the head). */
  address?: string;
  /** Its troupe install's version and wire protocol: the head refuses a node whose differ from its own. */
  troupeVersion?: string;
  protocolVersion?: number;
  pid: number;
  total: ResourceSet;
  state: 'ALIVE' | 'DEAD';
  startedAt: string;
  deadAt?: string;
  /** Why it is DEAD. */
  cause?: string;
  objectDir: string;
  /** Bytes of shared memory its object store may hold. */
  objectStoreMemory?: number;
  isHead: boolean;
  /** The user its workers (jobs' code) run as: `--worker-user`, else the node daemon's own. Root can read the machine's
   * troupe credentials: `troupe status` warns. */
  workersRunAs?: { user: string; uid: number };
}

/** The head's lease: which head leads, and its fencing term, kept in KV (`HEAD_LEASE_BUCKET`, key `HEAD_LEASE_KEY`)
 * and taken or renewed only by compare-and-set on the entry's revision. The term grows by one at every takeover; the
 * head's messages to nodes carry it, and a node refuses one of a term older than the newest it has seen. */
export interface HeadLease {
  /** The leading head daemon: random per process. */
  headId: string;
  term: number;
  hostname: string;
  pid: number;
  /** Its kernel boot and pid namespace: a head there may take over at once from a leader whose pid is gone. */
  processSpace: string;
  renewedAt: string;
  /** It stopped cleanly and gave the lease up: a standby takes over at once. */
  released?: boolean;
}
export const HEAD_LEASE_BUCKET = 'troupe-head-lease';
export const HEAD_LEASE_KEY = 'leader';
/** A standby head's mark in the same bucket (key `standby.<headId>`), written again every lease while it waits: the
 * leader lists the standbys it has heard from in `status`. */
export interface HeadStandby {
  headId: string;
  hostname: string;
  pid: number;
  since: string;
}
export const HEAD_STANDBY_PREFIX = 'standby.';

/** A driver's run, from init() to shutdown(). */
export interface JobInfo {
  jobId: string;
  /** The driver's process id on the bus. */
  procId: string;
  pid: number;
  hostname: string;
  cwd: string;
  entrypoint: string;
  state: 'RUNNING' | 'SUCCEEDED' | 'FAILED';
  startedAt: string;
  endedAt?: string;
  cause?: string;
  /** Bytes of its runtime env (project, packages) it uploaded for nodes on other machines; 0 or absent: none. */
  shippedBytes?: number;
  /** Set when `troupe job submit` started the driver (its TROUPE_SUBMISSION_ID). */
  submissionId?: string;
}

export interface NodeStatus extends Omit<NodeInfo, 'state'> {
  /** SUSPECT: silent past the suspect threshold, not yet declared dead; nothing new is placed on it. */
  state: 'ALIVE' | 'SUSPECT' | 'DEAD';
  /** Not declared dead (ALIVE or SUSPECT). */
  alive: boolean;
  available: ResourceSet;
  lastHeartbeatMsAgo: number;
  /** Messages its daemon refused or dropped as malformed, by message type; absent: none. */
  malformed?: Record<string, number>;
}

/** Requests (tasks' leases, actors) waiting with the same demand and strategy. */
export interface PendingDemand {
  demand: ResourceSet;
  strategy: SchedulingStrategy;
  count: number;
  /** Drivers and workers they come from. */
  clients: number;
  /** The longest any of them has waited. */
  waitingMs: number;
}

export interface HeadStatus {
  /** The head's versions: every node and driver must match them. */
  head: Versions;
  nodes: NodeStatus[];
  /** Work waiting for resources, one row per kind of demand (head/pending-demands.ts). */
  pending: PendingDemand[];
  /** Kinds of demand waiting beyond the rows of `pending` (the fewest waiting); absent: none. */
  pendingLeft?: number;
  infeasible: Array<{ demand: ResourceSet; message: string; at: string }>;
  /** Messages the head refused or dropped as malformed, by message type. */
  malformed?: Record<string, number>;
  /** The answering head's lease: it leads with this term. */
  lease?: Pick<HeadLease, 'headId' | 'term' | 'hostname' | 'pid'>;
  /** The standby heads it heard from within the last three leases. */
  standbys?: Array<HeadStandby & { lastSeenMsAgo: number }>;
  /** The cluster's single points of failure, when it spans machines (head/failure-points.ts). */
  warnings?: string[];
  /** The bus as the head sees it: the nats-servers it knows (its NATS cluster's, when it is one), and the copies of
   * the cluster state (the KV buckets' replicas). */
  bus?: BusStatus;
  /** How full the stores every job shares are (checkpoints, shipped code). */
  stores?: StoreStatus[];
}

/** One of the JetStream object stores every job shares. */
export interface StoreStatus {
  name: string;
  bytes: number;
  /** -1: unbounded. */
  maxBytes: number;
}

export interface BusStatus {
  servers: number;
  /** The NATS cluster's name; absent for a lone nats-server. */
  cluster?: string;
  stateReplicas: number;
}
