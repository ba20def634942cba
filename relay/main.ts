/**
 * The relay process (distributed mode): waits for the outbox lease, then publishes the outbox to
 * the Kafka event topic. Wakes on NOTIFY realchat_outbox (sent by the outbox trigger at commit),
 * polls as a fallback, retries with backoff and jitter, never drops a row.
 */
import { ConfigError, type Config } from '../common/config.js';
import { runMain } from '../common/process-main.js';
import { createLogger } from '../common/log.js';
import { createMetrics } from '../common/metrics.js';
import { createSql } from '../common/db.js';
import { createKafkaClient, createProducer, ensureTopics } from '../common/kafka/index.js';
import { BacklogMonitor } from '../common/backlog-monitor.js';
import { startOpsServer } from '../common/ops-server.js';
import { Sleeper } from '../common/backoff.js';
import { migrate } from '../sql/migrate.js';
import { createOutboxRelay, type OutboxRelay } from './outbox-relay.js';
import { createKafkaEventBus } from './kafka-bus.js';
import { OutboxLease } from './lease.js';

export async function runRelay(config: Config): Promise<{ stop(): Promise<void> }> {
  if (!config.databaseUrl || !config.kafkaBrokers) throw new ConfigError('the relay needs DATABASE_URL and KAFKA_BROKERS');
  const log = createLogger({ level: config.logLevel, nodeId: config.nodeId, role: 'relay' });
  const metrics = createMetrics({ nodeId: config.nodeId });
  const sql = createSql({
    url: config.databaseUrl,
    maxConnections: 4,
    connectTimeoutS: config.timeouts.dbConnectS,
    queryTimeoutMs: config.timeouts.dbQueryMs,
    applicationName: `realchat-relay-${config.nodeId}`,
  });
  await migrate(sql);
  const kafka = createKafkaClient({
    brokers: config.kafkaBrokers,
    clientId: `realchat-relay-${config.nodeId}`,
    log,
    requestTimeoutMs: config.kafka.requestTimeoutMs,
  });
  await ensureTopics(kafka, [{ topic: config.kafka.eventsTopic, partitions: config.kafka.partitions }]);
  const producer = await createProducer(kafka, { timeoutMs: config.kafka.requestTimeoutMs, log });
  const bus = createKafkaEventBus(producer, config.kafka.eventsTopic);
  const backlog = new BacklogMonitor(sql, { maxRows: config.limits.maxOutboxBacklog, slot: null }, 1000, config.timeouts.dbQueryMs, (s) => {
    metrics.outboxBacklog.set(s.backlog);
    metrics.outboxOldestAge.set(s.oldestAgeS);
  });
  backlog.start();
  const lease = new OutboxLease(sql, config.timeouts.dbQueryMs);
  const ops = await startOpsServer({ port: config.metricsPort, host: '127.0.0.1', registry: metrics.registry, healthy: () => true });

  let relay: OutboxRelay | null = null;
  const listener = await sql.listen('realchat_outbox', () => relay?.wake());
  const sleeper = new Sleeper();
  let running = true;

  const loop = (async () => {
    while (running) {
      try {
        if (!lease.held) {
          if (await lease.tryAcquire()) {
            log.info('outbox lease acquired: publishing');
            metrics.relayLeader.set(1);
            relay = createOutboxRelay({
              sql,
              bus,
              log,
              metrics,
              batchSize: config.limits.relayBatch,
              lingerMs: config.timeouts.relayLingerMs,
              pollMs: config.timeouts.relayPollMs,
              queryTimeoutMs: config.timeouts.dbQueryMs,
            });
            relay.start();
          }
        } else if (!(await lease.stillHeld())) {
          log.warn('outbox lease lost: stopping publication');
          metrics.relayLeader.set(0);
          await relay?.stop();
          relay = null;
        }
      } catch (err) {
        log.warn({ err }, 'outbox lease check failed');
      }
      await sleeper.sleep(1000);
    }
  })();

  log.info({ metrics_port: ops.port, topic: config.kafka.eventsTopic }, 'relay started');
  return {
    async stop() {
      running = false;
      sleeper.wake();
      await loop;
      await relay?.stop();
      await lease.release();
      metrics.relayLeader.set(0);
      backlog.stop();
      await listener.unlisten().catch(() => {});
      await bus.close();
      await ops.close();
      await sql.end({ timeout: 5 });
    },
  };
}

if (import.meta.url === `file://${process.argv[1]}`) runMain('relay', runRelay);
