// What each role may publish and subscribe to, as data built from `subjects` so that the two change together.
// nats-server enforces these (runtime/cluster/identities.ts renders them into its config); a role is given exactly
// what its code uses (see the comments per role), nothing of the head's or the node daemons' control subjects
// unless it is one of them.
import { subjects } from './subjects.ts';
import { ProtocolError } from '../base/errors.ts';

export type Role = 'head' | 'node' | 'driver' | 'worker' | 'cli';
export const ROLES: readonly Role[] = ['head', 'node', 'driver', 'worker', 'cli'];

export interface Permissions {
  publish: string[];
  subscribe: string[];
}

/** A subject with `*` in place of each variable part (a node id, a process id…). */
const any = (f: (x: string) => string): string => f('*');
const o = subjects.obj;

/** Every connection's replies come to `_INBOX.<its user's public key>`: nats.js's own requests (`inboxPrefix`) and the
 * Bus's wildcard inbox both live under it, and only that user may subscribe there (each connection signs a user of its
 * own: bus/credential.ts). */
export function inboxPrefix(publicKey: string): string {
  return `_INBOX.${publicKey}`;
}

/** What the head answers on CREDENTIALS_SUBJECT: the credential a node hands to its workers (over their IPC channel),
 * and the driver credential, which `troupe start` on a joining machine keeps for that machine's drivers. */
export interface Credentials {
  worker: string;
  driver: string;
}

/** Checks the head's answer on CREDENTIALS_SUBJECT (a message from the bus is untrusted until checked). */
export function checkCredentials(x: unknown): Credentials {
  const c = x as Partial<Credentials> | undefined;
  if (typeof c?.worker !== 'string' || typeof c.driver !== 'string' || !c.worker || !c.driver)
    throw new ProtocolError('malformed credentials from the head');
  return { worker: c.worker, driver: c.driver };
}

/** The head asks nothing; node daemons (and `troupe start` joining a machine) ask this. Only the node role may publish
 * it (identity by subject permission). */
export const CREDENTIALS_SUBJECT = 'troupe.head.credentials';

// JetStream: the streams behind the KV buckets and object stores, and what reading or writing one takes.
const KV = [
  'troupe-nodes',
  'troupe-jobs',
  'troupe-actors',
  'troupe-names',
  'troupe-submissions',
  'troupe-head-lease',
] as const;
type Kv = (typeof KV)[number];
const CHECKPOINTS = 'troupe-checkpoints';
const ENVS = 'troupe-runtime-envs';
const JOB_LOGS = 'troupe-job-logs';
const kvStream = (b: Kv) => `KV_${b}`;
const objStream = (b: string) => `OBJ_${b}`;

/** Reading a stream: its info, direct and stream gets, and ordered consumers (KV keys and watch, object reads), whose
 * messages come to the reader's inbox. */
function readStream(s: string): string[] {
  return [
    `$JS.API.STREAM.INFO.${s}`,
    `$JS.API.STREAM.MSG.GET.${s}`,
    `$JS.API.DIRECT.GET.${s}`,
    `$JS.API.DIRECT.GET.${s}.>`,
    `$JS.API.CONSUMER.CREATE.${s}`,
    `$JS.API.CONSUMER.CREATE.${s}.>`,
    `$JS.API.CONSUMER.INFO.${s}.*`,
    `$JS.API.CONSUMER.DELETE.${s}.*`,
    `$JS.API.CONSUMER.MSG.NEXT.${s}.*`,
    `$JS.FC.${s}.>`,
    `$JS.ACK.${s}.>`,
  ];
}
const readKv = (b: Kv) => readStream(kvStream(b));
/** A stream's info and its messages one by one (stream gets), without consumers: a consumer costs the servers memory
 * and a JetStream meta leader's work (a durable one, a raft group of its own). Job logs are read this way
 * (state/job-logs.ts, readJobLog). */
