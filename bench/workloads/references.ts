// What troupe is measured against, in the same run on the same nats-server: raw nats.js and Moleculer.
import type { ChildProcess } from 'node:child_process';
import Moleculer from 'moleculer';
import { referenceAuth } from './reference-user.ts';
import { tlsOptions, type Bus } from '../../runtime/bus/bus.ts';
import { clusterCa } from '../../runtime/base/config.ts';
import { startReady, type Spawner } from './start-ready.ts';

/** The TLS options troupe's own connections to `url` use (the CA this machine saved for it), for the references'
 * clients: on a TLS cluster they pay what troupe pays. Undefined on a plain bus. */
export function referenceTls(url: string): ReturnType<typeof tlsOptions> | undefined {
  const ca = clusterCa(url);
  return ca ? tlsOptions(ca, url) : undefined;
}

/** Calls per second for `count` calls made `inFlight` at a time (1 = sync). With `latencies`, calls made one at a
 * time also leave there how long each took (ms), for a focused look at where a sync rate goes (see latencyOf). */
export async function rate(
  count: number,
  inFlight: number,
  call: (i: number) => PromiseLike<unknown>,
  latencies?: number[],
): Promise<number> {
  await call(-1); // warm
  const t0 = performance.now();
  if (latencies && inFlight === 1) {
    for (let i = 0; i < count; i++) {
      const t = performance.now();
      await call(i);
      latencies.push(performance.now() - t);
    }
  } else {
    for (let i = 0; i < count; i += inFlight) {
      await Promise.all(Array.from({ length: Math.min(inFlight, count - i) }, (_, k) => call(i + k)));
    }
  }
  return count / ((performance.now() - t0) / 1000);
}

/** Percentiles of call times (ms), and the share of all the time that went to calls over 2 ms: a rate made of
 * steady calls, or held back by a few stalls (a collection, a busy machine). */
export interface Latency {
  p10: number;
  p50: number;
  p90: number;
  p99: number;
  max: number;
  slowShare: number;
}

export function latencyOf(ms: number[]): Latency {
  const s = [...ms].sort((a, b) => a - b);
  const at = (q: number) => s[Math.min(s.length - 1, Math.floor(s.length * q))];
  const total = s.reduce((a, b) => a + b, 0);
  const slow = s.filter((x) => x > 2).reduce((a, b) => a + b, 0);
  return { p10: at(0.1), p50: at(0.5), p90: at(0.9), p99: at(0.99), max: s[s.length - 1], slowShare: slow / total };
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
  sync(count: number, latencies?: number[]): Promise<number>;
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
    transporter: { type: 'NATS', options: { url, ...referenceAuth(token), tls: referenceTls(url) } },
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
    sync: (count, latencies) => rate(count, 1, call, latencies),
    inFlight: (count, n) => rate(count, n, call),
    stop: () => broker.stop(),
  };
}
