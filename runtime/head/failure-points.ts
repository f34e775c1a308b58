// What `troupe status` warns of: the parts of a cluster across machines whose loss stops it, for want of a copy that
// could take over.

export interface Redundancy {
  /** The head's nats-server is one of a NATS cluster. */
  natsCluster: boolean;
  /** Copies of the cluster state (the KV buckets' replicas). */
  stateReplicas: number;
  /** nats-servers of the bus the head's own server knows now. */
  servers: number;
  /** Standby heads heard from. */
  standbys: number;
  /** Machines (hostnames) with a live node. */
  machines: number;
}

/** The cluster's single points of failure, one line each. None on one machine: there the machine is the one. */
export function singlePointsOfFailure(r: Redundancy): string[] {
  if (r.machines < 2) return [];
  const out: string[] = [];
  if (!r.natsCluster)
    out.push(
      'one nats-server carries every message: while it is down, nothing is placed and no call crosses machines ' +
        '(start the head with --bus-peers B,C to run the bus on three machines, or use a NATS cluster of your own)',
    );
  if (r.stateReplicas < 3)
    out.push(
      `the cluster state has ${r.stateReplicas === 1 ? 'one copy' : `${r.stateReplicas} copies`} ` +
        `(R${r.stateReplicas}); R3 needs three nats-servers with JetStream (the head raises it once they are up)`,
    );
  else if (r.servers >= 5 && r.stateReplicas < 5)
    out.push(
      `the cluster state has ${r.stateReplicas} copies (R${r.stateReplicas}) on a bus of ${r.servers} servers: ` +
        'losing two servers that hold two copies of a stream stops it (the head raises it to R5 once it can)',
    );
  if (r.standbys === 0)
    out.push("the head has no standby ('troupe start --head --address' with a head credential starts one)");
  return out;
}
