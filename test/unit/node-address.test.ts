import test from 'ava';
import { isIP } from 'node:net';
import { UsageError } from '../../runtime/base/errors.ts';
import { isLoopback } from '../../runtime/base/config.ts';
import {
  bindHost,
  checkIp,
  defaultAddress,
  externalAddresses,
  routedAddress,
} from '../../runtime/cluster/node-address.ts';

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

test('the head binds loopback unless --host or --node-ip-address says otherwise', (t) => {
  t.is(bindHost(undefined, undefined), '127.0.0.1');
  t.is(bindHost('10.0.0.5', undefined), '10.0.0.5');
  t.is(bindHost(undefined, '203.0.113.7'), '0.0.0.0', 'a node IP alone may be a NAT address: every interface');
  for (const h of ['127.0.0.1', '127.1.2.3', '::1', '[::1]', 'localhost']) t.true(isLoopback(h), h);
  for (const h of ['0.0.0.0', '10.0.0.5', '::', 'fd00::1', 'example.com']) t.false(isLoopback(h), h);
});
