// The raw NATS reference for bulk transfer: serves ranges of a buffer over plain request/reply.
import { connect } from '@nats-io/transport-node';
import { referenceAuth } from './reference-user.ts';
import { parseAddress } from '../../runtime/base/config.ts';
import { referenceTls } from './references.ts';

const url = parseAddress(process.env.BULK_ADDRESS!);
const nc = await connect({
  servers: url,
  ...referenceAuth(process.env.BULK_TOKEN!),
  tls: referenceTls(url),
});
const data = new Uint8Array(Number(process.env.BULK_BYTES)).fill(7);
nc.subscribe(process.env.BULK_SUBJECT!, {
  callback: (_e, m) => {
    const v = new DataView(m.data.buffer, m.data.byteOffset, m.data.byteLength);
    const offset = v.getFloat64(0),
      length = v.getFloat64(8);
    m.respond(data.subarray(offset, offset + length));
  },
});
await nc.flush();
process.stdout.write('ready\n');
