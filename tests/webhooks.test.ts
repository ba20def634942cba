/**
 * Webhooks on the embedded default (in-process dispatcher fed from the in-process bus): the admin
 * routes, the SSRF guard at registration and at delivery time, signed deliveries that survive the
 * receiver being down (every event exactly once after dedup by webhook-id, each conversation in
 * order), the delivery log, dead letters and the replay command.
 */
import { execFileSync } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createConversation, http, startTestServer, type TestServer } from './harness/server.js';
import { UNLIMITED_RATES } from './harness/env.js';
import { WebhookReceiver, type Received } from './harness/webhook-receiver.js';
import { until } from './harness/until.js';

const ADMIN = randomBytes(32).toString('hex');
const FAST = {
  REALCHAT_ADMIN_TOKEN: ADMIN,
  REALCHAT_WEBHOOK_POLL_MS: '50',
  REALCHAT_WEBHOOK_TIMEOUT_MS: '2000',
  // About 13 s of retries: longer than the receiver is down below.
  REALCHAT_WEBHOOK_RETRY_SCHEDULE_MS: '100,200,400,800,1000,1000,1000,1000,1000,1000,1000,1000,1000,1000,1000',
  ...UNLIMITED_RATES,
};

/** Per conversation, the sequence numbers of message.created events in first-arrival order. */
function sequencesByConversation(received: Received[]): Map<string, number[]> {
  const out = new Map<string, number[]>();
  for (const r of received) {
    if (r.body?.type !== 'message.created') continue;
    const list = out.get(r.body.conversation_id) ?? [];
    list.push(r.body.message.sequence_number);
    out.set(r.body.conversation_id, list);
  }
  return out;
}

describe('SSRF guard at registration (REALCHAT_WEBHOOK_ALLOW_PRIVATE unset)', () => {
  let s: TestServer;
  beforeAll(async () => {
    s = await startTestServer('pglite', { REALCHAT_ADMIN_TOKEN: ADMIN });
  });
  afterAll(async () => s?.close());

  it.each([
    'http://127.0.0.1:8080/hook',
    'http://10.0.0.7/hook',
    'http://169.254.169.254/latest/meta-data/',
    'http://[::1]:8080/hook',
    'http://localhost:8080/hook',
    'http://192.168.1.10/hook',
    'ftp://example.com/hook',
  ])('refuses %s with 400', async (url) => {
    const r = await http(s, 'POST', '/v1/admin/webhooks', { token: ADMIN, body: { url } });
    expect(r.status, JSON.stringify(r.body)).toBe(400);
    expect(r.body.error.code).toBe('invalid_request');
  });

  it('refuses the same on update, and stores nothing', async () => {
    // A row as if registered while allowed; an update to a refused address is refused.
    const id = randomUUID();
    await s.query(`INSERT INTO webhooks (id, url, secret) VALUES ($1, 'https://example.com/h', 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw')`, [
      id,
    ]);
    const r = await http(s, 'PATCH', `/v1/admin/webhooks/${id}`, { token: ADMIN, body: { url: 'http://127.0.0.1/x' } });
    expect(r.status).toBe(400);
    expect((await s.query<{ url: string }>('SELECT url FROM webhooks WHERE id = $1', [id]))[0]!.url).toBe('https://example.com/h');
  });

  it('refuses at delivery time too: a stored loopback URL (IP or a name resolving to it) is never called', async () => {
    const rx = await new WebhookReceiver().start();
    try {
      rx.secret = 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw';
      const ids = [randomUUID(), randomUUID()];
      await s.query(`INSERT INTO webhooks (id, url, secret) VALUES ($1, $2, $4), ($3, $5, $4)`, [
        ids[0],
        rx.url,
        ids[1],
        rx.secret,
        `http://localhost:${rx.port}/hook`,
      ]);
      const alice = await s.token();
      const conv = await createConversation(s, alice.token, []);
      await http(s, 'POST', `/v1/conversations/${conv}/messages`, { token: alice.token, body: { idempotency_key: 'a', payload: 1 } });
      await until('both webhooks attempted a delivery', async () => {
        const rows = await s.query<{ webhook_id: string; last_error: string | null }>(
          'SELECT webhook_id, last_error FROM webhook_deliveries WHERE webhook_id = ANY($1::uuid[]) AND attempts > 0',
          [ids],
        );
        return new Set(rows.map((r) => r.webhook_id)).size === 2 && rows.every((r) => r.last_error?.startsWith('refused:'));
      });
      expect(rx.all).toEqual([]);
    } finally {
      await rx.stop();
    }
  });
});

