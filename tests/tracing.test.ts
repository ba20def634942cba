/**
 * Tracing (issue 10, "Observability"): one W3C trace per message across every role, gateway
 * "send" -> relay "publish" -> delivery "route" -> gateway "deliver", in the embedded pipeline (an
 * in-memory exporter injected) and through real Kafka with every role its own process (an OTLP/HTTP
 * collector in this test receives what each process exports). Also the end-to-end latency
 * histogram, and the pure trace-context helpers.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import { gunzipSync } from 'node:zlib';
import kafkajs from 'kafkajs';
import { InMemorySpanExporter, type ReadableSpan } from '@opentelemetry/sdk-trace-base';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../common/config.js';
import { createLogger } from '../common/log.js';
import { SpanKind, createTracing, noTracing, type Tracing } from '../common/tracing.js';
import { carriesTrace, parseTraceparent, traceIdGenerator, traceIdOf } from '../common/trace-id.js';
import { startRealChat, type RealChat } from '../standalone/realchat.js';
import { createKafkaEventBus } from '../relay/kafka-bus.js';
import type { OutRecord } from '../common/kafka/index.js';
import { createAuthenticator } from '../gateway/auth.js';
import { TestClient } from './harness/ws-client.js';
import { createConversationAt } from './harness/queries.js';
import { freshDatabase } from './harness/server.js';
import { freePort } from './harness/postgres.js';
import { startKafka, type KafkaHandle } from './harness/kafka.js';
import { spawnRole, type RoleProcess } from './harness/stack.js';
import { UNLIMITED_RATES } from './harness/env.js';

const hex = (bytes: number) => randomBytes(bytes).toString('hex');
const clientTraceparent = () => `00-${hex(16)}-${hex(8)}-01`;
const ROLES = ['send', 'publish', 'route', 'deliver'] as const;

describe('trace context helpers', () => {
  it('parses W3C traceparents and refuses invalid ones (which start a new trace)', () => {
    const tp = '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01';
    expect(parseTraceparent(tp)).toEqual({ traceId: '0af7651916cd43dd8448eb211c80319c', spanId: 'b7ad6b7169203331', flags: 1 });
    expect(traceIdOf(tp)).toBe('0af7651916cd43dd8448eb211c80319c');
    for (const bad of [
      '',
      'garbage',
      '00-00000000000000000000000000000000-b7ad6b7169203331-01',
      '00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01',
      'ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01',
      '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-extra',
      '00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01',
    ])
      expect(parseTraceparent(bad), bad).toBeNull();
    // A later version may append fields.
    expect(parseTraceparent(`01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-what`)?.spanId).toBe('b7ad6b7169203331');
    // Bare trace ids and older opaque ids are logged as they are.
    expect(traceIdOf('0af7651916cd43dd8448eb211c80319c')).toBe('0af7651916cd43dd8448eb211c80319c');
    expect(traceIdOf('replay-abc')).toBe('replay-abc');
    expect(carriesTrace('replay-abc')).toBe(false);
    expect(traceIdOf(null)).toBeNull();
  });

  it('makes W3C-shaped trace ids (what logs carry as trace_id)', () => {
    const next = traceIdGenerator();
    const ids = new Set(Array.from({ length: 1000 }, next));
    expect(ids.size).toBe(1000);
    for (const id of ids) expect(carriesTrace(id)).toBe(true);
  });

  it('continues a traceparent, keeps a bare trace id as the trace, follows the parent sampling decision', () => {
    const exporter = new InMemorySpanExporter();
    const tracing = createTracing({ serviceName: 't', instanceId: 'n', exporter, sampleRatio: 1, processor: 'simple' });
    const parent = clientTraceparent();
    const child = tracing.start('a', parent, SpanKind.SERVER)!;
    const p = parseTraceparent(child.traceparent)!;
    expect(p.traceId).toBe(parseTraceparent(parent)!.traceId);
    expect(p.flags).toBe(1);
    child.end();
    const [span] = exporter.getFinishedSpans();
    expect(span!.parentSpanContext?.spanId).toBe(parseTraceparent(parent)!.spanId);

    const bare = hex(16);
    const root = tracing.start('b', bare, SpanKind.SERVER)!;
    expect(traceIdOf(root.traceparent)).toBe(bare);
    root.end(new Error('boom'));
    const b = exporter.getFinishedSpans().find((s) => s.name === 'b')!;
    expect(b.parentSpanContext).toBeUndefined();
    expect(b.status.code).toBe(2);
    // The next root gets a fresh id again (the carried id is used once).
    const fresh = tracing.start('c', null, SpanKind.SERVER)!;
    expect(traceIdOf(fresh.traceparent)).not.toBe(bare);
    fresh.end();

    // An unsampled parent: no span recorded, the context still travels (flags 00).
    const unsampled = tracing.start('d', `00-${hex(16)}-${hex(8)}-00`, SpanKind.SERVER)!;
    expect(unsampled.traceparent.endsWith('-00')).toBe(true);
    unsampled.end();
    expect(exporter.getFinishedSpans().some((s) => s.name === 'd')).toBe(false);

    // Ratio 0: new traces are not sampled.
    const none = createTracing({ serviceName: 't', instanceId: 'n', exporter, sampleRatio: 0, processor: 'simple' });
    none.start('e', null, SpanKind.SERVER)!.end();
    expect(exporter.getFinishedSpans().some((s) => s.name === 'e')).toBe(false);
  });

  it('the relay writes the Kafka headers of docs/events.md: trace_id = the W3C trace id, traceparent when there is one', async () => {
    const sent: OutRecord[] = [];
    const bus = createKafkaEventBus(
      {
        send: async (_topic, records) => {
          sent.push(...records);
        },
        sendMany: async () => {},
        close: async () => {},
      },
      'events',
    );
    const tp = '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01';
    const bare = hex(16);
    const base = { key: 'k', value: '{}', type: 'message.created', eventId: randomUUID() };
    await bus.publish([
      { ...base, traceId: tp },
      { ...base, traceId: bare },
      { ...base, traceId: 'replay-1a2b' },
      { ...base, traceId: null },
    ]);
    expect(sent.map((r) => [r.headers.trace_id, r.headers.traceparent])).toEqual([
      ['0af7651916cd43dd8448eb211c80319c', tp],
      [bare, undefined],
      ['replay-1a2b', undefined],
      [undefined, undefined],
    ]);
  });

  it('is off by default, and on with an OTLP endpoint or exporter configured', () => {
    expect(loadConfig({}).tracing.exporter).toBe('none');
    expect(loadConfig({ OTEL_EXPORTER_OTLP_ENDPOINT: 'http://collector:4318' }).tracing).toMatchObject({
      exporter: 'otlp',
      endpoint: 'http://collector:4318/v1/traces',
    });
    expect(loadConfig({ OTEL_TRACES_EXPORTER: 'otlp' }).tracing.endpoint).toBe('http://localhost:4318/v1/traces');
    expect(loadConfig({ OTEL_EXPORTER_OTLP_ENDPOINT: 'http://c:4318', OTEL_TRACES_EXPORTER: 'none' }).tracing.exporter).toBe('none');
    expect(loadConfig({ REALCHAT_TRACING: 'otlp', REALCHAT_TRACE_SAMPLE_RATIO: '0.25' }).tracing.sampleRatio).toBe(0.25);
    expect(() => loadConfig({ REALCHAT_TRACE_SAMPLE_RATIO: '2' })).toThrow(/SAMPLE_RATIO/);
    expect(() => loadConfig({ OTEL_TRACES_EXPORTER: 'zipkin' })).toThrow(/otlp or none/);
    const off: Tracing = noTracing();
    expect(off.start('x', null, SpanKind.SERVER)).toBeNull();
  });
});

/** The spans of one trace, by name, and checks they form the chain send -> publish -> route -> deliver. */
function expectChain(spans: ReadonlyArray<{ name: string; spanId: string; parentSpanId: string | undefined }>, clientSpanId?: string) {
  const byName = new Map(spans.map((s) => [s.name, s]));
  for (const role of ROLES) expect(byName.has(role), `${role} span in ${JSON.stringify(spans)}`).toBe(true);
  expect(byName.get('send')!.parentSpanId).toBe(clientSpanId);
  expect(byName.get('publish')!.parentSpanId).toBe(byName.get('send')!.spanId);
  expect(byName.get('route')!.parentSpanId).toBe(byName.get('publish')!.spanId);
  expect(byName.get('deliver')!.parentSpanId).toBe(byName.get('route')!.spanId);
}

