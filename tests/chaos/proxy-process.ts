/**
 * The TCP proxy (proxy.ts) in a process of its own. In the runner's process it shared an event
 * loop with every client: a loop lag of 300-700 ms (p99/max, measured at 200 msg/s) was added to
 * each database round trip of the proxied roles, so gateway-3's users had acks 30 times slower
 * than the others' with no fault injected (p50 10.7 s vs 0.3 s), and the "faults" ran all the time.
 * Controlled over IPC; exits when the runner goes away (its IPC channel closes).
 */
import { TcpProxy } from './proxy.js';

export type ProxyCommand =
  | { op: 'partition' }
  | { op: 'heal' }
  | { op: 'latency'; delayMs: number }
  | { op: 'loss'; rate: number; rtoMs: number }
  | { op: 'close' };

const send = (m: unknown) => process.send?.(m);
const target = Number(process.argv[2]);
const proxy = await TcpProxy.start(target);
process.on('disconnect', () => process.exit(0));
process.on('message', (m: ProxyCommand & { id: number }) => {
  if (m.op === 'partition') proxy.partition();
  else if (m.op === 'heal') proxy.heal();
  else if (m.op === 'latency') proxy.delayMs = m.delayMs;
  else if (m.op === 'loss') {
    proxy.lossRate = m.rate;
    proxy.rtoMs = m.rtoMs;
  } else if (m.op === 'close') {
    void proxy.close().finally(() => {
      send({ id: m.id });
      process.exit(0);
    });
    return;
  }
  send({ id: m.id });
});
send({ port: proxy.port });
