// Load generator worker: holds a share of the connections, sends its share of the open-loop schedule,
// records end-to-end latency on every recipient into an HDR histogram, reports to the parent over IPC.
import type { Client, ClientEvents, Payload } from './clients/base.js';
import { RealChatClient } from './clients/realchat.js';
import { CentrifugoClient } from './clients/centrifugo.js';
import { SocketIOClient } from './clients/socketio.js';
import { newHist, recordMs, encodeHist } from './lib/hist.js';
import { dueCount, slotOf } from './lib/schedule.js';
import { nowMs, sleep } from './lib/clock.js';
import type { ConnSpec, ParentMsg, SlotSpec, WorkerInit, WorkerMsg, WorkerReport, ConnectResult } from './lib/types.js';

const post = (m: WorkerMsg): void => {
  process.send?.(m);
};

let init: WorkerInit | undefined;
const clients: Client[] = [];
const byIdx = new Map<number, Client>();
const hist = newHist();
const errors: Record<string, number> = {};
const err = (code: string): void => {
  errors[code] = (errors[code] ?? 0) + 1;
};
let sent = 0,
  acked = 0,
  delivered = 0,
  duplicates = 0,
  gaps = 0;
let firstRecv = 0,
  lastRecv = 0;
const ackedPerConv = new Map<string, number>();
// per connection, per conversation: [last sequence seen, unique count]
const seen = new Map<number, Map<string, [number, number]>>();
// sends awaiting an ack: key -> [conn idx, conv, payload]
const pending = new Map<string, [number, string, Payload]>();
const waiting: Array<[number, string, string, Payload]> = []; // sends due while the sender was down
let payloadPad = '';
let stormState: { dropped: number; reopened: number; resumed_ms: number[]; reopen_ms: number[]; failed: number } | undefined;
let resendOnReconnect = false;

function events(idx: number): ClientEvents {
  return {
    onMessage(conv, seq, p): void {
      const now = nowMs();
      let m = seen.get(idx);
      if (!m) {
        m = new Map();
        seen.set(idx, m);
      }
      const st = m.get(conv) ?? [0, 0];
      if (typeof seq === 'number') {
        if (seq <= st[0]) {
          duplicates++;
          return;
        }
        if (st[0] > 0 && seq > st[0] + 1) gaps++;
        st[0] = seq;
      }
      st[1]++;
      m.set(conv, st);
      delivered++;
      if (typeof p.t === 'number') recordMs(hist, now - p.t);
      if (firstRecv === 0) firstRecv = now;
      lastRecv = now;
    },
    onAck(key, duplicate): void {
      const pend = pending.get(key);
      if (!pend) {
        if (duplicate) err('duplicate_ack');
        return;
      }
      pending.delete(key);
      acked++;
      ackedPerConv.set(pend[1], (ackedPerConv.get(pend[1]) ?? 0) + 1);
    },
    onError(code): void {
      err(code);
    },
    onClosed(code): void {
      err(`closed_${code}`);
    },
  };
}

function makeClient(spec: ConnSpec): Client {
  const i = init!;
  const ev = events(spec.idx);
  const url = spec.url ?? i.url;
  switch (i.target) {
    case 'realchat':
      return new RealChatClient(spec.idx, url, spec.userId, spec.token, spec.convs, spec.localAddress, ev, false);
    case 'ws':
      return new RealChatClient(spec.idx, url, spec.userId, spec.token, spec.convs, spec.localAddress, ev, true);
    case 'centrifugo':
      return new CentrifugoClient(spec.idx, url, spec.userId, spec.token, spec.convs, spec.localAddress, ev);
    case 'socketio':
      return new SocketIOClient(spec.idx, url, spec.userId, spec.token, spec.convs, spec.localAddress, ev);
  }
}

