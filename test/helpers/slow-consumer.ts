// Losing a message on purpose, for real: stop (SIGSTOP) the process subscribed to a subject, then call this. The junk
// fills the kernel's socket buffers to that process (what they hold is still read after a cut), and what is published
// to it next waits in nats-server's queue for it, which the server drops when it cuts the process off: after a write
// to it has waited 10 s (write_deadline), saying so in its log. Less than the 64 MB the server queues for one client
// before it cuts it off at once (before the message to lose is even sent).
import { readFileSync, statSync } from 'node:fs';
import type { Bus } from '../../runtime/bus/bus.ts';

/** Fills the way to whoever serves `subject` (stopped), so that the next message to it queues in nats-server. */
async function fillTheWay(bus: Bus, subject: string): Promise<void> {
  const max = (f: string) => Number(readFileSync(`/proc/sys/net/ipv4/${f}`, 'utf8').trim().split(/\s+/)[2]);
  const mb = Math.min(Math.ceil((max('tcp_rmem') + max('tcp_wmem')) / 1e6) + 16, 60);
  const junk = new Uint8Array(1e6); // under the 1 MB max_payload, with its header
  for (let i = 0; i < mb; i++) bus.publish(subject, junk);
  await bus.flush();
}

/** Waits until the log of nats-server (`log`), past its first `from` bytes, says that it cut a slow consumer off (it
 * then drops what it had queued for it). */
async function cutOff(log: string, from: number): Promise<void> {
  for (const until = Date.now() + 30_000; Date.now() < until; await new Promise((r) => setTimeout(r, 100)))
    if (/slow consumer detected/i.test(readFileSync(log, 'utf8').slice(from))) return;
  throw new Error(`nats-server did not cut the stopped process off within 30 s (its log: ${log})`);
}

/** Loses what `send()` sends to process `pid`, which serves `subject`: stops it, fills the way to it (on `bus`, a
 * connection of its own), sends, waits until nats-server (whose log is `natsLog`) has cut it off, then resumes it, on
 * every exit path. Gives back what send() returned, not awaited. */
export async function loseOnTheWay<T>(
  bus: Bus,
  natsLog: string,
  pid: number,
  subject: string,
  send: () => T,
): Promise<{ sent: T }> {
  process.kill(pid, 'SIGSTOP');
  try {
    const from = statSync(natsLog).size;
    await fillTheWay(bus, subject);
    const sent = send();
    await cutOff(natsLog, from);
    return { sent };
  } finally {
    process.kill(pid, 'SIGCONT');
  }
}
