// The raw NATS reference of the cross-host bench (bench/cross-host.ts), run on host B: fetches the bytes that a bulk
// server on host A serves, as rawNatsBulk does on one machine. Prints one JSON line: {"figure": "raw_bulk", …}.
import { hostname } from 'node:os';
import { Bus } from '../../runtime/bus/bus.ts';
import { fetchBulk } from './objects.ts';

const { BULK_ADDRESS, BULK_TOKEN, BULK_SUBJECT, BULK_BYTES, BULK_ROUNDS } = process.env;
const bus = await Bus.connect({ address: BULK_ADDRESS!, token: BULK_TOKEN!, name: 'bench-raw-bulk' });
try {
  const rate = await fetchBulk(bus, BULK_SUBJECT!, Number(BULK_BYTES), Number(BULK_ROUNDS));
  console.log(JSON.stringify({ figure: 'raw_bulk', raw_nats: rate, host: hostname() }));
} finally {
  await bus.close();
}
