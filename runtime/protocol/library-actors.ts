// The libraries' own actor classes (actors/*/) by module URL: the door (actors/library/runtime.ts) starts them by
// name, and a worker loads these exact modules besides its job's own (runtime/worker/module-guard.ts).
import { moduleExt } from '../base/launch.ts';

/** Module URL of each library actor class, by class name. The layout of runtime/ and actors/ is the same in the
 * sources and in dist/, so these hold in both. */
export const LIBRARY_ACTORS = {
  Supervisor: new URL(`../../actors/supervision/supervisor${moduleExt}`, import.meta.url).href,
  ParamServer: new URL(`../../actors/train/param-server${moduleExt}`, import.meta.url).href,
  Replica: new URL(`../../actors/train/trainer-replica${moduleExt}`, import.meta.url).href,
  InferenceReplica: new URL(`../../actors/serve/inference-replica${moduleExt}`, import.meta.url).href,
} as const;
export type LibraryActorName = keyof typeof LIBRARY_ACTORS;
