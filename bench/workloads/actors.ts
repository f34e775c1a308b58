// Actor classes for the benchmarks. Workers import this module by URL.
import { remote, Actor } from 'troupe';

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
