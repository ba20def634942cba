/** The delivery worker process (distributed mode). */
import { loadConfig, ConfigError, type Config } from '../common/config.js';
import { createLogger } from '../common/log.js';
import { createMetrics } from '../common/metrics.js';
import { startOpsServer } from '../common/ops-server.js';
import { startDeliveryWorker } from './worker.js';

export async function runDelivery(config: Config): Promise<{ stop(): Promise<void> }> {
  if (!config.kafkaBrokers) throw new ConfigError('the delivery worker needs KAFKA_BROKERS');
  const log = createLogger({ level: config.logLevel, nodeId: config.nodeId, role: 'delivery' });
  const metrics = createMetrics({ nodeId: config.nodeId });
  const worker = await startDeliveryWorker({ config, log, metrics });
  const ops = await startOpsServer({ port: config.metricsPort, host: '127.0.0.1', registry: metrics.registry, healthy: () => true });
  log.info({ metrics_port: ops.port, topic: config.kafka.eventsTopic, group: config.kafka.deliveryGroupId }, 'delivery started');
  return {
    async stop() {
      await worker.stop();
      await ops.close();
    },
  };
}

if (import.meta.url === `file://${process.argv[1]}`) {
  let config: Config;
  try {
    config = loadConfig();
  } catch (err) {
    console.error(`realchat delivery: ${(err as Error).message}`);
    process.exit(2);
  }
  runDelivery(config).then(
    (d) => {
      const stop = () => d.stop().then(() => process.exit(0), () => process.exit(1));
      process.once('SIGTERM', stop);
      process.once('SIGINT', stop);
    },
    (err) => {
      console.error('realchat delivery failed to start:', err);
      process.exit(1);
    },
  );
}
