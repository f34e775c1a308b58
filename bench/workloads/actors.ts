// Actor classes for the benchmarks. Workers import this module by URL.
import { remote, Actor, get, type ActorHandle } from 'troupe';

@remote({ isolation: 'shared' })
export class Tiny extends Actor {
  constructor(private readonly id: number) {
    super();
  }
  ping(): number {
    return this.id;
  }
}

@remote({})
export class Echo extends Actor {
  echo(x: number): number {
    return x;
  }
}

/** Ray's async actor for 1_1_actor_calls_concurrent: many calls interleave in one actor. */
@remote({ maxConcurrency: 16 })
export class AsyncEcho extends Actor {
  async echo(x: number): Promise<number> {
    return x;
  }
}

/** For n_n_actor_calls_async: each caller drives its own Echo, 1,000 calls at a time. */
@remote({})
export class Caller extends Actor {
  async drive(target: ActorHandle<Echo>, count: number): Promise<number> {
    for (let i = 0; i < count; i += 1000)
      await get(Array.from({ length: Math.min(1000, count - i) }, (_, k) => target.echo(i + k)));
    return count;
  }
}
