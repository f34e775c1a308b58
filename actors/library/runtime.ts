// The one door from troupe's libraries (supervision, collective, train, serve, tune) into the runtime: what they may
// do is listed here, so the runtime can change behind it. The architecture test keeps them from importing the runtime
// any other way. Users import the package entry instead.
import { currentCore, type Core, type ActorOptions, type FunctionRef } from '../../runtime/core/core.ts';
import type { Bus } from '../../runtime/bus/bus.ts';
import type { ActorInfo } from '../../runtime/protocol/actors.ts';
import type { Checkpoints } from '../../runtime/state/checkpoints.ts';
import { jobCheckpointName } from '../../runtime/protocol/checkpoints.ts';
import { UsageError } from '../../runtime/base/errors.ts';
import { LIBRARY_ACTORS, type LibraryActorName } from '../../runtime/protocol/library-actors.ts';
import { libraryActor as markRemote, type ActorClass } from '../actor.ts';
import { makeHandle, HandleData, type ActorHandle } from '../handle.ts';

export {
  TroupeError,
  TaskError,
  UsageError,
  ActorDiedError,
  NoRespondersError,
  RequestTimeoutError,
  registerErrorClass,
  asError,
} from '../../runtime/base/errors.ts';
export { subjects } from '../../runtime/protocol/subjects.ts';
// Messages from the bus are checked before a library acts on them, as the runtime's are.
export { event, request, guardCheck } from '../../runtime/protocol/check.ts';
export { checkActorState } from '../../runtime/protocol/schemas.ts';
export { defineSite, type Definition } from '../../runtime/base/definition-site.ts';
export { chunkSize } from '../../object-store/transfer.ts';
export type { ActorInfo, ActorStateEvent } from '../../runtime/protocol/actors.ts';
export type { Bus, Subscription } from '../../runtime/bus/bus.ts';
export type { RemoteArgs, RemoteFunction } from '../../runtime/api/remote-function.ts';
export type { ActorOptions, FunctionRef };

/** Throws UsageError when troupe is not initialized in this process. */
export function requireInit(): void {
  currentCore();
}

/** This process's bus (a driver's or a worker's). */
export function bus(): Bus {
  return currentCore().bus;
}

/** Creates an actor of a user's class; returns its id at once. */
export const createActor: Core['createActor'] = (...a) => currentCore().createActor(...a);
/** Imports a module of the job by the URL the driver named (a spec's): in a worker, checked and from its copy of the
 * project when the project was shipped to its node. */
export const importJobModule = (url: string) => currentCore().importModule(url);
/** A module URL of this process as the job's driver names it (a worker in a copy names the driver's path). */
export const sharedUrl = (url: string) => currentCore().shareUrl(url);
/** Ends an actor: for good (noRestart), or as a crash its restart policy answers. */
export const killActor: Core['killActor'] = (...a) => currentCore().killActor(...a);
/** A supervisor restarts a child the head holds for it. */
export const restartActor: Core['restartActor'] = (...a) => currentCore().restartActor(...a);

/** An actor's record in the cluster state, if it has one. */
export async function actorInfo(actorId: string): Promise<ActorInfo | undefined> {
  return (await currentCore().gcs()).actors.get(actorId);
}

/** The checkpoints this process may use (a worker: through its node, those of its actors and of its job). */
export function checkpoints(): Promise<Checkpoints> {
  return currentCore().checkpoints();
}

/** The name of a checkpoint of this process's job rather than of one actor (a training run's). */
export function jobCheckpoint(name: string): string {
  const job = currentCore().job;
  if (!job) throw new UsageError('a job checkpoint needs init() first');
  return jobCheckpointName(job.id, name);
}

/** The actor classes the libraries start themselves, by class name (LIBRARY_ACTORS): their modules are known, so a
 * driver can start one without loading the module (and tfjs with it), and a worker loads exactly these modules
 * besides its job's own. libraryActor() checks each entry against its class. */
export { LIBRARY_ACTORS, type LibraryActorName };

/** Where workers load a library actor class from. */
export function libraryActorRef(name: LibraryActorName): FunctionRef {
  return { url: LIBRARY_ACTORS[name], exportName: name, name };
}

/** Makes one of the libraries' own classes remote, at the end of its module: `libraryActor(Replica, import.meta.url)`.
 * Fails at load when the table above names another module for it, so a moved file cannot go unnoticed. */
export function libraryActor(cls: ActorClass, moduleUrl: string): void {
  const url = Object.hasOwn(LIBRARY_ACTORS, cls.name) ? LIBRARY_ACTORS[cls.name as LibraryActorName] : undefined;
  if (url !== moduleUrl)
    throw new UsageError(
      `library actor ${cls.name} is defined in ${moduleUrl}, but actors/library/runtime.ts names ${url}`,
    );
  const ref = libraryActorRef(cls.name as LibraryActorName);
  markRemote(cls, ref.url, ref.exportName);
}

/** Starts one of the libraries' own actors (a replica, a parameter server, a supervisor) and returns its handle. */
export function startLibraryActor<T extends object>(
  name: LibraryActorName,
  args: unknown[],
  options: ActorOptions,
  maxTaskRetries = 0,
): ActorHandle<T> {
  const id = currentCore().createActor(libraryActorRef(name), args, { ...options, className: name });
  return makeHandle<T>(new HandleData(id, name, maxTaskRetries));
}
