/**
 * A sender's own order under refusals (docs/protocol.md, "Order of one connection's sends under
 * refusals"). A client pipelines its sends while the server refuses some of them, and retries each
 * refused one with the same key; the stored order per sender must still be the send order:
 *
 * - the write path refuses: PostgreSQL is paused (SIGSTOP) while other users' writes fill the
 *   (tiny) group-commit queue, so sends are refused `unavailable` before they are written;
 * - the per-user send rate refuses (`rate_limited`), with no fault at all.
 *
 * Each with a plain client that retries every refused send as soon as it reads the refusal (the
 * server holds the later sends back), and with the SDK (which holds them itself).
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import WebSocket from 'ws';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startPostgres, type PostgresServer } from './harness/postgres.js';
import { createConversation, http, startTestServer, type TestServer } from './harness/server.js';
import { TestClient, type Frame } from './harness/ws-client.js';
import { UNLIMITED_RATES } from './harness/env.js';
import { RealChatClient, type RealChatError } from '../client/index.js';

/** The server's processes: the postmaster and its children (backends, walwriter, ...). */
function postgresPids(pg: PostgresServer): number[] {
  const master = Number(readFileSync(join(pg.dir, 'data', 'postmaster.pid'), 'utf8').split('\n')[0]);
  const children = readdirSync('/proc')
    .filter((d) => /^\d+$/.test(d))
    .map(Number)
    .filter((pid) => {
      try {
        const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
        return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]) === master;
      } catch {
        return false;
      }
    });
  return [master, ...children];
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * Freezes every PostgreSQL process for `ms` (a stalled disk or VM, not a crash: connections stay
 * open) while `load` keeps other users' writes coming, so the write queue stays full.
 */
async function pauseUnderLoad(pg: PostgresServer, ms: number, load: () => void): Promise<void> {
  const pids = postgresPids(pg);
  for (const pid of pids) process.kill(pid, 'SIGSTOP');
  try {
    const until = Date.now() + ms;
    while (Date.now() < until) {
      load();
      await sleep(50);
    }
  } finally {
    for (const pid of pids) process.kill(pid, 'SIGCONT');
  }
}

const RETRIABLE = new Set(['unavailable', 'rate_limited', 'internal']);

async function storedKeys(s: TestServer, conv: string, sender: string): Promise<string[]> {
  const rows = await s.query<{ key: string }>(
    'SELECT idempotency_key AS key FROM messages WHERE conversation_id = $1 AND sender_id = $2 ORDER BY sequence',
    [conv, sender],
  );
  return rows.map((r) => r.key);
}

/**
 * A plain client: keeps `window` sends in flight and sends every refused one again, with the same
 * key, `retryMs` after reading the refusal. Calls `onAck(n)` after the n-th distinct ack.
 */
function pipeline(
  c: TestClient,
  conv: string,
  keys: string[],
  opts: { window: number; retryMs: number; onAck?: (n: number) => void },
): Promise<Frame[]> {
  const refusals: Frame[] = [];
  const acked = new Set<string>();
  let next = 0;
  const send = (key: string) => c.send({ type: 'send', conversation_id: conv, idempotency_key: key, payload: { key } });
  return new Promise<Frame[]>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`timed out with ${acked.size}/${keys.length} acked`)), 50_000);
    const top = () => {
      while (next < keys.length && next - acked.size < opts.window) send(keys[next++]!);
      if (acked.size === keys.length) {
        clearTimeout(timer);
        resolve(refusals);
      }
    };
    c.ws.on('message', (data) => {
      const f = JSON.parse(data.toString()) as Frame;
      if (f.type === 'ack') {
        if (acked.has(f.idempotency_key)) return;
        acked.add(f.idempotency_key);
        opts.onAck?.(acked.size);
        top();
      } else if (f.type === 'error') {
        refusals.push(f);
        if (!RETRIABLE.has(f.code) || typeof f.ref !== 'string') reject(new Error(`send failed for good: ${JSON.stringify(f)}`));
        else setTimeout(() => send(f.ref), opts.retryMs);
      }
    });
    top();
  });
}

/** The SDK sends every key at once (it pipelines up to maxInFlightSends); resolves with the acks' sequences. */
async function sdkSends(s: TestServer, token: string, conv: string, keys: string[], onAck?: (n: number) => void): Promise<number[]> {
  const client = new RealChatClient({ url: s.wsUrl, token, WebSocket: WebSocket as never, maxInFlightSends: 32 });
  await client.connect();
  let acks = 0;
  const settled = await Promise.allSettled(
    keys.map((k) =>
      client.send(conv, { k }, { idempotencyKey: k }).then((a) => {
        onAck?.(++acks);
        return a;
      }),
    ),
  );
  client.close();
  const failed = settled.filter((r) => r.status === 'rejected').map((r) => (r.reason as RealChatError).code);
  expect(failed).toEqual([]);
  return settled.map((r) => (r.status === 'fulfilled' ? r.value.sequence_number : -1));
}

