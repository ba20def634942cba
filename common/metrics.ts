import { readdir, stat } from 'node:fs/promises';
import { Registry, Counter, Gauge, Histogram, collectDefaultMetrics } from 'prom-client';

const GC_PAUSE_BUCKETS = [0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.2, 0.5, 1, 2, 5];

/** One registry per node instance (no global default registry) so tests can run several nodes in one process. */
export function createMetrics(opts: { nodeId: string; defaultMetrics?: boolean }) {
  const registry = new Registry();
  registry.setDefaultLabels({ node_id: opts.nodeId });
  // prom-client's default GC buckets (1 ms, 10 ms, 100 ms, 1 s...) put every pause that matters to
  // a 150 ms p99 into one bucket: benchmarks reported "GC pause p99 100 ms" for every process.
  if (opts.defaultMetrics !== false) {
    collectDefaultMetrics({ register: registry, gcDurationBuckets: GC_PAUSE_BUCKETS });
    replaceOpenFdsGauge(registry);
  }
  const r = [registry];
  return {
    registry,
    activeConnections: new Gauge({
      name: 'realchat_active_connections',
      help: 'Open WebSocket connections with a verified token (registered on this node)',
      registers: r,
    }),
    internalErrors: new Counter({
      name: 'realchat_internal_errors_total',
      help: 'Unexpected errors caught at a guard (uWS callbacks, process-level handlers); each one is a bug',
      labelNames: ['where'] as const,
      registers: r,
    }),
    messagesAccepted: new Counter({
      name: 'realchat_messages_accepted_total',
      help: 'Messages committed (new, not duplicates), by where they came in: ws, rest, region (forwarded by a gateway of another region)',
      labelNames: ['via'] as const,
      registers: r,
    }),
    duplicateSends: new Counter({
      name: 'realchat_duplicate_sends_total',
      help: 'Sends answered from an existing idempotency key',
      registers: r,
    }),
    dbWriteSeconds: new Histogram({
      name: 'realchat_db_write_seconds',
      help: 'Latency of the message write transaction (sequence + message + outbox)',
      buckets: [0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
      registers: r,
    }),
    deliveries: new Counter({
      name: 'realchat_deliveries_total',
      help: 'Message frames written to a connection, by how they came (the frame field `via`): live (the event pipeline), fill (read from the database because the live path skipped a sequence: outside faults, pipeline loss), resume (the catch-up after hello)',
      labelNames: ['via'] as const,
      registers: r,
    }),
    failedDeliveries: new Counter({
      name: 'realchat_failed_deliveries_total',
      help: 'Deliveries that could not be made; the client catches up by sequence on reconnect',
      labelNames: ['reason'] as const,
      registers: r,
    }),
    wsWrites: new Counter({
      name: 'realchat_ws_writes_total',
      help: 'Corked socket writes to WebSocket connections (each carries the frames one connection was written in one event-loop turn)',
      registers: r,
    }),
    wsFramesWritten: new Counter({
      name: 'realchat_ws_frames_written_total',
      help: 'WebSocket frames written; divided by realchat_ws_writes_total: frames per socket write',
      registers: r,
    }),
    wsErrors: new Counter({
      name: 'realchat_ws_errors_total',
      help: 'Error frames sent, by code',
      labelNames: ['code'] as const,
      registers: r,
    }),
    httpRequests: new Counter({
      name: 'realchat_http_requests_total',
      help: 'REST requests by route and status',
      labelNames: ['route', 'status'] as const,
      registers: r,
    }),
    outboxPublished: new Counter({ name: 'realchat_outbox_published_total', help: 'Outbox events published to the bus', registers: r }),
    outboxBacklog: new Gauge({
      name: 'realchat_outbox_backlog',
      help: 'Unpublished outbox rows seen at the last relay poll',
      registers: r,
    }),
    relayErrors: new Counter({
      name: 'realchat_relay_errors_total',
      help: 'Relay poll/publish failures (retried with backoff)',
      registers: r,
    }),
    outboxOldestAge: new Gauge({
      name: 'realchat_outbox_oldest_age_seconds',
      help: 'Age of the oldest unpublished outbox row',
      registers: r,
    }),
    slotLag: new Gauge({
      name: 'realchat_replication_slot_lag_bytes',
      help: 'WAL retained for the Debezium slot (outbox mode wal); -1 when the slot is missing',
      registers: r,
    }),
    relayLeader: new Gauge({ name: 'realchat_relay_leader', help: '1 while this relay holds the outbox lease', registers: r }),
    sendsRefusedBacklog: new Counter({
      name: 'realchat_sends_refused_backlog_total',
      help: 'Sends refused because the outbox backlog passed its bound',
      registers: r,
    }),
    consumerLag: new Gauge({
      name: 'realchat_consumer_lag',
      help: 'Kafka consumer lag (end offset - committed) per partition',
      labelNames: ['group', 'topic', 'partition'] as const,
      registers: r,
    }),
    mirrorEvents: new Counter({
      name: 'realchat_mirror_events_total',
      help: "Records of another region's mirrored stream, by what the mirror applier did with them: applied, duplicate, foreign (not the source's own), unknownConversation, homedHere, reappended (after a failover), unknownType, invalid; gaps counts applied entries that skipped past the copy (docs/multi-region.md)",
      labelNames: ['source_region', 'outcome'] as const,
      registers: r,
    }),
    deadLettered: new Counter({
      name: 'realchat_dead_lettered_total',
      help: 'Event records sent to the dead-letter topic',
      labelNames: ['reason'] as const,
      registers: r,
    }),
    duplicatesSkipped: new Counter({
      name: 'realchat_duplicate_events_skipped_total',
      help: 'Events skipped by delivery dedup (conversation_id, sequence)',
      registers: r,
    }),
    consumerPaused: new Gauge({
      name: 'realchat_gateway_consumer_paused',
      help: '1 while this gateway has paused its delivery consumer (overloaded)',
      registers: r,
    }),
    presenceLapses: new Counter({
      name: 'realchat_presence_lapses_total',
      help: 'Times this gateway may have dropped out of the presence registry (heartbeat overdue or expired, entries lost); each ends with a catch-up of every connection from the database',
      registers: r,
    }),
    breakerOpen: new Gauge({
      name: 'realchat_breaker_open',
      help: 'Whether this process skips a dependency at once (1: its circuit breaker is open or half-open, 0: closed), by dependency (postgres: request-path database work refused unavailable; redis: presence lookups, deliveries broadcast)',
      labelNames: ['dependency'] as const,
      registers: r,
    }),
    presenceFallbacks: new Counter({
      name: 'realchat_presence_fallbacks_total',
      help: 'Deliveries broadcast because the presence registry failed',
      registers: r,
    }),
    // Presence for clients (gateway/presence-watch.ts).
    presenceChannels: new Gauge({
      name: 'realchat_presence_channels',
      help: 'Users whose presence this node watches (one Redis pub/sub channel each in a cluster)',
      registers: r,
    }),
    presenceNotices: new Counter({
      name: 'realchat_presence_notices_total',
      help: 'Presence changes: published (this node saw the transition), received (for a watched user), failed (publish or registry lookup failed; the recheck repairs), invalid (undecodable)',
      labelNames: ['result'] as const,
      registers: r,
    }),
    presenceFrames: new Counter({
      name: 'realchat_presence_frames_total',
      help: 'presence frames written to connections',
      registers: r,
    }),
    pipelineSeconds: new Histogram({
      name: 'realchat_pipeline_seconds',
      help: 'Time since an event was written (its outbox row / message created_at) when it reaches a stage: published (relay), routed and forwarded (delivery worker), received and written (gateway: consumed from Kafka, written to the sockets); node_hop: from the delivery worker writing a node record to the gateway reading it (per record)',
      labelNames: ['stage'] as const,
      // 10 ms steps up to 50 ms: the Kafka hop target is 10 ms and the 1,000 msg/s target 50 ms.
      buckets: [0.001, 0.002, 0.005, 0.01, 0.02, 0.03, 0.04, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1, 2.5, 5, 10],
      registers: r,
    }),
    endToEndSeconds: new Histogram({
      name: 'realchat_end_to_end_seconds',
      help: "End-to-end latency of live message delivery: from the message's commit (its created_at) to its frame written to this node's sockets, once per message and node",
      buckets: [0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1, 2.5, 5, 10],
      registers: r,
    }),
    deliveriesForwarded: new Counter({
      name: 'realchat_deliveries_forwarded_total',
      help: 'Delivery records produced for gateway nodes',
      registers: r,
    }),
  };
}

export type Metrics = ReturnType<typeof createMetrics>;

/** Where a process's open descriptors are listed, and how to read it (a seam for the fallback's test). */
export interface FdDirectory {
  stat(path: string): Promise<{ size: number }>;
  readdir(path: string): Promise<string[]>;
}

const PROC_FD = '/proc/self/fd';

/**
 * Linux 6.2 and later report the number of open descriptors as the size of /proc/self/fd; earlier
 * kernels report 0, and the directory is listed instead (its listing holds one descriptor itself).
 */
export async function countOpenFds(dir: FdDirectory = { stat, readdir }): Promise<number> {
  const { size } = await dir.stat(PROC_FD);
  return size > 0 ? size : (await dir.readdir(PROC_FD)).length - 1;
}

/**
 * prom-client's process_open_fds lists /proc/self/fd synchronously on every scrape: 12 ms of the
 * event loop at 12,500 descriptors, 21 ms at 19,000 (perf/metrics-scrape.ts), 5% of a gateway's
 * CPU in the reconnect-storm benchmark, which scrapes every second. Same name and meaning, counted
 * without the listing where the kernel allows, and never on the event loop.
 */
function replaceOpenFdsGauge(registry: Registry): void {
  const name = 'process_open_fds';
  if (!registry.getSingleMetric(name)) return; // not Linux: prom-client registers none either
  registry.removeSingleMetric(name);
  new Gauge({
    name,
    help: 'Number of open file descriptors.',
    registers: [registry],
    async collect() {
      try {
        this.set(await countOpenFds());
      } catch {
        // As prom-client: the last value stays.
      }
    },
  });
}
