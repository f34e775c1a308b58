// The Moleculer reference: one "echo" service in a process of its own, over Moleculer's NATS transporter.
import Moleculer from 'moleculer';
import { referenceAuth } from './reference-user.ts';
import { referenceTls } from './references.ts';

const url = process.env.BENCH_NATS_URL!;

const broker = new Moleculer.ServiceBroker({
  nodeID: `echo-${process.pid}`,
  transporter: {
    type: 'NATS',
    options: { url, ...referenceAuth(process.env.BENCH_NATS_TOKEN!), tls: referenceTls(url) },
  },
  logger: false,
});
broker.createService({ name: 'echo', actions: { echo: (ctx: Moleculer.Context<{ x: number }>) => ctx.params.x } });
await broker.start();
process.stdout.write('ready\n');
process.on('SIGTERM', () => void broker.stop().finally(() => process.exit(0)));
