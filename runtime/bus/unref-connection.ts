// A driver's NATS connection must not keep its process running: a script ends when its work does, and troupe then
// leaves the cluster (see base/keep-alive.ts and api/session.ts). nats.js has no option for this. Its
// @nats-io/transport-node NodeTransport keeps the net.Socket in `transport.socket` (a new transport and socket on
// each reconnect), and the ping timer of `protocol.heartbeats` is a plain setTimeout, re-armed by `_schedule()`
// after every ping. Unref'ing those two, again after each reconnect, is the least a driver can touch: the
// connection itself works as before, and the process stays alive while it awaits a reply (keep-alive's count).
import type { NatsConnection } from '@nats-io/nats-core';

interface Unrefable {
  unref(): unknown;
}
interface Heartbeats {
  timer?: Unrefable;
  _schedule(): void;
}
interface Internals {
  protocol?: { transport?: { socket?: Unrefable }; heartbeats?: Heartbeats };
}

/** Lets the process end while `nc` is open. False where nats.js's internals differ from what this expects: then the
 * connection keeps the process running, as any socket does, until it is closed. */
export function unrefConnection(nc: NatsConnection): boolean {
  const protocol = (nc as unknown as Internals).protocol;
  const heartbeats = protocol?.heartbeats;
  if (typeof protocol?.transport?.socket?.unref !== 'function' || typeof heartbeats?._schedule !== 'function')
    return false;
  protocol.transport.socket.unref();
  const schedule = heartbeats._schedule;
  heartbeats._schedule = function (this: Heartbeats) {
    schedule.call(this);
    this.timer?.unref();
  };
  heartbeats.timer?.unref();
  void (async () => {
    for await (const s of nc.status()) if (s.type === 'reconnect') protocol.transport?.socket?.unref();
  })().catch(() => undefined);
  return true;
}
