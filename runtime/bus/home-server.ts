// Brings a connection back to its machine's own NATS server. A process of a machine that runs one of the bus's
// servers talks through it (nearestServersFirst), but nats.js stays wherever a connection landed: on another machine's
// server after its own refused a credential it had not learned yet (the users reach every server within 2 s), was
// down, or restarted. Its traffic then crosses a machine for nothing, and a server cut off there holds its requests.
import type { NatsConnection, ReconnectToServerHandler } from '@nats-io/nats-core';

/** How often a connection away from home checks whether it can go back. */
const HOME_CHECK_MS = 5000;

export class HomeServer {
  private readonly home: Set<string>;
  private homeward = false;
  private timer: NodeJS.Timeout | undefined;

  /** `urls`: this machine's servers, as nats.js URLs (nearestServersFirst's `local`). */
  constructor(urls: readonly string[]) {
    this.home = new Set(urls.map((u) => new URL(u).host));
  }

  /** nats.js's `reconnectToServer`: the dial after keep() decided to move goes home, any other is nats.js's choice. */
  readonly pick: ReconnectToServerHandler = (pool) => {
    if (!this.homeward) return null;
    this.homeward = false;
    return pool.find((s) => this.home.has(s.listen)) ?? null;
  };

  /** While `nc` talks through another machine's server, checks every few seconds with `probe` (a throwaway connection
   * to this machine's server with the same credential and TLS; it throws if that server cannot take us) and moves
   * once it can: a reconnect, which keeps the subscriptions, as after any lost server. */
  keep(nc: NatsConnection, probe: (host: string) => Promise<void>, moved: (host: string) => void): void {
    let checking = false;
    this.timer = setInterval(() => {
      if (checking || nc.isClosed() || this.home.has(nc.getServer())) return;
      checking = true;
      const [host] = this.home;
      probe(host!)
        .then(() => {
          if (nc.isClosed() || this.home.has(nc.getServer())) return;
          // nats.js drops a server from its pool when its first dial fails (and a driver's after 60 failed redials).
          const pool = nc.getServers().map((s) => s.listen);
          if (!pool.includes(host!)) nc.setServers([host!, ...pool]);
          this.homeward = true;
          moved(host!);
          return nc.reconnect();
        })
        .catch(() => undefined) // not yet: checked again later
        .finally(() => {
          checking = false;
        });
    }, HOME_CHECK_MS);
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
  }
}
