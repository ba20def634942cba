/**
 * The TCP proxies of one link (proxy.ts) in a process of its own. In the runner's process it shared an event
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
// One proxy per target port (a link to a Kafka cluster is one per broker); a command applies to all.
const proxies = await Promise.all(process.argv.slice(2).map((t) => TcpProxy.start(Number(t))));
process.on('disconnect', () => process.exit(0));
process.on('message', (m: ProxyCommand & { id: number }) => {
  for (const proxy of proxies) {
    if (m.op === 'partition') proxy.partition();
    else if (m.op === 'heal') proxy.heal();
    else if (m.op === 'latency') proxy.delayMs = m.delayMs;
    else if (m.op === 'loss') {
      proxy.lossRate = m.rate;
      proxy.rtoMs = m.rtoMs;
    }
  }
  if (m.op === 'close') {
    void Promise.all(proxies.map((p) => p.close())).finally(() => {
      send({ id: m.id });
      process.exit(0);
    });
    return;
  }
  send({ id: m.id });
});
send({ ports: proxies.map((p) => p.port) });
