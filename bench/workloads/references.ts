// What troupe is measured against, in the same run on the same nats-server: raw nats.js and Moleculer.
import { spawn, type ChildProcess } from 'node:child_process';
import Moleculer from 'moleculer';
import type { Bus } from '../../runtime/bus/bus.ts';

/** Calls per second for `count` calls made `inFlight` at a time (1 = sync). */
export async function rate(count: number, inFlight: number, call: (i: number) => Promise<unknown>): Promise<number> {
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
  const service: ChildProcess = spawn(
    process.execPath,
    ['--import', 'tsx', new URL('./moleculer-service.ts', import.meta.url).pathname],
    {
      env: { ...process.env, BENCH_NATS_URL: url, BENCH_NATS_TOKEN: token },
      stdio: ['ignore', 'pipe', 'inherit'],
    },
  );
  await new Promise<void>((resolve, reject) => {
    service.stdout!.once('data', () => resolve());
    service.once('exit', (code) => reject(new Error(`the Moleculer service exited with ${code}`)));
  });
  const broker = new Moleculer.ServiceBroker({
    nodeID: `bench-${process.pid}`,
    transporter: { type: 'NATS', options: { url, token } },
    logger: false,
  });
  await broker.start();
  await broker.waitForServices('echo', 10_000);
  const call = (i: number) => broker.call('echo.echo', { x: i });
  return {
    sync: (count) => rate(count, 1, call),
    inFlight: (count, n) => rate(count, n, call),
    stop: async () => {
      await broker.stop();
      service.kill('SIGTERM');
    },
  };
}
