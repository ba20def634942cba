/**
 * How each delivery arrived, end to end: a gateway node on the in-process pipeline (relay, bus,
 * delivery router: the standalone wiring), where the test can make the pipeline lose one event on
 * its way to the node. The SDK reports each message's `via`, and the node counts them
 * (realchat_deliveries_total{via}): a lost event shows as `fill` instead of hiding behind the gap
 * fill; a normal run is all `live`; a reconnect's catch-up is `resume`.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import WebSocket from 'ws';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../common/config.js';
import { createSql, type Sql } from '../common/db.js';
import type { Delivery } from '../common/delivery.js';
import { createLogger } from '../common/log.js';
import { createMetrics, type Metrics } from '../common/metrics.js';
import { createAuthenticator } from '../gateway/auth.js';
import { startGatewayNode, type GatewayNode } from '../gateway/node.js';
import { migrate } from '../sql/migrate.js';
import { inProcessPipeline } from '../standalone/in-process-pipeline.js';
import { RealChatClient, type Via } from '../client/index.js';
import { freshDatabase } from './harness/server.js';
import { TestClient } from './harness/ws-client.js';
import { UNLIMITED_RATES } from './harness/env.js';

describe('arrival path of each delivery (a node whose pipeline can lose an event)', () => {
  let sql: Sql;
  let node: GatewayNode;
  let metrics: Metrics;
  let base: string;
  const secret = randomBytes(32).toString('hex');
  const auth = createAuthenticator({ secret });
  /** Deliveries for which this returns true never reach the node. */
  let lose: (d: Delivery) => boolean = () => false;

  beforeAll(async () => {
    const config = loadConfig({
      PORT: '0',
      REALCHAT_JWT_SECRET: secret,
      DATABASE_URL: await freshDatabase(),
      LOG_LEVEL: 'silent',
      ...UNLIMITED_RATES,
    });
    const log = createLogger({ level: 'silent', nodeId: config.nodeId, role: 'gateway' });
    metrics = createMetrics({ nodeId: config.nodeId, defaultMetrics: false });
    sql = createSql({
      url: config.databaseUrl!,
      maxConnections: 5,
      connectTimeoutS: 5,
      queryTimeoutMs: 5000,
      applicationName: 'arrival-path',
    });
    await migrate(sql);
    const pipeline = inProcessPipeline({ config, sql, log, metrics });
    node = await startGatewayNode({
      config,
      sql,
      poolSize: 5,
      log,
      metrics,
      jwtSecret: secret,
      pipeline: (ports) =>
        pipeline({
          ...ports,
          inbox: {
            deliver: (d) => (lose(d) ? Promise.resolve() : ports.inbox.deliver(d)),
            prepare: (ds) => ports.inbox.prepare(ds),
            ephemeral: (d) => ports.inbox.ephemeral(d),
          },
        }),
    });
    base = `127.0.0.1:${node.port}`;
  });
  afterAll(async () => {
    await node?.close();
    await sql?.end();
  });

  async function post(path: string, token: string, body: unknown): Promise<any> {
    const res = await fetch(`http://${base}${path}`, {
      method: 'POST',
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
      body: JSON.stringify(body),
      signal: AbortSignal.timeout(10_000),
    });
    if (res.status >= 300) throw new Error(`${path}: ${res.status} ${await res.text()}`);
    return res.json();
  }

  async function counted(): Promise<Record<string, number>> {
    const m = await metrics.deliveries.get();
    return Object.fromEntries(m.values.map((v) => [String(v.labels.via), v.value]));
  }

  /** Alice sends six messages over REST, one at a time; Bob's SDK client records how each arrived. */
  async function run(loseSequence: number | null) {
    const [alice, bob] = [randomUUID(), randomUUID()];
    const [at, bt] = [await auth.issue(alice), await auth.issue(bob)];
    const { conversation_id: conv } = await post('/v1/conversations', at, { member_ids: [bob] });
    lose = (d) =>
      d.event.type === 'message.created' && d.event.conversation_id === conv && d.event.message.sequence_number === loseSequence;
    const client = new RealChatClient({ url: `ws://${base}/v1/ws`, token: bt, WebSocket: WebSocket as never });
    const got: Array<[number, Via | undefined]> = [];
    client.on('message', (m, info) => got.push([m.sequence_number, info.via]));
    await client.connect();
    const before = await counted();
    for (let k = 1; k <= 6; k++) {
      const sent = await post(`/v1/conversations/${conv}/messages`, at, { idempotency_key: `k${k}`, payload: { k } });
      expect(sent.sequence_number).toBe(k);
      // Each handed to the node (or lost) before the next is committed.
      await node.settled();
      if (k !== loseSequence) await until(() => got.length >= k);
    }
    client.close();
    const after = await counted();
    const delta = Object.fromEntries(Object.entries(after).map(([via, n]) => [via, n - (before[via] ?? 0)]));
    return { got, delta, conv, bt };
  }

  it('a normal run: every message arrives live', async () => {
    const { got, delta } = await run(null);
    expect(got).toEqual([1, 2, 3, 4, 5, 6].map((s) => [s, 'live']));
    expect(delta).toMatchObject({ live: 6 });
    expect(delta.fill ?? 0).toBe(0);
  });

  it('an event the pipeline lost arrives by fill (with the one that revealed the gap); the rest live', async () => {
    const { got, delta, conv, bt } = await run(3);
    expect(got).toEqual([
      [1, 'live'],
      [2, 'live'],
      [3, 'fill'],
      [4, 'fill'],
      [5, 'live'],
      [6, 'live'],
    ]);
    expect(delta).toMatchObject({ live: 4, fill: 2 });

    // A reconnect's catch-up is `resume`, on the wire as in the SDK.
    const c = await TestClient.connect(`ws://${base}/v1/ws`, bt, { [conv]: 4 });
    await c.waitFor((f) => f.type === 'synced');
    expect(c.frames.filter((f) => f.type === 'message').map((f) => [f.message.sequence_number, f.via])).toEqual([
      [5, 'resume'],
      [6, 'resume'],
    ]);
    c.close();
  });
});

async function until(pred: () => boolean, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!pred()) {
    if (Date.now() > deadline) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 10));
  }
}
