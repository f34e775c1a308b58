// Every NATS subject troupe uses, in one place. All are under `troupe.` and need the cluster token.
export const subjects = {
  /** Asked first by every joiner (node, driver, CLI): the head answers its versions (protocol/versions.ts). Its
   * name and shape never change. */
  headHello: 'troupe.head.hello',
  headLease: 'troupe.head.lease',
  headStatus: 'troupe.head.status',
  /** A machine of the bus's server list asks for its nats-server's certificate (protocol/bus-servers.ts). */
  headBusJoin: 'troupe.head.bus.join',
  /** A core server's node daemon asks for the cluster's NATS users. */
  headBusUsers: 'troupe.head.bus.users',
  headTasks: 'troupe.head.tasks',
  headActorCreate: 'troupe.head.actor.create',
  headActorKill: 'troupe.head.actor.kill',
  /** A supervisor restarts a child the head holds for it. */
  headActorRestart: 'troupe.head.actor.restart',
  headActorsOfOwner: 'troupe.head.actor.owner_done',
  /** A driver registers its job (id, root, runtime env) when it connects; the head's record decides where the job's
   * workers load code from (protocol/jobs.ts, JobRegistration). */
  headJobRegister: 'troupe.head.job.register',
  /** A driver asks the head to remove one of its job's checkpoints: drivers have no access to the store
   * (protocol/checkpoints.ts, CheckpointDelete). */
  headCheckpointDelete: 'troupe.head.checkpoint.delete',
  nodeLease: (node: string) => `troupe.node.${node}.lease`,
  nodeRelease: (node: string) => `troupe.node.${node}.release`,
  nodeBlocked: (node: string) => `troupe.node.${node}.blocked`,
  nodeObjects: (node: string) => `troupe.node.${node}.objects`,
  nodeFenced: (node: string) => `troupe.node.${node}.fenced`,
  procTask: (proc: string) => `troupe.proc.${proc}.task`,
  /** A caller that heard nothing for a while of its tasks or actor calls on a worker asks it which of them it still
   * holds (defaults.callProbeMs): one subject per worker, not per actor (a worker may host thousands). */
  procProbe: (proc: string) => `troupe.proc.${proc}.probe`,
  procActorStart: (proc: string) => `troupe.proc.${proc}.actor.start`,
  procActorStop: (proc: string) => `troupe.proc.${proc}.actor.stop`,
  nodeActorStop: (node: string) => `troupe.node.${node}.actor.stop`,
  nodeActors: (node: string) => `troupe.node.${node}.actors`,
  /** `troupe job submit` / `stop`: the node daemon starts or ends a driver command (runtime/node/submitted-jobs.ts). */
  nodeJobSubmit: (node: string) => `troupe.node.${node}.job.submit`,
  nodeJobStop: (node: string) => `troupe.node.${node}.job.stop`,
  /** A submitted driver's stdout and stderr, kept in the `troupe-job-logs` stream. */
  jobLog: (submissionId: string) => `troupe.joblog.${submissionId}`,
  jobLogAll: 'troupe.joblog.*',
  /** Method calls go straight to the actor, under the subjects of the worker process hosting it (only that worker may
   * subscribe there: protocol/permissions.ts): the head is never on this path. One subject per incarnation, so an
   * instance the cluster has replaced (on a node cut off past its timeout that comes back before it hears it was
   * fenced) hears no call meant for the new one. */
  actorCall: (proc: string, actorId: string, incarnation: number | '*') =>
    `troupe.proc.${proc}.call.${actorId}.${incarnation}`,
  /** Worker output for a driver, as Ray streams it. */
  log: (proc: string) => `troupe.log.${proc}`,
  procLeaseGranted: (proc: string) => `troupe.proc.${proc}.lease_granted`,
  /** A node asks a job's driver to put one item of its runtime env into the object store (shipping is lazy). */
  jobShip: (job: string) => `troupe.job.${job}.ship`,
  /** Scatter-gather to every driver and worker: list owned objects. */
  allObjects: 'troupe.all.objects',
  hbNode: (node: string) => `troupe.hb.node.${node}`,
  hbNodeAll: 'troupe.hb.node.*',
  hbProc: (proc: string) => `troupe.hb.proc.${proc}`,
  hbProcAll: 'troupe.hb.proc.*',
  evtNodeDied: 'troupe.evt.node_died',
  evtWorkerDied: 'troupe.evt.worker_died',
  /** Every worker exit, leases or not: owners drop the refs it borrowed. */
  evtProcExited: 'troupe.evt.proc_exited',
  evtTasks: 'troupe.evt.tasks',
  evtActorState: 'troupe.evt.actor_state',
  /** The object store: owners answer where their objects are; node daemons hold, copy and free the bytes. */
  obj: {
    procLocate: (proc: string) => `troupe.proc.${proc}.obj.locate`,
    procRead: (proc: string) => `troupe.proc.${proc}.obj.read`,
    /** A process starts or stops holding refs to one of the owner's objects. */
    procBorrow: (proc: string) => `troupe.proc.${proc}.obj.borrow`,
    /** A node now keeps a copy of one of the owner's objects. */
    procCopied: (proc: string) => `troupe.proc.${proc}.obj.copied`,
    nodeRead: (node: string) => `troupe.node.${node}.obj.read`,
    nodeFree: (node: string) => `troupe.node.${node}.obj.free`,
    nodeSeal: (node: string) => `troupe.node.${node}.obj.seal`,
    nodeRestore: (node: string) => `troupe.node.${node}.obj.restore`,
    nodeFetch: (node: string) => `troupe.node.${node}.obj.fetch`,
    nodeTouch: (node: string) => `troupe.node.${node}.obj.touch`,
  },
  /** Collectives: one inbox per group member. */
  collective: (group: string, rank: number) => `troupe.coll.${group}.${rank}`,
  /** A training run's replicas report progress to its driver. */
  trainProgress: (run: string) => `troupe.train.${run}.progress`,
} as const;

/** How often each process's heartbeat goes out on hbProc (its node daemon beats for a worker; a driver beats
 * itself). */
export const PROC_HEARTBEAT_MS = 1000;
