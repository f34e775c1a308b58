// Whether a node runs on the driver's machine and sees the driver's project directory itself: then it uses the root
// in place and nothing is copied. Simulated hosts in tests share a kernel (same boot id) but have their own host name
// and a private /tmp, so all three must match.
import { readFileSync, statSync } from 'node:fs';
import { hostname } from 'node:os';
import type { RuntimeEnvRef } from '../protocol/jobs.ts';

let boot: string | undefined;
function bootId(): string {
  if (boot === undefined) {
    try {
      boot = readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();
    } catch {
      boot = ''; // not Linux: the host name and the directory's identity decide
    }
  }
  return boot;
}

function dirId(dir: string): string | undefined {
  try {
    const st = statSync(dir, { bigint: true });
    return `${st.dev}:${st.ino}`;
  } catch {
    return undefined;
  }
}

/** The driver's side: where its root is. */
export function machineOrigin(root: string): NonNullable<RuntimeEnvRef['origin']> {
  return { hostname: hostname(), bootId: bootId(), rootId: dirId(root) ?? '0:0' };
}

/** The node's side: true when `root` here is the driver's own directory. TROUPE_SHIP_ALWAYS=1 (a test knob, read by
 * node daemons) answers false, so one machine can play a node on another. */
export function sameMachine(origin: RuntimeEnvRef['origin'], root: string): boolean {
  if (process.env.TROUPE_SHIP_ALWAYS === '1' || !origin) return false;
  return origin.hostname === hostname() && origin.bootId === bootId() && origin.rootId === dirId(root);
}
