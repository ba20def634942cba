/**
 * The mirror applier process (`npm run mirror`, docs/multi-region.md): applies the stream of
 * region REALCHAT_MIRROR_SOURCE, mirrored into this region's Kafka as
 * `<source>.realchat.events.v1` by MirrorMaker 2, to this region's database. One process (or
 * several, one consumer group) per source region. Offsets are marked only after a batch's
 * transaction committed, and applying is idempotent, so a crash at any point re-applies at most
 * the unmarked records and changes nothing twice.
 */
import { ConfigError, type Config } from '../../common/config.js';
import { createConfiguredSql } from '../../common/db.js';
import { createLogger } from '../../common/log.js';
import { createMetrics } from '../../common/metrics.js';
import { runMain } from '../../common/process-main.js';
import { runStreamConsumerProcess } from '../stream-consumer-process.js';
import { createMirrorApplier } from './applier.js';
import { failover } from './failover.js';
import { createFailoverWatch, httpReachable } from './failover-watch.js';

/** MirrorMaker 2's default replication policy names a mirrored topic `<source alias>.<topic>`. */
export function mirroredTopic(source: string, topic: string): string {
  return `${source}.${topic}`;
}

export async function runMirror(config: Config): Promise<{ stop(): Promise<void> }> {
  if (!config.kafkaBrokers || !config.databaseUrl) throw new ConfigError('the mirror applier needs KAFKA_BROKERS and DATABASE_URL');
  const source = config.mirrorSource;
  if (!source) throw new ConfigError('the mirror applier needs REALCHAT_MIRROR_SOURCE: the region whose stream it applies');
  if (source === config.region)
    throw new ConfigError(`REALCHAT_MIRROR_SOURCE names this region ("${source}"): a region never applies its own stream`);
  const peer = config.regions.peers.get(source);
  if (config.regions.failoverAfterMs > 0 && !peer)
    throw new ConfigError(`REALCHAT_REGION_FAILOVER_AFTER_MS needs the source region in REALCHAT_REGION_PEERS (${source}=http://…)`);
  const log = createLogger({ level: config.logLevel, nodeId: config.nodeId, role: 'mirror' });
  const metrics = createMetrics({ nodeId: config.nodeId });
  const sql = createConfiguredSql(config.timeouts, {
    url: config.databaseUrl,
    maxConnections: 2,
    applicationName: `realchat-mirror-${source}-${config.nodeId}`,
  });
  const applier = createMirrorApplier({
    sql,
    sourceRegion: source,
    log,
    queryTimeoutMs: config.timeouts.dbQueryMs,
    outboxMode: config.outboxMode,
  });
  const watch =
    config.regions.failoverAfterMs > 0 && peer
      ? createFailoverWatch({
          source,
          probe: httpReachable(peer, 1000),
          afterMs: config.regions.failoverAfterMs,
          failover: () =>
            failover(sql, { from: source, to: config.region, queryTimeoutMs: config.timeouts.dbQueryMs, outboxMode: config.outboxMode }),
          log,
        })
      : null;
  watch?.start(1000);
  return runStreamConsumerProcess({
    config,
    log,
    metrics,
    sql,
    role: 'mirror',
    groupId: `realchat-mirror-${source}`,
    topic: mirroredTopic(source, config.kafka.eventsTopic),
    ingest: async (records) => {
      const counts = await applier.apply(records);
      for (const [outcome, n] of Object.entries(counts)) if (n > 0) metrics.mirrorEvents.inc({ source_region: source, outcome }, n);
    },
    async close() {
      watch?.stop();
    },
  });
}

if (import.meta.url === `file://${process.argv[1]}`) runMain('mirror', runMirror);
