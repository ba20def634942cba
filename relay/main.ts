/**
 * The relay process (distributed mode): waits for the outbox lease, then publishes the outbox to
 * the Kafka event topic. Wakes on NOTIFY realchat_outbox (sent by the outbox trigger at commit),
 * polls as a fallback, retries with backoff and jitter, never drops a row.
 */
import { randomUUID } from 'node:crypto';
import { ConfigError, type Config } from '../common/config.js';
import { runMain } from '../common/process-main.js';
import { createLogger, type Logger } from '../common/log.js';
import { createMetrics } from '../common/metrics.js';
import { createConfiguredSql, type Sql } from '../common/db.js';
import { KafkaError, createKafkaClient, kafkaConnection, createProducer, ensureTopics } from '../common/kafka/index.js';
import { BacklogMonitor } from '../common/backlog-monitor.js';
import { probe, readiness, startOpsServer, type DependencyCheck, type Readiness } from '../common/ops-server.js';
import { Sleeper, backoffMs } from '../common/backoff.js';
import { withTimeout } from '../common/timeout.js';
import { migrateWhenReachable } from '../sql/migrate.js';
import { createOutboxRelay } from './outbox-relay.js';
import { createKafkaEventBus } from './kafka-bus.js';
import { OutboxLease } from './lease.js';
import { createLeaderRelay, type LeaderRelay } from './leader.js';
import { tracingFromConfig } from '../common/tracing.js';

/**
 * LISTEN with a deadline, retried in the background until it succeeds: a database that accepts the
 * connection but never answers (paused, overloaded) must not hang the start. Until it listens, the
 * relay finds new rows by polling (REALCHAT_RELAY_POLL_MS).
 */
export function listenWithRetry(
  sql: Sql,
  channel: string,
  onNotify: () => void,
  opts: { timeoutMs: number; log: Logger },
): { listening: () => boolean; stop(): Promise<void> } {
  let listener: { unlisten(): Promise<void> } | null = null;
  let stopped = false;
  const sleeper = new Sleeper();
  type Listening = Awaited<ReturnType<Sql['listen']>>;
  // One LISTEN in flight at a time: a retry waits for the same one rather than adding a listener
  // per attempt (each would call onNotify once more per notification).
  let pending: Promise<Listening> | null = null;
  const done = (async () => {
    for (let attempt = 0; !stopped; attempt++) {
      const current = (pending ??= sql.listen(channel, onNotify));
      current.then(
        (l) => {
          // A LISTEN that completes after its deadline still delivers notifications: keep it.
          if (stopped) void l.unlisten().catch(() => {});
          else listener ??= l;
        },
        () => {
          if (pending === current) pending = null;
        },
      );
      try {
        listener = await withTimeout(current, opts.timeoutMs, `LISTEN ${channel}`);
        return;
      } catch (err) {
        if (listener) return;
        opts.log.warn({ err, attempt }, 'LISTEN failed: polling until it succeeds');
      }
      await sleeper.sleep(backoffMs(attempt, 500, 10_000) + 500);
    }
  })();
  return {
    listening: () => listener !== null,
    async stop() {
      stopped = true;
      sleeper.wake();
      await done;
      await listener?.unlisten().catch(() => {});
    },
  };
}

