// Validation of actor options, where they are written (the decorator, .options()).
import { normalizeRequest, checkStrategy } from '../runtime/scheduling/placement.ts';
import type { ActorOptions } from '../runtime/core/core.ts';
import { UsageError } from '../runtime/base/errors.ts';
import { keysOf } from '../runtime/base/option-keys.ts';

/** Every option of ActorOptions but className, which the runtime sets. */
const KEYS = keysOf<Omit<ActorOptions, 'className'>>({
  numCpus: true,
  numGpus: true,
  memory: true,
  resources: true,
  schedulingStrategy: true,
  maxRestarts: true,
  maxTaskRetries: true,
  maxConcurrency: true,
  name: true,
  namespace: true,
  lifetime: true,
  isolation: true,
  crashOnError: true,
  checkpointEvery: true,
  maxPendingCalls: true,
});

export function checkActorOptions(opts: ActorOptions): void {
  if (typeof opts !== 'object' || opts === null) throw new UsageError('actor options must be an object');
  for (const k of Object.keys(opts))
    if (!KEYS.has(k)) throw new UsageError(`unknown actor option '${k}' (known: ${[...KEYS].join(', ')})`);
  normalizeRequest(
    { numCpus: opts.numCpus ?? 0, numGpus: opts.numGpus, memory: opts.memory, resources: opts.resources },
    0,
  );
  checkStrategy(opts.schedulingStrategy);
  for (const k of ['maxRestarts', 'maxTaskRetries'] as const) {
    const v = opts[k];
    if (v !== undefined && (!Number.isInteger(v) || v < -1))
      throw new UsageError(`${k} must be -1 (unlimited) or a whole number >= 0, got ${v}`);
  }
  if (
    opts.maxPendingCalls !== undefined &&
    (!Number.isInteger(opts.maxPendingCalls) || (opts.maxPendingCalls < 1 && opts.maxPendingCalls !== -1))
  ) {
    throw new UsageError(`maxPendingCalls must be -1 (no limit) or a whole number >= 1, got ${opts.maxPendingCalls}`);
  }
  if (opts.crashOnError !== undefined && typeof opts.crashOnError !== 'boolean')
    throw new UsageError(`crashOnError must be true or false, got ${JSON.stringify(opts.crashOnError)}`);
  const every = opts.checkpointEvery;
  if (every !== undefined) {
    const bad =
      typeof every !== 'object' ||
      every === null ||
      Object.keys(every).some((k) => k !== 'calls' && k !== 'seconds') ||
      (every.calls !== undefined && (!Number.isInteger(every.calls) || every.calls < 1)) ||
      (every.seconds !== undefined && !(typeof every.seconds === 'number' && every.seconds > 0)) ||
      (every.calls === undefined && every.seconds === undefined);
    if (bad)
      throw new UsageError(
        `checkpointEvery must be { calls?: whole number >= 1, seconds?: number > 0 } with at least one, got ` +
          `${JSON.stringify(every)}`,
      );
  }
  if (opts.maxConcurrency !== undefined && (!Number.isInteger(opts.maxConcurrency) || opts.maxConcurrency < 1)) {
    throw new UsageError(`maxConcurrency must be a whole number >= 1, got ${opts.maxConcurrency}`);
  }
  if (opts.lifetime !== undefined && opts.lifetime !== 'detached')
    throw new UsageError(`lifetime must be 'detached' (or left out), got ${JSON.stringify(opts.lifetime)}`);
  if (opts.isolation !== undefined && opts.isolation !== 'process' && opts.isolation !== 'shared')
    throw new UsageError(`isolation must be 'process' or 'shared', got ${JSON.stringify(opts.isolation)}`);
  for (const k of ['name', 'namespace'] as const) {
    const v = opts[k];
    if (v !== undefined && (typeof v !== 'string' || !/^[A-Za-z0-9_-]{1,100}$/.test(v)))
      throw new UsageError(`${k} must be 1-100 letters, digits, '_' or '-', got ${JSON.stringify(v)}`);
  }
}
