// Keeps the store of shipped code (troupe-runtime-envs) from growing for ever: every change to a project uploads a new
// archive, and every new package version a new package. The head deletes what no job it knows uses (a job is known
// while it runs and for TROUPE_JOB_RETENTION_MS after it ends, or while a detached actor of it lives).
import type { ObjectStore } from '@nats-io/obj';
import type { RuntimeEnvRef } from '../protocol/jobs.ts';
import { checkManifest, objectNames } from './manifest.ts';
import { getBytes } from './env-store.ts';

export interface EnvSweep {
  deleted: string[];
  freedBytes: number;
}

/** Deletes the objects of the store that none of `inUse()` names and that are older than `graceMs` (younger ones may
 * be a job's on their way: `troupe job submit` uploads before its driver registers the job). `inUse` is asked again
 * just before each delete, so a job registered while the sweep runs keeps its objects. A manifest that cannot be
 * read stops the sweep: the packages it names cannot be told apart from unused ones. */
export async function sweepEnvStore(
  os: ObjectStore,
  inUse: () => RuntimeEnvRef[],
  o: { graceMs: number; now?: number; manifests?: Map<string, string[]> },
): Promise<EnvSweep> {
  const now = o.now ?? Date.now();
  // Manifests are named by their content: what one names never changes, so it is read once.
  const manifests = o.manifests ?? new Map<string, string[]>();
  const named = async (): Promise<Set<string>> => {
    const out = new Set<string>();
    for (const env of inUse()) {
      if (env.workingDir) out.add(objectNames.workingDir(env.workingDir.sha256));
      if (!env.packages) continue;
      const name = objectNames.manifest(env.packages.sha256);
      out.add(name);
      let objects = manifests.get(name);
      if (!objects) {
        const bytes = await getBytes(os, name);
        if (!bytes) throw new Error(`manifest ${name} of a job is not in the store`);
        objects = checkManifest(JSON.parse(new TextDecoder().decode(bytes))).packages.flatMap((p) =>
          p.source.kind === 'store' ? [p.source.object] : [],
        );
        manifests.set(name, objects);
      }
      for (const object of objects) out.add(object);
    }
    return out;
  };
  const old = (await os.list()).filter((i) => !i.deleted && now - Date.parse(i.mtime) >= o.graceMs);
  const sweep: EnvSweep = { deleted: [], freedBytes: 0 };
  if (old.length === 0) return sweep;
  let keep = await named();
  for (const info of old) {
    if (keep.has(info.name)) continue;
    keep = await named(); // a job registered meanwhile
    if (keep.has(info.name)) continue;
    await os.delete(info.name);
    sweep.deleted.push(info.name);
    sweep.freedBytes += info.size;
  }
  return sweep;
}
