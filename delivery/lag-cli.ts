/**
 * npm run lag: consumer lag of the delivery group per partition, and the outbox backlog, as JSON.
 * Reads KAFKA_BROKERS (and DATABASE_URL for the outbox figures).
 */
import { loadConfig } from '../common/config.js';
import { createLogger } from '../common/log.js';
import { consumerLag, createKafkaClient } from '../common/kafka/index.js';
import { createSql } from '../common/db.js';
import { readOutboxStats } from '../common/outbox.js';

const config = loadConfig();
if (!config.kafkaBrokers) {
  console.error('lag: KAFKA_BROKERS is not set');
  process.exit(2);
}
const log = createLogger({ level: 'error', nodeId: 'lag-cli', role: 'cli' });
const kafka = createKafkaClient({ brokers: config.kafkaBrokers, clientId: 'realchat-lag-cli', log });
const partitions = await consumerLag(kafka, config.kafka.deliveryGroupId, config.kafka.eventsTopic);
let outbox = null;
if (config.databaseUrl) {
  const sql = createSql({
    url: config.databaseUrl,
    maxConnections: 1,
    connectTimeoutS: 5,
    queryTimeoutMs: 5000,
    applicationName: 'realchat-lag-cli',
  });
  outbox = await readOutboxStats(sql, config.limits.maxOutboxBacklog + 1, 5000);
  await sql.end({ timeout: 5 });
}
console.log(
  JSON.stringify(
    {
      group: config.kafka.deliveryGroupId,
      topic: config.kafka.eventsTopic,
      total_lag: partitions.reduce((a, p) => a + p.lag, 0),
      partitions,
      outbox,
    },
    null,
    2,
  ),
);
