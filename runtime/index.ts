// troupe: the public API (layer 5: it may import from every layer below).
export { init, shutdown, put, get, wait, type InitOptions, type ClusterInfo } from './api.ts';
export { remote, type ActorDecorator } from '../actors/remote.ts';
export type { RemoteFunction, RemoteArgs } from './remote-function.ts';
export { Actor, type ActorLifecycle } from '../actors/actor.ts';
export {
  startSupervisor, Supervisor, SupervisorHandle, type SupervisorSpec, type SupervisorOptions, type ChildSpec, type SupervisorChildSpec,
  type ChildInfo, type Strategy, type RestartType, type Backoff,
} from '../actors/supervisor.ts';
export type { ActorHandle } from '../actors/handle.ts';
export { joinGroup, CollectiveGroup, CollectiveError, type GroupOptions, type ReduceOp } from '../actors/collective.ts';
export { trainingJob, type TrainingJob, type TrainingJobSpec, type TrainingData, type TrainingMode, type OptimizerContext, type ScheduleContext } from '../actors/training-job.ts';
export { train, type TrainOptions, type TrainResult, type EpochResult } from '../actors/trainer.ts';
export { inferenceModel, type InferenceModel, type InferenceModelSpec } from '../actors/inference-model.ts';
export { serve, InferencePool, type ServeOptions, type PoolStats } from '../actors/inference-pool.ts';
export type { ReplicaStats, Sample } from '../actors/inference-replica.ts';
export type { BatchRecord } from '../actors/batcher.ts';
export { search, configs, grid, choice, uniform, logUniform, randInt, SearchError, Grid, Sampler, type Domain, type Space, type ConfigOf, type MetricOf, type SearchOptions, type SearchResult, type Trial } from '../actors/hyperparameter-search.ts';
export { chooseBackend, currentBackend, describeBackend, BACKENDS, type BackendChoice, type BackendCandidate } from './tensor-backend.ts';
export { getActor, kill } from '../actors/api.ts';
export type { TaskOptions, WaitOptions, ActorOptions } from './client.ts';
export type { SchedulingStrategy, ResourceRequest } from './scheduler.ts';
export { ObjectRef } from '../object-store/object-ref.ts';
export {
  TroupeError, TaskError, ActorDiedError, InfeasibleError, SerializationError, GetTimeoutError, WorkerDiedError, ObjectLostError,
  ConnectionError, AuthenticationError, NoRespondersError, RequestTimeoutError, UsageError, PendingCallsLimitError, ObjectStoreFullError,
} from './errors.ts';
