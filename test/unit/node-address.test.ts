import test from 'ava';
import { isIP } from 'node:net';
import { UsageError } from '../../runtime/base/errors.ts';
import { checkIp, defaultAddress, externalAddresses, routedAddress } from '../../runtime/cluster/node-address.ts';

test('checkIp takes IPv4 and IPv6 addresses and refuses anything else, naming the flag', (t) => {
  t.is(checkIp('10.0.0.5', '--node-ip-address'), '10.0.0.5');
  t.is(checkIp(' fd00::1 ', '--node-ip-address'), 'fd00::1');
  for (const bad of ['10.0.0', 'host.example', '10.0.0.5:4222', '', '256.1.1.1']) {
    const e = t.throws(() => checkIp(bad, '--node-ip-address'), { instanceOf: UsageError });
    t.regex(e?.message ?? '', /^--node-ip-address must be an IP address/);
  }
});

test('the routed address to this machine is loopback; the default address is one of ours', async (t) => {
  t.is(await routedAddress('127.0.0.1'), '127.0.0.1');
  const d = defaultAddress();
  t.is(isIP(d), 4);
  t.true(d === '127.0.0.1' || externalAddresses().includes(d), d);
});
