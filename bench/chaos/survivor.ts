// The actor the chaos runs kill. Workers import this module by URL.
import { remote, Actor } from 'troupe';

@remote({})
export class Survivor extends Actor {
  private calls = 0;
  bump(): { calls: number; pid: number; node: string | undefined } {
    this.calls++;
    return { calls: this.calls, pid: process.pid, node: process.env.TROUPE_NODE_ID };
  }
}
