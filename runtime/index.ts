// troupe: the public API.
export { init, shutdown, put, get, wait, type InitOptions, type ClusterInfo } from './api.ts';
export { remote, type RemoteFunction, type RemoteArgs } from './remote-function.ts';
export type { TaskOptions, WaitOptions } from './client.ts';
export type { SchedulingStrategy, ResourceRequest } from './scheduler.ts';
export { ObjectRef } from '../object-store/object-ref.ts';
export {
  TroupeError, TaskError, InfeasibleError, SerializationError, GetTimeoutError, WorkerDiedError, ObjectLostError,
  ConnectionError, AuthenticationError, NoRespondersError, RequestTimeoutError, UsageError,
} from './errors.ts';