describe('the chain check', () => {
  it('fails when a role starts its own trace or does not continue its parent (a relay that forwards the stored context)', () => {
    const good = [
      { name: 'send', spanId: 's', parentSpanId: 'c' },
      { name: 'publish', spanId: 'p', parentSpanId: 's' },
      { name: 'route', spanId: 'r', parentSpanId: 'p' },
      { name: 'deliver', spanId: 'd', parentSpanId: 'r' },
    ];
    expectChain(good, 'c');
    expect(() =>
      expectChain(
        good.filter((s) => s.name !== 'publish'),
        'c',
      ),
    ).toThrow();
    expect(() =>
      expectChain(
        good.map((s) => (s.name === 'route' ? { ...s, parentSpanId: 's' } : s)),
        'c',
      ),
    ).toThrow();
    expect(() => expectChain(good, undefined)).toThrow();
  });
});

async function until<T>(
  what: string,
  fn: () => T | undefined | null | false | Promise<T | undefined | null | false>,
  timeoutMs = 15_000,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function endToEndCount(app: RealChat): Promise<{ count: number; sum: number }> {
  const { values } = await app.metrics.endToEndSeconds.get();
  return {
    count: values.find((v) => v.metricName === 'realchat_end_to_end_seconds_count')?.value ?? 0,
    sum: values.find((v) => v.metricName === 'realchat_end_to_end_seconds_sum')?.value ?? 0,
  };
}

describe.each([true, false])('embedded pipeline (tracing %s)', (traced) => {
  const exporter = new InMemorySpanExporter();
  const secret = hex(32);
  const auth = createAuthenticator({ secret });
  let app: RealChat;
  let conv: string;
  const aliceId = randomUUID();
  let alice: TestClient;
  let bob: TestClient;

  beforeAll(async () => {
    const config = loadConfig({ PORT: '0', REALCHAT_JWT_SECRET: secret, LOG_LEVEL: 'silent' });
    const tracing = traced
      ? createTracing({ serviceName: 'realchat-test', instanceId: config.nodeId, exporter, sampleRatio: 1, processor: 'simple' })
      : undefined;
    app = await startRealChat(config, {
      ephemeralEmbedded: true,
      logger: createLogger({ level: 'silent', nodeId: config.nodeId, role: 'gateway' }),
      ...(tracing ? { tracing } : {}),
    });
    const b = randomUUID();
    conv = await createConversationAt(app.port, await auth.issue(aliceId), [b]);
    alice = await TestClient.connect(`ws://127.0.0.1:${app.port}/v1/ws`, await auth.issue(aliceId));
    bob = await TestClient.connect(`ws://127.0.0.1:${app.port}/v1/ws`, await auth.issue(b));
  }, 180_000);
  afterAll(async () => {
    alice?.close();
    bob?.close();
    await app?.close();
  });

  const spansOf = (traceId: string) =>
    exporter
      .getFinishedSpans()
      .filter((s: ReadableSpan) => s.spanContext().traceId === traceId)
      .map((s) => ({ name: s.name, spanId: s.spanContext().spanId, parentSpanId: s.parentSpanContext?.spanId }));

  it('measures end to end latency (commit to socket write) on the gateway', async () => {
    const before = await endToEndCount(app);
    const ack = await alice.sendMessage(conv, `e2e-${randomUUID()}`, { text: 'latency' });
    expect(ack.type).toBe('ack');
    await bob.waitFor((f) => f.type === 'message' && f.message.message_id === ack.message_id);
    const after = await until('the histogram to move', async () => {
      const now = await endToEndCount(app);
      return now.count > before.count ? now : null;
    });
    expect(after.count).toBeGreaterThan(before.count);
    expect(after.sum).toBeGreaterThanOrEqual(before.sum);
    expect(await app.metrics.registry.metrics()).toMatch(/realchat_end_to_end_seconds_bucket\{le="0.005",node_id="[^"]+"\}/);
  });

  // Registered only in the variant they are about (not registered-and-skipped in the other).
  if (traced)
    it('a WebSocket send with a traceparent: one trace, the client span as the root, every role a span', async () => {
      const parent = clientTraceparent();
      const { traceId, spanId } = parseTraceparent(parent)!;
      const key = `ws-${randomUUID()}`;
      alice.send({ type: 'send', conversation_id: conv, idempotency_key: key, payload: { text: 'traced' }, traceparent: parent });
      await bob.waitFor((f) => f.type === 'message' && f.message.idempotency_key === key);
      const spans = await until('four spans', () => (spansOf(traceId).length >= 4 ? spansOf(traceId) : null));
      expect(spans).toHaveLength(4);
      expectChain(spans, spanId);
    });

  if (traced)
    it('a REST send with a traceparent header, and a send without one (a new trace)', async () => {
      const parent = clientTraceparent();
      const { traceId, spanId } = parseTraceparent(parent)!;
      const key = `rest-${randomUUID()}`;
      const r = await fetch(`http://127.0.0.1:${app.port}/v1/conversations/${conv}/messages`, {
        method: 'POST',
        headers: { authorization: `Bearer ${await auth.issue(aliceId)}`, traceparent: parent },
        body: JSON.stringify({ idempotency_key: key, payload: { text: 'rest' } }),
      });
      expect(r.status).toBe(201);
      await bob.waitFor((f) => f.type === 'message' && f.message.idempotency_key === key);
      expectChain(await until('four spans', () => (spansOf(traceId).length >= 4 ? spansOf(traceId) : null)), spanId);

      const plain = `plain-${randomUUID()}`;
      const ack = await alice.sendMessage(conv, plain, { text: 'untraced client' });
      await bob.waitFor((f) => f.type === 'message' && f.message.idempotency_key === plain);
      const send = await until('the send span', () =>
        exporter.getFinishedSpans().find((s) => s.name === 'send' && s.attributes['realchat.sequence'] === ack.sequence_number),
      );
      const id = send.spanContext().traceId;
      expectChain(await until('four spans', () => (spansOf(id).length >= 4 ? spansOf(id) : null)));
    });

  if (!traced)
    it('off: nothing is recorded', () => {
      expect(exporter.getFinishedSpans()).toHaveLength(0);
    });
});

/** An OTLP/HTTP (JSON) receiver: what every role process exports. */
interface CollectedSpan {
  service: string;
  name: string;
  traceId: string;
  spanId: string;
  parentSpanId: string | undefined;
}

function idHex(v: unknown): string | undefined {
  if (typeof v !== 'string' || v === '') return undefined;
  return /^[0-9a-f]+$/.test(v) ? v : Buffer.from(v, 'base64').toString('hex');
}

async function startCollector(): Promise<{ port: number; spans: CollectedSpan[]; close(): Promise<void> }> {
  const spans: CollectedSpan[] = [];
  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      let body = Buffer.concat(chunks);
      if (req.headers['content-encoding'] === 'gzip') body = gunzipSync(body);
      const doc = JSON.parse(body.toString()) as { resourceSpans?: any[] };
      for (const rs of doc.resourceSpans ?? []) {
        const service = rs.resource?.attributes?.find((a: any) => a.key === 'service.name')?.value?.stringValue ?? '';
        for (const ss of rs.scopeSpans ?? [])
          for (const s of ss.spans ?? [])
            spans.push({
              service,
              name: s.name,
              traceId: idHex(s.traceId)!,
              spanId: idHex(s.spanId)!,
              parentSpanId: idHex(s.parentSpanId),
            });
      }
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end('{}');
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as { port: number }).port,
    spans,
    close: () => new Promise((resolve) => server.close(() => resolve())),
  };
}

