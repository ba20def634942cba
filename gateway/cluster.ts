/**
 * A gateway node's membership in the distributed layer (KAFKA_BROKERS set): its delivery topic and
 * the broadcast topic, its presence entries (REDIS_URL / REDIS_SENTINELS), typing to other nodes,
 * and consumer backpressure. Node topic lifecycle: created when the node starts, addressed while
 * the node is live in the registry, deleted by a delivery worker once the node has been dead for
 * REALCHAT_DEAD_NODE_TOPIC_TTL_MS (docs/architecture.md).
 */
import type { Config } from '../common/config.js';
import type { Logger } from '../common/log.js';
import type { Metrics } from '../common/metrics.js';
import { createKafkaClient, kafkaConnection, createLagProbe, createProducer, ensureTopics, type OutRecord } from '../common/kafka/index.js';
import { RedisPresence, presenceFromConfig, type PresenceRegistry } from '../common/presence.js';
import { CircuitBreaker } from '../common/breaker.js';
import { watchBreaker } from '../common/breaker-watch.js';
import { encodeEphemeralValue, nodeTopic, type EphemeralDelivery } from '../common/node-records.js';
import { startDeliveryConsumer } from './delivery-consumer.js';
import { PresenceAgent } from './presence-agent.js';
import { createRedisPresenceFeed } from './presence-feed.js';
import { startLoadMonitor } from './load-monitor.js';
import type { ClusterPorts, NodePorts, PipelineFactory } from './pipeline.js';

export interface ClusterLink extends ClusterPorts {
  stop(): Promise<void>;
}

/** The distributed pipeline: the relay is another process (woken by NOTIFY from the outbox trigger). */
export function clusterPipeline(deps: { config: Config; log: Logger; metrics: Metrics }): PipelineFactory {
  return async (node) => {
    const link = await startClusterLink({ ...deps, ...node });
    return { onEventCommitted: () => {}, settled: async () => {}, stop: () => link.stop(), cluster: link };
  };
}

export async function startClusterLink(deps: { config: Config; log: Logger; metrics: Metrics } & NodePorts): Promise<ClusterLink> {
  const { config, inbox, log, metrics } = deps;
  const nodeId = config.nodeId;
  const kafka = createKafkaClient({
    brokers: config.kafkaBrokers!,
    clientId: `realchat-gateway-${nodeId}`,
    log,
    ...kafkaConnection(config),
  });
  const presence: PresenceRegistry | null = presenceFromConfig(config);
  if (presence instanceof RedisPresence && !(await presence.ready(config.redis!.commandTimeoutMs * 4))) {
    log.warn('presence registry not reachable yet');
  }
  const topics = [config.kafka.deliveriesTopic, ...(presence ? [nodeTopic(nodeId)] : [])];
  await ensureTopics(kafka, [
    { topic: config.kafka.deliveriesTopic, partitions: config.kafka.partitions },
    ...(presence ? [{ topic: nodeTopic(nodeId), partitions: config.presence.nodeTopicPartitions }] : []),
  ]);
  const producer = await createProducer(kafka, { timeoutMs: config.kafka.requestTimeoutMs, log });
  const consumer = await startDeliveryConsumer({
    kafka,
    fetch: { minBytes: config.kafka.fetchMinBytes, maxWaitMs: config.kafka.fetchMaxWaitMs },
    commitIntervalMs: config.kafka.commitIntervalMs,
    nodeId,
    topics,
    handlers: { event: (d) => inbox.deliver(d), prepare: (ds) => inbox.prepare(ds), ephemeral: (d) => inbox.ephemeral(d) },
    log,
    metrics,
  });
  // Announce presence only once consuming: nothing can be addressed to this node before that.
  const agent = presence
    ? new PresenceAgent(
        presence,
        nodeId,
        config.presence.heartbeatMs,
        config.presence.ttlMs,
        log,
        deps.users,
        deps.rooms,
        deps.lapses,
        config.presence.liveCacheMs + 100,
      )
    : null;
  await agent?.start();
  // Presence for clients: per-user pub/sub channels on a connection of their own (gateway/presence-feed.ts).
  const presenceFeed =
    presence instanceof RedisPresence
      ? createRedisPresenceFeed({ registry: presence, pub: presence.redis, sub: presence.subscriberConnection(), log })
      : undefined;
  const stopLoad = startLoadMonitor(consumer, { pauseAboveMs: config.presence.pauseAboveLoopDelayMs, log, metrics });
  const breaker = new CircuitBreaker(config.breakers.redis, undefined, watchBreaker('redis', log, metrics));
  // This node's own consumer lag (grows while it is paused as overloaded).
  const group = `realchat-gateway-${nodeId}`;
  const lagProbe = createLagProbe(kafka);
  const lagTimer = setInterval(() => {
    for (const topic of topics) {
      lagProbe.lag(group, topic).then(
        (lags) => {
          for (const l of lags) metrics.consumerLag.set({ group, topic, partition: String(l.partition) }, l.lag);
        },
        () => {},
      );
    }
  }, 5000);
  lagTimer.unref();

  /** members null: a large room, addressed to the nodes with a subscriber. */
  async function routeEphemeral(
    conversationId: string,
    exceptUser: string,
    members: string[] | null,
    frame: Record<string, unknown>,
  ): Promise<void> {
    const base: Omit<EphemeralDelivery, 'recipients'> = { conversation_id: conversationId, except_user: exceptUser, origin: nodeId, frame };
    const out = new Map<string, OutRecord[]>();
    const toNode = (node: string, recipients: string[] | null) => {
      if (node !== nodeId)
        out.set(nodeTopic(node), [{ key: conversationId, value: encodeEphemeralValue({ ...base, recipients }), headers: {} }]);
    };
    let located = false;
    if (presence && breaker.allow()) {
      try {
        if (members === null) for (const node of (await presence.roomNodes([conversationId])).get(conversationId) ?? []) toNode(node, null);
        else for (const [node, users] of await presence.locate(members)) toNode(node, users);
        breaker.success();
        located = true;
      } catch {
        breaker.failure();
        metrics.presenceFallbacks.inc();
      }
    }
    if (!located)
      out.set(config.kafka.deliveriesTopic, [
        { key: conversationId, value: encodeEphemeralValue({ ...base, recipients: null }), headers: {} },
      ]);
    await producer.sendMany(out);
  }

  return {
    connected: async (u) => agent?.connected(u),
    disconnected: (u) => agent?.disconnected(u),
    publishEphemeral(conversationId, exceptUser, members, frame) {
      routeEphemeral(conversationId, exceptUser, members && [...members].filter((m) => m !== exceptUser), frame).catch((err) =>
        log.debug({ err, conversation_id: conversationId }, 'typing not forwarded to other nodes'),
      );
    },
    roomInterest: async (conversationId, interested) => agent?.roomInterest(conversationId, interested),
    consumerStatus: () => consumer.status ?? { running: true, detail: 'unknown' },
    presenceFeed,
    async stop() {
      clearInterval(lagTimer);
      await lagProbe.close();
      await agent?.stop();
      stopLoad();
      await consumer.stop();
      await producer.close();
      await presence?.close();
    },
  };
}
