// The cluster's records and reports: nodes and jobs as kept in KV, and what the head's status request answers.
import type { ResourceSet, SchedulingStrategy } from '../scheduling/placement.ts';

/** A node, as its daemon registers it. */
export interface NodeInfo {
  nodeId: string;
  hostname: string;
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
}

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
}

export interface NodeStatus extends NodeInfo {
  alive: boolean;
  available: ResourceSet;
  lastHeartbeatMsAgo: number;
}

export interface HeadStatus {
  nodes: NodeStatus[];
  pending: Array<{ demand: ResourceSet; strategy: SchedulingStrategy; clientId: string; waitingMs: number }>;
  infeasible: Array<{ demand: ResourceSet; message: string; at: string }>;
}
