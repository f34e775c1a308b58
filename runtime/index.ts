// troupe's package entry, the public API: it may import every room, and it is the only runtime file that imports
// actors/ (see ARCHITECTURE.md).
export { init, shutdown, put, get, wait, type InitOptions, type ClusterInfo } from './api/session.ts';
export { remote, type ActorDecorator } from '../actors/remote.ts';
export type { RemoteFunction, RemoteArgs } from './api/remote-function.ts';
export { Actor, type ActorLifecycle } from '../actors/actor.ts';
export {
  startSupervisor,
  Supervisor,
  SupervisorHandle,
  type SupervisorSpec,
  type SupervisorOptions,
  type ChildSpec,
  type SupervisorChildSpec,
  type ChildInfo,
  type Strategy,
  type RestartType,
  type Backoff,
} from '../actors/supervision/supervisor.ts';
export type { ActorHandle } from '../actors/handle.ts';
export {
  joinGroup,
  CollectiveGroup,
  CollectiveError,
  type GroupOptions,
  type ReduceOp,
} from '../actors/collective/collective.ts';
export {
  trainingJob,
  type TrainingJob,
  type TrainingJobSpec,
  type TrainingData,
  type TrainingMode,
  type OptimizerContext,
  type ScheduleContext,
} from '../actors/train/training-job.ts';
export { train, type TrainOptions, type TrainResult, type EpochResult } from '../actors/train/trainer.ts';
export { inferenceModel, type InferenceModel, type InferenceModelSpec } from '../actors/serve/inference-model.ts';
export type { LayersModelLike } from '../actors/library/layers-model.ts';
export { serve, InferencePool, type ServeOptions, type PoolStats } from '../actors/serve/inference-pool.ts';
export type { ReplicaStats, Sample } from '../actors/serve/inference-replica.ts';
export type { BatchRecord } from '../actors/serve/batcher.ts';
export {
  search,
  configs,
  grid,
  choice,
  uniform,
  logUniform,
  randInt,
  SearchError,
  Grid,
  Sampler,
  type Domain,
  type Space,
  type ConfigOf,
  type MetricOf,
  type SearchOptions,
  type SearchResult,
  type Trial,
} from '../actors/tune/hyperparameter-search.ts';
export {
  chooseBackend,
  currentBackend,
  describeBackend,
  BACKENDS,
  type BackendChoice,
  type BackendCandidate,
} from './tensor/backend.ts';
export { getActor, kill } from '../actors/api.ts';
export type { TaskOptions, WaitOptions, ActorOptions } from './core/core.ts';
export type { SchedulingStrategy, ResourceRequest } from './scheduling/placement.ts';
export { ObjectRef } from '../object-store/object-ref.ts';
export {
  TroupeError,
  TaskError,
  ActorDiedError,
  InfeasibleError,
  SerializationError,
  GetTimeoutError,
  WorkerDiedError,
  CallLostError,
  ObjectLostError,
  ConnectionError,
  AuthenticationError,
  TlsTrustError,
  HeadUnavailableError,
  NoRespondersError,
  RequestTimeoutError,
  UsageError,
  ModuleRefusedError,
  PendingCallsLimitError,
  ProtocolError,
  WorkerLimitError,
  ObjectStoreFullError,
  ClusterStoreFullError,
  DaemonStartError,
  VersionMismatchError,
} from './base/errors.ts';