/** Open connections [from, to) of the local list at ratePerS, with bounded concurrency. */
async function ramp(list: Client[], ratePerS: number, resume: boolean, onOpen?: (c: Client, ms: number) => void): Promise<ConnectResult> {
  const res: ConnectResult = { attempted: 0, open: 0, failed: 0, first_attempt_ms: nowMs(), last_open_ms: 0 };
  const interval = 1000 / Math.max(1, ratePerS);
  const maxInFlight = 512;
  let inFlight = 0;
  const start = nowMs();
  const all: Array<Promise<void>> = [];
  for (let i = 0; i < list.length; i++) {
    const target = start + i * interval;
    const wait = target - nowMs();
    if (wait > 1) await sleep(wait);
    while (inFlight >= maxInFlight) await sleep(2);
    const c = list[i]!;
    res.attempted++;
    inFlight++;
    const t0 = nowMs();
    const attempt = (): Promise<void> =>
      c.connect(resume, 20_000).catch((e: unknown) => {
        // an explicit local port may be taken (e.g. a wildcard listener): let the kernel pick one
        if (c.localPort !== undefined && (e as NodeJS.ErrnoException).code === 'EADDRINUSE') {
          c.localPort = undefined;
          err('local_port_in_use_retried');
          return c.connect(resume, 20_000);
        }
        throw e;
      });
    // A reconnecting client retries like a real one (the SDK): full-jitter backoff, bounded attempts.
    // A server shedding load during a storm refuses some hellos with `unavailable`.
    const withRetries = async (): Promise<void> => {
      for (let k = 0; ; k++) {
        try {
          return await attempt();
        } catch (e) {
          if (!resume || k >= 7) throw e;
          err('reconnect_retried');
          await sleep(Math.random() * Math.min(4000, 200 * 2 ** k));
        }
      }
    };
    all.push(
      withRetries()
        .then(
          () => {
            res.open++;
            res.last_open_ms = nowMs();
            onOpen?.(c, res.last_open_ms - t0);
          },
          (e: unknown) => {
            res.failed++;
            err(
              `connect_${(e instanceof Error ? e.message : String(e))
                .split(' ')[0]!
                .replace(/[^a-zA-Z0-9_]/g, '_')
                .slice(0, 40)}`,
            );
          },
        )
        .finally(() => {
          inFlight--;
        }),
    );
  }
  await Promise.all(all);
  return res;
}

function doSend(c: Client, conv: string, key: string, p: Payload): void {
  if (c.send(conv, key, p)) {
    sent++;
    pending.set(key, [c.idx, conv, p]);
  } else waiting.push([c.idx, conv, key, p]);
}

async function runSends(startMs: number, rate: number, total: number, slots: SlotSpec[]): Promise<void> {
  const local = slots.map((s) => byIdx.get(s.conn));
  let next = 0;
  const runId = init!.runId;
  while (next < total) {
    const now = nowMs();
    const due = dueCount(startMs, rate, total, now);
    for (; next < due; next++) {
      const c = local[slotOf(next, slots.length)];
      if (!c) continue;
      const slot = slots[slotOf(next, slots.length)]!;
      // intended send time, not actual: no coordinated omission
      const p: Payload = { t: startMs + (next * 1000) / rate, id: `m${next}` };
      if (payloadPad) p.pad = payloadPad;
      doSend(c, slot.conv, `perf-${runId}-${next}`, p);
    }
    // retry sends that were due while their sender was down
    if (waiting.length > 0) {
      const w = waiting.splice(0, waiting.length);
      for (const [idx, conv, key, p] of w) doSend(byIdx.get(idx)!, conv, key, p);
    }
    const nextAt = startMs + (next * 1000) / rate;
    const wait = nextAt - nowMs();
    await sleep(Math.max(0, Math.min(wait, 50)));
  }
  // flush any last waiting sends for a little while
  const until = nowMs() + 5000;
  while (waiting.length > 0 && nowMs() < until) {
    const w = waiting.splice(0, waiting.length);
    for (const [idx, conv, key, p] of w) doSend(byIdx.get(idx)!, conv, key, p);
    if (waiting.length > 0) await sleep(20);
  }
  if (waiting.length > 0) err('send_never_possible');
}