const getStream = (s: string) => [`$JS.API.STREAM.INFO.${s}`, `$JS.API.STREAM.MSG.GET.${s}`];
/** All Table's reads of a KV bucket take (get, list): only the roles that watch (head, node) make consumers on KV. */
const getKv = (b: Kv) => getStream(kvStream(b));
const writeKv = (b: Kv) => [`$KV.${b}.>`];
const readObj = (b: string) => readStream(objStream(b));
/** What putting an object takes besides its subjects: the store's info and the record of the object it replaces.
 * Only reading an object's bytes makes a consumer. */
const lookObj = (b: string) => getStream(objStream(b));
/** An object put publishes chunks and meta, and purges the chunks of the object it replaces. */
const writeObj = (b: string) => [`$O.${b}.>`, `$JS.API.STREAM.PURGE.${objStream(b)}`];
/** Creating a stream that exists only binds to it (runtime/state/buckets.ts). Only the head and node daemons may: a
 * stream gets the subjects its creator names, so one made by a job's code could capture the cluster's traffic. */
const create = (s: string) => `$JS.API.STREAM.CREATE.${s}`;

const jsInfo = '$JS.API.INFO';
const allKv = KV.flatMap(getKv);

/** Who a user is, as the permissions name it: its public key (its inbox), and for a worker, its process and node.
 * A scoped key's template names them `{{subject()}}` and `{{tag(…)}}` (TEMPLATE_USER); the tags are in the JWT a
 * node signs for each of its workers (bus/credential.ts issueUser). */
export interface UserNames {
  key: string;
  proc: string;
  node: string;
}
export const TEMPLATE_USER: UserNames = { key: '{{subject()}}', proc: '{{tag(proc)}}', node: '{{tag(node)}}' };

/** What a Core serves as process `proc`: its lease grants, its objects' locations, reads, borrows and copies, and a
 * worker's tasks, probes, actor starts and stops and actor calls. A driver's are under the same prefix. */
const ownProc = (proc: string) => `troupe.proc.${proc}.>`;

/** What drivers and workers (a Core: tasks, actors, objects) publish. */
const corePublish = [
  subjects.headHello,
  subjects.headLease,
  subjects.headActorCreate,
  subjects.headActorKill,
  subjects.headActorRestart,
  subjects.headActorsOfOwner,
  any(subjects.nodeRelease),
  any(subjects.procTask),
  any(subjects.procProbe),
  subjects.actorCall('*', '*', '*'),
  any(o.procLocate),
  any(o.procRead),
  any(o.procBorrow),
  any(o.procCopied),
  any(o.nodeRead),
  any(o.nodeFree),
  any(o.nodeSeal),
  any(o.nodeRestore),
  any(o.nodeFetch),
  any(o.nodeTouch),
  any(subjects.log),
  any((g) => subjects.collective(g, 0)).replace(/\.0$/, '.*'),
  any(subjects.trainProgress),
  jsInfo,
  ...allKv,
];

/** What drivers and workers subscribe to besides what they serve as a process. */
const coreSubscribe = [
  subjects.allObjects,
  subjects.evtNodeDied,
  subjects.evtWorkerDied,
  subjects.evtProcExited,
  subjects.evtActorState,
  any((g) => subjects.collective(g, 0)).replace(/\.0$/, '.*'),
  any(subjects.trainProgress),
];