export async function runRelay(config: Config): Promise<{ stop(): Promise<void> }> {
  if (!config.databaseUrl || !config.kafkaBrokers) throw new ConfigError('the relay needs DATABASE_URL and KAFKA_BROKERS');
  const log = createLogger({ level: config.logLevel, nodeId: config.nodeId, role: 'relay' });
  const metrics = createMetrics({ nodeId: config.nodeId });
  const tracing = tracingFromConfig(config, 'relay');
  const sql = createConfiguredSql(config.timeouts, {
    url: config.databaseUrl,
    maxConnections: 4,
    applicationName: `realchat-relay-${config.nodeId}`,
  });
  // The lease's own connection (relay/lease.ts): its backend pid stands for this process in the lease row.
  const leaseSql = createConfiguredSql(config.timeouts, {
    url: config.databaseUrl,
    maxConnections: 1,
    applicationName: `realchat-relay-${config.nodeId}-lease`,
    maxLifetimeS: null,
  });
  const probeMs = Math.min(1000, config.timeouts.dbQueryMs);
  // The ops port comes up first, so /readyz says what a slow start is waiting for.
  let starting: string | null = 'applying migrations';
  let leader: LeaderRelay | null = null;
  const ready = async (): Promise<Readiness> => {
    const pg = await probe('postgres ping', probeMs, () => sql`SELECT 1`);
    const checks: Record<string, DependencyCheck> = { postgres: pg };
    if (starting !== null) return readiness({ ...checks, startup: { ok: false, detail: starting } });
    const state = leader?.state ?? 'standby';
    if (state === 'leader') {
      // The leader must be able to publish: its last round failing on Kafka means it cannot.
      const err = leader?.relay?.lastError;
      checks.kafka = err instanceof KafkaError ? { ok: false, detail: err.message } : { ok: true };
      if (err && !(err instanceof KafkaError) && pg.ok)
        checks.postgres = { ok: false, detail: err instanceof Error ? err.message : String(err) };
    }
    return readiness(checks, { role: state });
  };
  const ops = await startOpsServer({ port: config.metricsPort, host: '127.0.0.1', registry: metrics.registry, healthy: () => true, ready });
  try {
    await migrateWhenReachable(sql, log);
    starting = 'connecting to Kafka';
    const kafka = createKafkaClient({
      brokers: config.kafkaBrokers,
      clientId: `realchat-relay-${config.nodeId}`,
      log,
      ...kafkaConnection(config),
    });
    await ensureTopics(kafka, [{ topic: config.kafka.eventsTopic, partitions: config.kafka.partitions }]);
    const producer = await createProducer(kafka, { timeoutMs: config.kafka.requestTimeoutMs, log });
    const bus = createKafkaEventBus(producer, config.kafka.eventsTopic);
    const backlog = new BacklogMonitor(
      sql,
      { maxRows: config.limits.maxOutboxBacklog, slot: null },
      1000,
      config.timeouts.dbQueryMs,
      (s) => {
        metrics.outboxBacklog.set(s.backlog);
        metrics.outboxOldestAge.set(s.oldestAgeS);
      },
    );
    backlog.start();
    const t = config.timeouts;
    const lease = new OutboxLease({
      sql: leaseSql,
      // Unique per process: a restarted relay with the same node id is another holder.
      holder: `${config.nodeId}/${randomUUID()}`,
      ttlMs: t.relayLeaseTtlMs,
      marginMs: t.relayLeaseMarginMs,
      timeoutMs: Math.min(t.dbQueryMs, t.relayLeaseTtlMs - t.relayLeaseMarginMs),
    });
    const leading = createLeaderRelay({
      lease,
      renewMs: t.relayLeaseRenewMs,
      log,
      metrics,
      createRelay: (fence) =>
        createOutboxRelay({
          sql,
          bus,
          log,
          metrics,
          batchSize: config.limits.relayBatch,
          lingerMs: t.relayLingerMs,
          pollMs: t.relayPollMs,
          queryTimeoutMs: t.dbQueryMs,
          fence,
          tracing,
        }),
    });
    leader = leading;
    const listener = listenWithRetry(sql, 'realchat_outbox', () => leading.relay?.wake(), { timeoutMs: t.dbQueryMs, log });
    leading.start();
    starting = null;

    log.info({ metrics_port: ops.port, topic: config.kafka.eventsTopic, lease_ttl_ms: t.relayLeaseTtlMs }, 'relay started');
    return {
      async stop() {
        await leading.stop();
        backlog.stop();
        await listener.stop();
        await bus.close();
        await ops.close();
        await leaseSql.end({ timeout: 5 });
        await sql.end({ timeout: 5 });
        await tracing.shutdown().catch(() => {});
      },
    };
  } catch (err) {
    await ops.close();
    await leaseSql.end({ timeout: 1 }).catch(() => {});
    await sql.end({ timeout: 1 }).catch(() => {});
    throw err;
  }
}

if (import.meta.url === `file://${process.argv[1]}`) runMain('relay', runRelay);
