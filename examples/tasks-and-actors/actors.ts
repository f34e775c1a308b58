// An actor class in a module of its own: workers import it by URL.
import { remote, Actor } from 'troupe';

/** Keeps a running mean of what it is sent. One call at a time, in the order each caller sent them. */
@remote({ maxRestarts: 1 })
export class Mean extends Actor {
  private sum = 0;
  private count = 0;

  push(values: number[]): number {
    for (const v of values) this.sum += v;
    this.count += values.length;
    console.log(`now holding ${this.count} values`);
    return this.mean();
  }

  mean(): number {
    return this.count ? this.sum / this.count : 0;
  }
}