describe('webhook delivery (embedded)', () => {
  let s: TestServer;
  const rx = new WebhookReceiver();
  beforeAll(async () => {
    await rx.start();
    s = await startTestServer('pglite', { ...FAST, REALCHAT_WEBHOOK_ALLOW_PRIVATE: '1' });
  });
  afterAll(async () => {
    await s?.close();
    await rx.stop();
  });

  it('CRUD: create answers the secret once; list, get, update, delete; the admin token is required', async () => {
    expect((await http(s, 'POST', '/v1/admin/webhooks', { body: { url: rx.url } })).status).toBe(401);
    const created = await http(s, 'POST', '/v1/admin/webhooks', {
      token: ADMIN,
      body: { url: rx.url, event_types: ['message.created'] },
    });
    expect(created.status, JSON.stringify(created.body)).toBe(201);
    expect(created.body.secret).toMatch(/^whsec_/);
    const id = created.body.webhook_id;
    const got = await http(s, 'GET', `/v1/admin/webhooks/${id}`, { token: ADMIN });
    expect(got.body).toMatchObject({ webhook_id: id, url: rx.url, event_types: ['message.created'], enabled: true });
    expect(got.body.secret).toBeUndefined();
    const listed = await http(s, 'GET', '/v1/admin/webhooks', { token: ADMIN });
    expect(listed.body.webhooks.map((w: any) => w.webhook_id)).toContain(id);
    expect(JSON.stringify(listed.body)).not.toContain(created.body.secret);
    const updated = await http(s, 'PATCH', `/v1/admin/webhooks/${id}`, { token: ADMIN, body: { enabled: false, event_types: [] } });
    expect(updated.body).toMatchObject({ enabled: false, event_types: [] });
    expect((await http(s, 'PATCH', `/v1/admin/webhooks/${id}`, { token: ADMIN, body: { event_types: ['nope'] } })).status).toBe(400);
    expect((await http(s, 'PATCH', `/v1/admin/webhooks/${id}`, { token: ADMIN, body: { secret: 'plain' } })).status).toBe(400);
    expect((await http(s, 'DELETE', `/v1/admin/webhooks/${id}`, { token: ADMIN })).status).toBe(200);
    expect((await http(s, 'GET', `/v1/admin/webhooks/${id}`, { token: ADMIN })).status).toBe(404);
    expect((await http(s, 'DELETE', `/v1/admin/webhooks/${id}`, { token: ADMIN })).status).toBe(404);
  });

  it('receiver down for a while, then back: every event exactly once after dedup, each conversation in order, all signed', async () => {
    const created = await http(s, 'POST', '/v1/admin/webhooks', { token: ADMIN, body: { url: rx.url } });
    expect(created.status).toBe(201);
    rx.secret = created.body.secret;
    const webhookId = created.body.webhook_id;
    const alice = await s.token();
    const bob = await s.token();
    const convs = [await createConversation(s, alice.token, [bob.userId]), await createConversation(s, bob.token, [alice.userId])];
    const PER = 15;
    const send = (conv: string, token: string, i: number) =>
      http(s, 'POST', `/v1/conversations/${conv}/messages`, { token, body: { idempotency_key: `m${i}`, payload: { i } } });
    // Some while up, then down for a while (connections refused), more sent meanwhile, then back.
    for (let i = 1; i <= 5; i++) for (const [n, conv] of convs.entries()) await send(conv, n ? bob.token : alice.token, i);
    await rx.stop();
    for (let i = 6; i <= PER; i++) for (const [n, conv] of convs.entries()) await send(conv, n ? bob.token : alice.token, i);
    await new Promise((r) => setTimeout(r, 1500));
    await rx.start();
    await until(
      'every message delivered',
      () => [...sequencesByConversation(rx.unique).values()].reduce((n, l) => n + l.length, 0) >= 2 * PER,
      30_000,
      50,
    );
    expect(rx.invalid).toEqual([]);
    const byConv = sequencesByConversation(rx.unique);
    const expected = Array.from({ length: PER }, (_, i) => i + 1);
    for (const conv of convs) expect(byConv.get(conv), conv).toEqual(expected);
    // webhook-id is the event id; members_added of the creations came too (all types subscribed).
    for (const r of rx.unique) expect(r.id).toBe(r.body.event_id);
    expect(rx.unique.filter((r) => r.body.type === 'conversation.members_added').length).toBe(2);
    // The delivery log: every row delivered, some after retries.
    const log = await http(s, 'GET', `/v1/admin/webhooks/${webhookId}/deliveries?limit=500`, { token: ADMIN });
    expect(log.status).toBe(200);
    expect(log.body.deliveries.length).toBe(2 * PER + 2);
    expect(log.body.deliveries.every((d: any) => d.status === 'delivered' && d.last_status_code === 204)).toBe(true);
    expect(log.body.deliveries.some((d: any) => d.attempts > 1)).toBe(true);
    const pending = await http(s, 'GET', `/v1/admin/webhooks/${webhookId}/deliveries?status=pending`, { token: ADMIN });
    expect(pending.body.deliveries).toEqual([]);
    const metrics = await http(s, 'GET', '/metrics');
    expect(metrics.body).toMatch(/realchat_webhook_attempts_total\{[^}]*outcome="network"[^}]*\} [1-9]/);
    await http(s, 'DELETE', `/v1/admin/webhooks/${webhookId}`, { token: ADMIN });
  });
  it("a send that reads another member's message: the webhook gets its message.created, then a conversation.read as before v1.5 folded it in", async () => {
    const created = await http(s, 'POST', '/v1/admin/webhooks', {
      token: ADMIN,
      body: { url: rx.url, event_types: ['message.created', 'conversation.read'] },
    });
    expect(created.status).toBe(201);
    rx.secret = created.body.secret;
    const alice = await s.token();
    const bob = await s.token();
    const conv = await createConversation(s, alice.token, [bob.userId]);
    const send = (token: string, key: string) =>
      http(s, 'POST', `/v1/conversations/${conv}/messages`, { token, body: { idempotency_key: key, payload: { key } } });
    expect((await send(alice.token, 'a1')).status).toBe(201);
    expect((await send(bob.token, 'b1')).status).toBe(201);
    expect((await send(bob.token, 'b2')).status).toBe(201);
    const ofConv = () => rx.unique.filter((r) => r.body?.conversation_id === conv);
    await until('three messages and a receipt', () => ofConv().length >= 4, 30_000, 50);
    expect(rx.invalid).toEqual([]);
    const got = ofConv();
    expect(
      got.map((r) => (r.body.type === 'conversation.read' ? `read ${r.body.read_sequence}` : `message ${r.body.message.sequence_number}`)),
    ).toEqual(['message 1', 'message 2', 'read 2', 'message 3']);
    const [, second, read] = got;
    expect(read!.body).toMatchObject({ type: 'conversation.read', user_id: bob.userId, read_sequence: 2, schema_version: 1 });
    // The receipt's own event id: the webhook-id a receiver dedups by, the same as the stream's `receipt.event_id`.
    expect(read!.id).toBe(second!.body.receipt.event_id);
    expect(read!.body.event_id).toBe(read!.id);
    await http(s, 'DELETE', `/v1/admin/webhooks/${created.body.webhook_id}`, { token: ADMIN });
  });
});

