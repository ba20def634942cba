/**
 * The webhook dispatcher process (distributed mode, `npm run webhooks`): a consumer group of its
 * own (REALCHAT_WEBHOOK_GROUP) on the public event topic. A batch's offsets are marked only once its
 * delivery rows are committed, so a crash re-reads it and the (webhook, event) key drops what was
 * already queued. Several may run: they share the delivery table (sender.ts).
 */
import { ConfigError, type Config } from '../../common/config.js';
import { runMain } from '../../common/process-main.js';
import { createLogger } from '../../common/log.js';
import { createMetrics } from '../../common/metrics.js';
import { createConfiguredSql } from '../../common/db.js';
import { startWebhookDispatcher } from './dispatcher.js';
import { runStreamConsumerProcess } from '../stream-consumer-process.js';

export async function runWebhooks(config: Config): Promise<{ stop(): Promise<void> }> {
  if (!config.kafkaBrokers) throw new ConfigError('the webhook dispatcher needs KAFKA_BROKERS (the embedded default runs it in-process)');
  if (!config.databaseUrl) throw new ConfigError('the webhook dispatcher needs DATABASE_URL (its delivery table)');
  const log = createLogger({ level: config.logLevel, nodeId: config.nodeId, role: 'webhooks' });
  const metrics = createMetrics({ nodeId: config.nodeId });
  const sql = createConfiguredSql(config.timeouts, {
    url: config.databaseUrl,
    maxConnections: 4,
    applicationName: `realchat-webhooks-${config.nodeId}`,
  });
  const dispatcher = startWebhookDispatcher({ config, sql, log, registry: metrics.registry });
  // A new group starts from what the topic still holds: webhooks registered before the dispatcher
  // first ran get those events too (the (webhook, event) key drops repeats).
  return runStreamConsumerProcess({
    config,
    log,
    metrics,
    sql,
    role: 'webhooks',
    groupId: config.webhooks.groupId,
    ingest: (records) => dispatcher.ingest(records),
    background: true,
    close: () => dispatcher.stop(),
  });
}

if (import.meta.url === `file://${process.argv[1]}`) runMain('webhooks', runWebhooks);
