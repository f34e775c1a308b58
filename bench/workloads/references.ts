// What troupe is measured against, in the same run on the same nats-server: raw nats.js and Moleculer.
import type { ChildProcess } from 'node:child_process';
import Moleculer from 'moleculer';
import type { Bus } from '../../runtime/bus/bus.ts';
import { startReady, type Spawner } from './start-ready.ts';

/** Calls per second for `count` calls made `inFlight` at a time (1 = sync). */
export async function rate(
  count: number,
  inFlight: number,
  call: (i: number) => PromiseLike<unknown>,
): Promise<number> {
  await call(-1); // warm
  const t0 = performance.now();
  for (let i = 0; i < count; i += inFlight) {
    await Promise.all(Array.from({ length: Math.min(inFlight, count - i) }, (_, k) => call(i + k)));
  }
  return count / ((performance.now() - t0) / 1000);
}

/** Raw nats.js request/reply against an echo responder in this process's connection. */
export async function rawRequests(bus: Bus, count: number, inFlight: number): Promise<number> {
  const sub = bus.nc.subscribe('bench.echo', {
    callback: (_e, m) => {
      m.respond(m.data);
    },
  });
  const payload = new Uint8Array(8);
  try {
    return await rate(count, inFlight, () => bus.nc.request('bench.echo', payload, { timeout: 10_000 }));
  } finally {
    sub.unsubscribe();
  }
}

/** Raw nats.js publish to a subscriber on the same connection, messages per second delivered. */
export async function rawPubSub(bus: Bus, count: number): Promise<number> {
  let got = 0;
  let done!: () => void;
  const all = new Promise<void>((r) => {
    done = r;
  });
  const sub = bus.nc.subscribe('bench.pubsub', {
    callback: () => {
      if (++got === count) done();
    },
  });
  await bus.nc.flush();
  const payload = new Uint8Array(8);
  const t0 = performance.now();
  for (let i = 0; i < count; i++) {
    bus.nc.publish('bench.pubsub', payload);
    if (i % 10_000 === 0) await bus.nc.flush(); // let the subscriber keep up, as a real publisher would
  }
  await all;
  const r = count / ((performance.now() - t0) / 1000);
  sub.unsubscribe();
  return r;
}

export interface MoleculerReference {
  sync(count: number): Promise<number>;
  inFlight(count: number, n: number): Promise<number>;
  stop(): Promise<void>;
}

/** A Moleculer broker here calling the echo service in another process, both on our nats-server. */
export async function startMoleculer(url: string, token: string): Promise<MoleculerReference> {
  const service = await startMoleculerService(url, token);
  try {
    const caller = await moleculerCaller(url, token);
    return {
      ...caller,
      stop: async () => {
        await caller.stop();
        service.kill('SIGTERM');
      },
    };
  } catch (e) {
    service.kill('SIGTERM');
    throw e;
  }
}

/** The echo service (moleculer-service.ts) in a process of its own, here or where `on` starts it; ready once this
 * resolves. The caller kills it. */
export function startMoleculerService(url: string, token: string, on?: Spawner): Promise<ChildProcess> {
  return startReady(
    new URL('./moleculer-service.ts', import.meta.url),
    { BENCH_NATS_URL: url, BENCH_NATS_TOKEN: token },
    on,
  );
}

/** A broker in this process that calls the echo service, running already somewhere on the same nats-server. Its
 * stop() stops only this broker. */
export async function moleculerCaller(url: string, token: string): Promise<MoleculerReference> {
  const broker = new Moleculer.ServiceBroker({
    nodeID: `bench-${process.pid}`,
    transporter: { type: 'NATS', options: { url, token } },
    logger: false,
  });
  await broker.start();
  try {
    await broker.waitForServices('echo', 10_000);
  } catch (e) {
    await broker.stop();
    throw e;
  }
  const call = (i: number) => broker.call('echo.echo', { x: i });
  return {
    sync: (count) => rate(count, 1, call),
    inFlight: (count, n) => rate(count, n, call),
    stop: () => broker.stop(),
  };
}
