// A driver's heartbeat: node daemons and the head watch it to keep the driver's leases and actors. Workers need
// none of their own: their node daemon beats for each while its process lives.
import { Worker } from 'node:worker_threads';
import type { KeyObject } from 'node:crypto';
import type { Bus } from '../bus/bus.ts';
import { PROC_HEARTBEAT_MS, subjects } from '../protocol/subjects.ts';
import { hostsOf, nearestServersFirst, pingIntervalFor } from '../base/config.ts';
import { isCredential, parseCredential, signUser } from '../bus/credential.ts';

/** The thread's own user, signed here: its JWT, and its key to sign the server's nonce with (a KeyObject passes to a
 * thread; a function would not). */
function threadUser(credential: string, name: string): { jwt: string; privateKey: KeyObject } {
  const { jwt, user } = signUser(parseCredential(credential), name);
  return { jwt, privateKey: user.privateKey };
}

/** Beats from a thread with its own connection, so a driver busy computing for longer than the silence timeout
 * keeps its actors. Returns the stop. */
export function startDriverHeartbeat(bus: Bus, o: { procId: string; address: string; token: string }): () => void {
  const subject = subjects.hbProc(o.procId);
  const beat = () => {
    if (!bus.isClosed) bus.publish(subject, {});
  };
  beat(); // at once, before the thread is up
  const nearest = nearestServersFirst(o.address);
  const name = `troupe-heartbeat-${process.pid}`;
  const thread = new Worker(new URL('./heartbeat-thread.mjs', import.meta.url), {
    workerData: {
      ...nearest,
      pingInterval: pingIntervalFor(nearest.servers),
      // A credential: a user of the thread's own, so it signs natively as the bus does.
      ...(isCredential(o.token) ? { user: threadUser(o.token, name) } : { token: o.token }),
      tlsCa: bus.tlsCa, // the thread verifies the server as the bus does
      tlsHosts: hostsOf(o.address),
      name,
      subject,
      everyMs: PROC_HEARTBEAT_MS,
    },
    execArgv: [],
  });
  thread.unref();
  // Without the thread the event loop beats: a busy loop may delay those, but that is better than none.
  let fallback: NodeJS.Timeout | undefined;
  thread.on('error', (e) => {
    console.error(`troupe: heartbeat thread failed (${e.message}); beating from the main thread`);
    fallback ??= setInterval(beat, PROC_HEARTBEAT_MS);
    fallback.unref();
  });
  return () => {
    clearInterval(fallback);
    void thread.terminate();
  };
}
