// The actor that reads objects on host B for the cross-host bench (bench/cross-host.ts). Workers import it by URL.
import { hostname } from 'node:os';
import { remote, Actor, get, type ObjectRef } from 'troupe';

@remote({})
export class Reader extends Actor {
  where(): string {
    return hostname();
  }

  /** Seconds that get() of the object took here. The ref comes nested in an array, so it arrives unread. */
  async read(refs: [ObjectRef<Float32Array>], length: number): Promise<number> {
    const t0 = performance.now();
    const data = await get(refs[0]);
    const secs = (performance.now() - t0) / 1000;
    if (data.length !== length) throw new Error(`read ${data.length} floats of ${length}`);
    return secs;
  }
}