async function storm(atMs: number, ratePerS: number): Promise<void> {
  const wait = atMs - nowMs();
  if (wait > 0) await sleep(wait);
  const st = { dropped: 0, reopened: 0, resumed_ms: [] as number[], reopen_ms: [] as number[], failed: 0 };
  stormState = st;
  const dropAt = nowMs();
  for (const c of clients) c.localPort = undefined; // the old (address, port) pairs may sit in TIME_WAIT
  for (const c of clients) {
    if (c.open) {
      c.drop();
      st.dropped++;
    }
  }
  // unacked sends: RealChat resends with the same idempotency key (exactly-once effect); the peers
  // have no idempotency, so their unacked sends are given up and show as lost if not delivered
  const unacked = [...pending.entries()];
  pending.clear();
  if (resendOnReconnect) for (const [key, [idx, conv, p]] of unacked) waiting.push([idx, conv, key, p]);
  else if (unacked.length > 0) errors['unacked_at_drop'] = (errors['unacked_at_drop'] ?? 0) + unacked.length;
  const r = await ramp(clients, ratePerS, true, (_c) => {
    st.reopen_ms.push(nowMs() - dropAt);
  });
  st.reopened = r.open;
  st.failed = r.failed;
  // with resume the promise resolves after the last `synced` / recovered subscribe, so reopen time
  // is also the resume time; keep both names for the report
  st.resumed_ms = st.reopen_ms.slice();
}

function report(): WorkerReport {
  const upc: Array<[number, string, number]> = [];
  for (const [idx, m] of seen) for (const [conv, st] of m) upc.push([idx, conv, st[1]]);
  const r: WorkerReport = {
    workerId: init!.workerId,
    hist: encodeHist(hist),
    sent,
    acked,
    delivered,
    duplicates,
    gaps,
    errors,
    acked_per_conv: Object.fromEntries(ackedPerConv),
    unique_per_conn_conv: upc,
    first_recv_ms: firstRecv,
    last_recv_ms: lastRecv,
    open: clients.filter((c) => c.open).length,
  };
  if (stormState) r.storm = stormState;
  if (pending.size > 0) r.errors = { ...errors, unacked_at_end: pending.size };
  return r;
}

let opened = 0;
process.on('message', (m: ParentMsg) => {
  void (async () => {
    switch (m.cmd) {
      case 'init':
        init = m.init;
        resendOnReconnect = init.target === 'realchat';
        payloadPad = init.payloadBytes > 0 ? 'x'.repeat(init.payloadBytes) : '';
        for (const spec of init.conns) {
          const c = makeClient(spec);
          c.localPort = spec.localPort;
          clients.push(c);
          byIdx.set(spec.idx, c);
        }
        post({ ev: 'ready', workerId: init.workerId });
        break;
      case 'connect': {
        const upTo = Math.min(m.upTo, clients.length);
        const res = await ramp(clients.slice(opened, upTo), m.ratePerS, false);
        opened = upTo;
        post({ ev: 'connected', workerId: init!.workerId, result: res });
        break;
      }
      case 'send':
        await runSends(m.startMs, m.rate, m.total, m.slots);
        post({ ev: 'sent', workerId: init!.workerId });
        break;
      case 'storm':
        await storm(m.atMs, m.ratePerS);
        post({ ev: 'stormed', workerId: init!.workerId });
        break;
      case 'report':
        post({ ev: 'report', report: report() });
        break;
      case 'close':
        for (const c of clients) c.close();
        setTimeout(() => process.exit(0), 300).unref();
        break;
    }
  })().catch((e: unknown) => post({ ev: 'log', workerId: init?.workerId ?? -1, msg: `worker error: ${String(e)}` }));
});

// heartbeats for protocols that need the client to ping
setInterval(() => {
  const now = Date.now();
  for (const c of clients) c.tick(now);
}, 1000).unref();
// never outlive the parent
process.on('disconnect', () => process.exit(0));