/** Error frames the server has sent so far with this code. */
async function answered(s: TestServer, code: string): Promise<number> {
  const m = await s.app.metrics.wsErrors.get();
  return m.values.find((v) => v.labels.code === code)?.value ?? 0;
}

const keysOf = (prefix: string, n: number) => Array.from({ length: n }, (_, i) => `${prefix}${i}`);

describe('own order when the write path refuses (PostgreSQL paused, write queue full)', () => {
  let pg: PostgresServer;
  let s: TestServer;
  let paused: Promise<void> | null = null;
  beforeAll(async () => {
    pg = await startPostgres();
    s = await startTestServer('postgres', {
      DATABASE_URL: pg.url,
      REALCHAT_DB_QUERY_TIMEOUT_MS: '800',
      REALCHAT_DB_CONNECT_TIMEOUT_S: '2',
      // One batch of one send at a time, and at most 4 waiting: a few writes fill the queue.
      REALCHAT_SEND_BATCH_MAX: '1',
      REALCHAT_SEND_BATCH_WRITERS: '1',
      REALCHAT_DB_MAX_QUEUED: '1',
      ...UNLIMITED_RATES,
    });
  });
  afterAll(async () => {
    await paused?.catch(() => {});
    await s?.close().catch(() => {});
    pg?.stop();
  });

  /** Another user's REST writes, to keep the write queue full while the database is paused. */
  async function competingWriter() {
    const carol = await s.token();
    const conv = await createConversation(s, carol.token, []);
    let n = 0;
    return () => {
      for (let i = 0; i < 8; i++) {
        void http(s, 'POST', `/v1/conversations/${conv}/messages`, {
          token: carol.token,
          body: { idempotency_key: `load${n++}`, payload: n },
        }).catch(() => {});
      }
    };
  }

  it('a plain client retrying each refused send at once: stored in send order', async () => {
    const alice = await s.token();
    const conv = await createConversation(s, alice.token, []);
    const load = await competingWriter();
    const c = await TestClient.connect(s.wsUrl, alice.token);
    const keys = keysOf('p', 60);
    paused = null;
    const refusals = await pipeline(c, conv, keys, {
      window: 16,
      retryMs: 20,
      onAck: (n) => {
        if (n === 20) paused = pauseUnderLoad(pg, 3000, load);
      },
    });
    await paused;
    expect(await storedKeys(s, conv, alice.userId)).toEqual(keys);
    expect(refusals.filter((f) => f.code === 'unavailable' && f.reason === undefined).length).toBeGreaterThan(0);
    // The sends behind a refused one were held back, not written before it.
    expect(refusals.some((f) => f.reason === 'after_refused')).toBe(true);
    c.close();
  });

  it('the SDK pipelining 60 sends: each acknowledged once, stored in send order', async () => {
    const alice = await s.token();
    const conv = await createConversation(s, alice.token, []);
    const load = await competingWriter();
    const keys = keysOf('q', 60);
    const refusedBefore = await answered(s, 'unavailable');
    paused = null;
    const seqs = await sdkSends(s, alice.token, conv, keys, (n) => {
      if (n === 10) paused = pauseUnderLoad(pg, 3000, load);
    });
    await paused;
    expect(paused).not.toBeNull();
    expect(await answered(s, 'unavailable')).toBeGreaterThan(refusedBefore);
    expect(await storedKeys(s, conv, alice.userId)).toEqual(keys);
    expect(seqs).toEqual([...seqs].sort((a, b) => a - b));
  });
});

describe('own order when the send rate refuses (rate_limited)', () => {
  let s: TestServer;
  beforeAll(async () => {
    s = await startTestServer('pglite', {
      // Well below how fast one connection's sends are written, even on a busy machine.
      REALCHAT_SENDS_PER_S: '8',
      REALCHAT_SEND_BURST: '4',
      REALCHAT_FRAMES_PER_S: '100000',
      REALCHAT_FRAME_BURST: '100000',
    });
  });
  afterAll(async () => s?.close());

  it('a plain client retrying each refused send at once: stored in send order', async () => {
    const alice = await s.token();
    const conv = await createConversation(s, alice.token, []);
    const c = await TestClient.connect(s.wsUrl, alice.token);
    const keys = keysOf('r', 30);
    const refusals = await pipeline(c, conv, keys, { window: 16, retryMs: 20 });
    expect(await storedKeys(s, conv, alice.userId)).toEqual(keys);
    expect(refusals.some((f) => f.code === 'rate_limited')).toBe(true);
    c.close();
  });

  it('the SDK: each acknowledged once, stored in send order', async () => {
    const alice = await s.token();
    const conv = await createConversation(s, alice.token, []);
    const keys = keysOf('s', 30);
    const limitedBefore = await answered(s, 'rate_limited');
    const seqs = await sdkSends(s, alice.token, conv, keys);
    expect(await answered(s, 'rate_limited')).toBeGreaterThan(limitedBefore);
    expect(await storedKeys(s, conv, alice.userId)).toEqual(keys);
    expect(seqs).toEqual([...seqs].sort((a, b) => a - b));
  });
});