const roles = (user: UserNames): Record<Role, Permissions> => ({
  // The cluster's authority: every troupe subject and every JetStream operation. It runs no user code.
  head: {
    publish: ['troupe.>', '$JS.API.>', '$KV.>', '$O.>', '$JS.FC.>', '$JS.ACK.>'],
    subscribe: ['troupe.>'],
  },
  // The join credential: a node daemon serves its own subjects, beats for itself and its workers, starts and stops
  // actors in its workers, reports their exits, fetches objects from other nodes, asks drivers for their envs and
  // runs submitted drivers (their log stream and records).
  node: {
    publish: [
      subjects.headHello,
      subjects.headStatus,
      subjects.headActorsOfOwner,
      CREDENTIALS_SUBJECT,
      subjects.headBusJoin,
      subjects.headBusUsers,
      any(subjects.hbNode),
      any(subjects.hbProc),
      any(subjects.procActorStart),
      any(subjects.procActorStop),
      subjects.evtProcExited,
      subjects.evtWorkerDied,
      any(o.nodeRead),
      any(subjects.jobShip),
      any(subjects.jobLog),
      jsInfo,
      // It writes its own record, and the records of the drivers it runs (jobs, submissions): no actor or name.
      ...KV.flatMap((b) => [...readKv(b), create(kvStream(b))]),
      ...writeKv('troupe-nodes'),
      ...writeKv('troupe-jobs'),
      ...writeKv('troupe-submissions'),
      ...readObj(ENVS),
      ...getStream(JOB_LOGS),
      create(JOB_LOGS),
      // Its workers' checkpoints, for the names each may use (node/worker-checkpoints.ts).
      ...readObj(CHECKPOINTS),
      ...writeObj(CHECKPOINTS),
    ],
    subscribe: ['troupe.node.*.>', subjects.hbProcAll],
  },
  // A user's script, and `troupe job submit|stop`.
  driver: {
    publish: [
      ...corePublish,
      // Only a driver registers a job (its root, its runtime env): the head keeps the first registration of an id.
      subjects.headJobRegister,
      subjects.headStatus,
      subjects.headTasks,
      any(subjects.nodeObjects),
      subjects.allObjects,
      any(subjects.hbProc),
      any(subjects.nodeJobSubmit),
      any(subjects.nodeJobStop),
      ...writeKv('troupe-jobs'),
      // It puts what nodes ask of its runtime env, and reads none of it (nodes do).
      ...lookObj(ENVS),
      ...writeObj(ENVS),
      ...getStream(JOB_LOGS),
      // No access to the checkpoint store: reading it is reading every job's (model weights), writing it is replacing
      // them. train() asks the head to remove its run's checkpoint when it returns.
      subjects.headCheckpointDelete,
    ],
    // A driver signs its own users (it holds its credential), so no tag names its process: any process's subjects
    // that a Core serves, but no worker's tasks, actor starts or actor calls.
    subscribe: [
      ...coreSubscribe,
      any(subjects.procLeaseGranted),
      any(o.procLocate),
      any(o.procRead),
      any(o.procBorrow),
      any(o.procCopied),
      any(subjects.log),
      any(subjects.jobShip),
    ],
  },
  // User code in a worker: a Core like a driver's, serving its own process's subjects only (its node signed its user
  // with its process and node: no other worker's tasks, calls or objects), and telling its own node it is blocked in
  // get(), and task events. No KV write, no node or head control, no JetStream consumer, no object store (its node
  // keeps its checkpoints and fetches its job's shipped code).
  worker: {
    publish: [...corePublish, subjects.nodeBlocked(user.node), subjects.evtTasks],
    subscribe: [...coreSubscribe, ownProc(user.proc)],
  },
  // Read-only: `status`, `list`, `memory`, `job list|status|logs`.
  cli: {
    publish: [
      subjects.headHello,
      subjects.headStatus,
      subjects.headTasks,
      any(subjects.nodeObjects),
      subjects.allObjects,
      jsInfo,
      ...allKv,
      ...getStream(JOB_LOGS),
    ],
    subscribe: [],
  },
});

/** The permissions of `role` for `user` (TEMPLATE_USER in a signing key's template): its role's, plus its own inbox,
 * and answering the requests it receives (replies go to the asker's inbox, whose name it learns only from the
 * request). */
export function permissionsFor(role: Role, user: UserNames): Permissions {
  const p = rolePermissions(role, user);
  return {
    publish: [...new Set([...p.publish, '_INBOX.>'])],
    subscribe: [...new Set([...p.subscribe, `${inboxPrefix(user.key)}.>`])],
  };
}

/** The role's own grants for `user`, without inboxes (tests check them). */
export function rolePermissions(role: Role, user: UserNames): Permissions {
  return roles(user)[role];
}