describe('dead letters and replay (postgres)', () => {
  let s: TestServer;
  const rx = new WebhookReceiver();
  beforeAll(async () => {
    await rx.start();
    s = await startTestServer('postgres', {
      ...FAST,
      REALCHAT_WEBHOOK_ALLOW_PRIVATE: '1',
      REALCHAT_WEBHOOK_RETRY_SCHEDULE_MS: '50,50',
    });
  });
  afterAll(async () => {
    await s?.close();
    await rx.stop();
  });

  it('a delivery that keeps failing is dead after the schedule, blocks nothing after it, and the replay command sends it again', async () => {
    const created = await http(s, 'POST', '/v1/admin/webhooks', { token: ADMIN, body: { url: rx.url, event_types: ['message.created'] } });
    rx.secret = created.body.secret;
    const id = created.body.webhook_id;
    const alice = await s.token();
    const conv = await createConversation(s, alice.token, []);
    rx.failWith = 500;
    await http(s, 'POST', `/v1/conversations/${conv}/messages`, { token: alice.token, body: { idempotency_key: 'd1', payload: 1 } });
    await until(
      'dead-lettered',
      async () => (await http(s, 'GET', `/v1/admin/webhooks/${id}/deliveries?status=dead`, { token: ADMIN })).body.deliveries.length === 1,
      15_000,
      50,
    );
    const dead = (await http(s, 'GET', `/v1/admin/webhooks/${id}/deliveries?status=dead`, { token: ADMIN })).body.deliveries[0];
    expect(dead).toMatchObject({ attempts: 3, last_status_code: 500, last_error: 'answered 500' });
    expect(rx.all.length).toBe(3);
    // The conversation's next event is not held back by the dead one.
    rx.failWith = null;
    await http(s, 'POST', `/v1/conversations/${conv}/messages`, { token: alice.token, body: { idempotency_key: 'd2', payload: 2 } });
    await until('second delivered', () => rx.unique.length === 1, 10_000, 50);
    expect(rx.unique[0]!.body.message.sequence_number).toBe(2);
    const out = execFileSync(process.execPath, ['dist/delivery/webhooks/replay-cli.js', '--webhook', id], {
      env: { ...process.env, DATABASE_URL: s.databaseUrl! },
      encoding: 'utf8',
      timeout: 30_000,
    });
    expect(JSON.parse(out)).toEqual({ replayed: 1 });
    await until('replayed delivery arrives', () => rx.unique.length === 2, 10_000, 50);
    expect(rx.unique[1]!.id).toBe(dead.event_id);
    expect(rx.invalid).toEqual([]);
  });
});
