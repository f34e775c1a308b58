// Every NATS subject troupe uses, in one place. All are under `troupe.` and need the cluster token.
export const subjects = {
  headLease: 'troupe.head.lease',
  headStatus: 'troupe.head.status',
  headTasks: 'troupe.head.tasks',
  headActorCreate: 'troupe.head.actor.create',
  headActorKill: 'troupe.head.actor.kill',
  /** A supervisor restarts a child the head holds for it. */
  headActorRestart: 'troupe.head.actor.restart',
  headActorsOfOwner: 'troupe.head.actor.owner_done',
  nodeLease: (node: string) => `troupe.node.${node}.lease`,
  nodeRelease: (node: string) => `troupe.node.${node}.release`,
  nodeBlocked: (node: string) => `troupe.node.${node}.blocked`,
  nodeObjects: (node: string) => `troupe.node.${node}.objects`,
  nodeFenced: (node: string) => `troupe.node.${node}.fenced`,
  procTask: (proc: string) => `troupe.proc.${proc}.task`,
  procActorStart: (proc: string) => `troupe.proc.${proc}.actor.start`,
  procActorStop: (proc: string) => `troupe.proc.${proc}.actor.stop`,
  nodeActorStop: (node: string) => `troupe.node.${node}.actor.stop`,
  nodeActors: (node: string) => `troupe.node.${node}.actors`,
  /** Method calls go straight to the actor: the head is never on this path. */
  actor: (actorId: string) => `troupe.actor.${actorId}`,
  /** Worker output for a driver, as Ray streams it. */
  log: (proc: string) => `troupe.log.${proc}`,
  procLeaseGranted: (proc: string) => `troupe.proc.${proc}.lease_granted`,
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
} as const;
