/**
 * Webhooks through real Kafka (tests/harness/inproc-stack.ts: gateways, relay and delivery over a
 * real broker, Redis and PostgreSQL) with the dispatcher role (runWebhooks, its own consumer group):
 * the receiver is down for a while and the dispatcher itself is restarted meanwhile; afterwards the
 * receiver has every event exactly once after dedup by webhook-id, each conversation in order, and
 * every request carried a valid signature.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../common/config.js';
import { runWebhooks } from '../delivery/webhooks/main.js';
import { rest, startInProcStack, type InProcStack } from './harness/inproc-stack.js';
import { freePort } from './harness/postgres.js';
import { WebhookReceiver } from './harness/webhook-receiver.js';
import { until } from './harness/until.js';

const ADMIN = randomBytes(32).toString('hex');

describe('webhooks through Kafka (distributed)', () => {
  let s: InProcStack;
  let dispatcher: { stop(): Promise<void> } | null = null;
  const rx = new WebhookReceiver();
  const startDispatcher = async () => {
    dispatcher = await runWebhooks(
      loadConfig({ ...s.env, REALCHAT_NODE_ID: `webhooks-${randomUUID().slice(0, 4)}`, METRICS_PORT: String(await freePort()) }),
    );
  };

  beforeAll(async () => {
    await rx.start();
    s = await startInProcStack({
      gateways: 2,
      env: {
        REALCHAT_ADMIN_TOKEN: ADMIN,
        REALCHAT_WEBHOOK_ALLOW_PRIVATE: '1',
        REALCHAT_WEBHOOK_POLL_MS: '50',
        REALCHAT_WEBHOOK_TIMEOUT_MS: '2000',
        REALCHAT_WEBHOOK_RETRY_SCHEDULE_MS: '100,200,400,800,1000,1000,1000,1000,1000,1000,1000,1000,1000,1000,1000,1000,1000,1000',
      },
    });
    await startDispatcher();
  });
  afterAll(async () => {
    await dispatcher?.stop().catch(() => {});
    await s?.close();
    await rx.stop();
  });

  it('receiver down and dispatcher restarted meanwhile: every event exactly once after dedup, in order per conversation, all signed', async () => {
    const created = await rest(s.http(0), ADMIN, 'POST', '/v1/admin/webhooks', { url: rx.url, event_types: ['message.created'] });
    expect(created.status, JSON.stringify(created.body)).toBe(201);
    rx.secret = created.body.secret;
    const alice = randomUUID();
    const bob = randomUUID();
    const ta = await s.token(alice);
    const tb = await s.token(bob);
    const convs: string[] = [];
    for (const [node, t, other] of [
      [0, ta, bob],
      [1, tb, alice],
      [0, tb, alice],
    ] as const) {
      const r = await rest(s.http(node), t, 'POST', '/v1/conversations', { member_ids: [other] });
      expect(r.status).toBe(201);
      convs.push(r.body.conversation_id);
    }
    const PER = 12;
    const send = async (i: number) => {
      for (const [n, conv] of convs.entries()) {
        const r = await rest(s.http(n % 2), n === 0 ? ta : tb, 'POST', `/v1/conversations/${conv}/messages`, {
          idempotency_key: `m${n}-${i}`,
          payload: { i },
        });
        expect(r.status).toBe(201);
      }
    };
    for (let i = 1; i <= 4; i++) await send(i);
    await until('first events delivered', () => rx.unique.length >= 4 * convs.length, 30_000, 50);
    await rx.stop();
    for (let i = 5; i <= 8; i++) await send(i);
    // The dispatcher goes away and a new one takes over its group (what it had queued is in the table).
    await dispatcher!.stop();
    dispatcher = null;
    for (let i = 9; i <= PER; i++) await send(i);
    await startDispatcher();
    await new Promise((r) => setTimeout(r, 1000));
    await rx.start();
    await until('every message delivered', () => rx.unique.length >= PER * convs.length, 60_000, 50);
    await new Promise((r) => setTimeout(r, 500));
    expect(rx.invalid).toEqual([]);
    expect(rx.unique.length).toBe(PER * convs.length);
    const expected = Array.from({ length: PER }, (_, i) => i + 1);
    for (const conv of convs)
      expect(
        rx.unique.filter((r) => r.body.conversation_id === conv).map((r) => r.body.message.sequence_number),
        conv,
      ).toEqual(expected);
    for (const r of rx.unique) expect(r.id).toBe(r.body.event_id);
    // The log says the same.
    const log = await rest(s.http(1), ADMIN, 'GET', `/v1/admin/webhooks/${created.body.webhook_id}/deliveries?limit=500`);
    expect(log.body.deliveries.length).toBe(PER * convs.length);
    expect(log.body.deliveries.every((d: any) => d.status === 'delivered')).toBe(true);
  });
});
