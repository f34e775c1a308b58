// Which of this machine's addresses other machines reach it at: the interface routed to the head, or, for the head,
// the one with the default route. Nothing is sent to find out.
import { createSocket } from 'node:dgram';
import { readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { networkInterfaces } from 'node:os';
import { UsageError } from '../base/errors.ts';

/** `ip` if it is an IPv4 or IPv6 address, else a UsageError naming `flag`. */
export function checkIp(ip: string, flag: string): string {
  if (isIP(ip.trim()) === 0)
    throw new UsageError(`${flag} must be an IP address such as 10.0.0.5, got ${JSON.stringify(ip)}`);
  return ip.trim();
}

/** Every non-internal IPv4 address of this machine, in interface order. */
export function externalAddresses(): string[] {
  const out: string[] = [];
  for (const addrs of Object.values(networkInterfaces()))
    for (const a of addrs ?? []) if (a.family === 'IPv4' && !a.internal) out.push(a.address);
  return out;
}

/** The IPv4 address of the interface with the default route, else the first non-internal one, else 127.0.0.1. */
export function defaultAddress(): string {
  const iface = defaultRouteInterface();
  const onIt = iface ? networkInterfaces()[iface]?.find((a) => a.family === 'IPv4' && !a.internal) : undefined;
  return onIt?.address ?? externalAddresses()[0] ?? '127.0.0.1';
}

/** Linux: the interface of the IPv4 default route in /proc/net/route (destination 0, mask 0). */
function defaultRouteInterface(): string | undefined {
  let table: string;
  try {
    table = readFileSync('/proc/net/route', 'utf8');
  } catch {
    return undefined;
  }
  for (const line of table.split('\n').slice(1)) {
    const [iface, destination, , , , , , mask] = line.trim().split(/\s+/);
    if (destination === '00000000' && mask === '00000000') return iface;
  }
  return undefined;
}

/** The local address the kernel would send from to reach `host`: connect() on a UDP socket picks the route and sends
 * nothing. Falls back to defaultAddress() when there is no route (or `host` does not resolve). */
export function routedAddress(host: string, port = 4222): Promise<string> {
  return new Promise((resolve) => {
    const socket = createSocket(isIP(host) === 6 ? 'udp6' : 'udp4');
    let settled = false;
    const done = (address: string) => {
      if (settled) return;
      settled = true;
      socket.close();
      resolve(address);
    };
    socket.on('error', () => done(defaultAddress()));
    try {
      socket.connect(port, host, () => {
        try {
          const local = socket.address().address;
          // Unspecified: the connect did not pick a route (a name that did not resolve).
          done(local === '0.0.0.0' || local === '::' ? defaultAddress() : local);
        } catch {
          done(defaultAddress());
        }
      });
    } catch {
      done(defaultAddress());
    }
  });
}

/** Where the head's bus listens: `--host` if given; every interface when only `--node-ip-address` is (that address may
 * be one a NAT forwards, not one of this machine's); else loopback only, so that a cluster is never open to the
 * network unless asked. */
export function bindHost(host: string | undefined, nodeIp: string | undefined): string {
  return host ?? (nodeIp ? '0.0.0.0' : '127.0.0.1');
}