describe('through real Kafka, every role its own process', () => {
  let kafka: KafkaHandle;
  let collector: Awaited<ReturnType<typeof startCollector>>;
  const roles: RoleProcess[] = [];
  let gatewayPort: number;
  const secret = hex(32);
  const auth = createAuthenticator({ secret });
  const EVENTS = `realchat.events.trace-${hex(3)}`;

  beforeAll(async () => {
    collector = await startCollector();
    kafka = await startKafka();
    const databaseUrl = await freshDatabase();
    gatewayPort = await freePort();
    const env = {
      DATABASE_URL: databaseUrl,
      KAFKA_BROKERS: kafka.brokers,
      REALCHAT_JWT_SECRET: secret,
      ...UNLIMITED_RATES,
      REALCHAT_EVENTS_TOPIC: EVENTS,
      REALCHAT_TOPIC_PARTITIONS: '2',
      REALCHAT_RELAY_POLL_MS: '200',
      REALCHAT_KAFKA_TIMEOUT_MS: '5000',
      OTEL_EXPORTER_OTLP_ENDPOINT: `http://127.0.0.1:${collector.port}`,
      OTEL_BSP_SCHEDULE_DELAY: '100',
    };
    roles.push(await spawnRole('gateway', { ...env, PORT: String(gatewayPort), REALCHAT_NODE_ID: 'trace-gw' }));
    roles.push(await spawnRole('relay', { ...env, REALCHAT_NODE_ID: 'trace-relay', METRICS_PORT: String(await freePort()) }));
    roles.push(await spawnRole('delivery', { ...env, REALCHAT_NODE_ID: 'trace-delivery', METRICS_PORT: String(await freePort()) }));
  }, 240_000);

  afterAll(async () => {
    for (const r of roles) await r.crash().catch(() => {});
    await kafka?.stop().catch(() => {});
    await collector?.close();
  }, 120_000);

  it('one trace: gateway send, relay publish, delivery route, gateway deliver; the record carries traceparent and trace_id', async () => {
    const [a, b] = [randomUUID(), randomUUID()];
    const conv = await createConversationAt(gatewayPort, await auth.issue(a), [b]);
    const ws = `ws://127.0.0.1:${gatewayPort}/v1/ws`;
    const alice = await TestClient.connect(ws, await auth.issue(a));
    const bob = await TestClient.connect(ws, await auth.issue(b));
    try {
      const parent = clientTraceparent();
      const { traceId, spanId } = parseTraceparent(parent)!;
      // One send of this trace whose whole chain was exported. The gateway's delivery consumer starts
      // at the latest offset once it joined, and a message that arrives by gap fill has no deliver
      // span: send until one went the whole way live.
      const chainOf = () => {
        const mine = collector.spans.filter((s) => s.traceId === traceId);
        for (const send of mine.filter((s) => s.name === 'send')) {
          const publish = mine.find((s) => s.name === 'publish' && s.parentSpanId === send.spanId);
          const route = publish && mine.find((s) => s.name === 'route' && s.parentSpanId === publish.spanId);
          const deliver = route && mine.find((s) => s.name === 'deliver' && s.parentSpanId === route.spanId);
          if (deliver) return [send, publish, route, deliver];
        }
        return null;
      };
      let chain: CollectedSpan[] | null = null;
      for (let attempt = 0; attempt < 30 && !chain; attempt++) {
        const key = `k-${randomUUID()}`;
        alice.send({ type: 'send', conversation_id: conv, idempotency_key: key, payload: { text: 'traced' }, traceparent: parent });
        await bob.waitFor((f) => f.type === 'message' && f.message.idempotency_key === key, 15_000);
        chain = await until('spans from every role', chainOf, 5000).catch(() => null);
      }
      if (!chain)
        throw new Error(`no complete chain; spans of the trace: ${JSON.stringify(collector.spans.filter((s) => s.traceId === traceId))}`);
      expectChain(chain, spanId);
      expect(Object.fromEntries(chain.map((s) => [s.name, s.service]))).toEqual({
        send: 'realchat-gateway',
        publish: 'realchat-relay',
        route: 'realchat-delivery',
        deliver: 'realchat-gateway',
      });

      // The public topic contract (docs/events.md): traceparent = the relay's publish span, trace_id = the W3C trace id.
      const client = new kafkajs.Kafka({ brokers: [kafka.brokers], logLevel: kafkajs.logLevel.NOTHING });
      const consumer = client.consumer({ groupId: `trace-check-${hex(4)}` });
      const seen: Array<Record<string, string>> = [];
      await consumer.connect();
      try {
        await consumer.subscribe({ topic: EVENTS, fromBeginning: true });
        await consumer.run({
          eachMessage: async ({ message }) => {
            const h = Object.fromEntries(Object.entries(message.headers ?? {}).map(([k, v]) => [k, String(v)]));
            if (h.traceparent && traceIdOf(h.traceparent) === traceId) seen.push(h);
          },
        });
        await until('the traced records', () => seen.length > 0, 30_000);
      } finally {
        await consumer.disconnect();
      }
      for (const h of seen) expect(h.trace_id).toBe(traceId);
      // The record of the send whose chain is complete carries exactly its publish span.
      expect(seen.some((h) => parseTraceparent(h.traceparent)!.spanId === chain![1]!.spanId)).toBe(true);
    } finally {
      alice.close();
      bob.close();
    }
  }, 180_000);
});
