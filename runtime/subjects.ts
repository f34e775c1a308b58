// Every NATS subject troupe uses, in one place. All are under `troupe.` and need the cluster token.
export const subjects = {
  headLease: 'troupe.head.lease',
  headStatus: 'troupe.head.status',
  headTasks: 'troupe.head.tasks',
  nodeLease: (node: string) => `troupe.node.${node}.lease`,
  nodeRelease: (node: string) => `troupe.node.${node}.release`,
  nodeBlocked: (node: string) => `troupe.node.${node}.blocked`,
  nodeObjects: (node: string) => `troupe.node.${node}.objects`,
  nodeFenced: (node: string) => `troupe.node.${node}.fenced`,
  procTask: (proc: string) => `troupe.proc.${proc}.task`,
  procLeaseGranted: (proc: string) => `troupe.proc.${proc}.lease_granted`,
  /** Scatter-gather to every driver and worker: list owned objects. */
  allObjects: 'troupe.all.objects',
  hbNode: (node: string) => `troupe.hb.node.${node}`,
  hbNodeAll: 'troupe.hb.node.*',
  hbProc: (proc: string) => `troupe.hb.proc.${proc}`,
  hbProcAll: 'troupe.hb.proc.*',
  evtNodeDied: 'troupe.evt.node_died',
  evtWorkerDied: 'troupe.evt.worker_died',
  evtTasks: 'troupe.evt.tasks',
} as const;
