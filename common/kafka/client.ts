/** The connection settings every Kafka client of ours shares, and the opaque client handle. */
import { connect, type Socket } from 'node:net';
import type { KafkaLogLevel } from '../config.js';
import type { Logger } from '../log.js';
import { KafkaJs, logLevel, type Kafka } from './kafkajs.js';

/** Every tunable in one place (our defaults, not kafkajs'). */
export const KAFKA_DEFAULTS = {
  connectionTimeoutMs: 3000,
  requestTimeoutMs: 10_000,
  /**
   * kafkajs' own retries (connections, coordinator look-ups, the consumer's fetch loop). At most
   * 1 s apart: a consumer looking for its group's new coordinator after a broker died backed off
   * up to 5 s between attempts, long enough to miss its session timeout and force a second
   * rebalance (docs/chaos.md, finding 11). Ten attempts span about 8.5 s.
   */
  clientRetry: { initialRetryTime: 200, maxRetryTime: 1000, retries: 10 },
  /**
   * At most 1 s between attempts: after a broker dies, sends fail until the controller has moved
   * its partitions (3-6 s in the chaos cluster), and a 3 s back-off then added up to 3 s more of
   * stall (docs/chaos.md, finding 11). Eight retries span about 6.5 s, inside the send deadline.
   */
  producerRetry: { retries: 8, initialRetryTime: 200, maxRetryTime: 1000 },
  consumer: {
    sessionTimeoutMs: 10_000,
    heartbeatIntervalMs: 1000,
    rebalanceTimeoutMs: 20_000,
    maxBytesPerPartition: 1024 * 1024,
    /**
     * How long the broker holds a fetch while there is nothing to read: records are answered at
     * once (minBytes 1; measured: a hop's p50 stays ~2 ms at 10, 100 or 500 ms), so a long wait
     * only saves the broker idle fetches (at 10 ms they cost it most of a core).
     */
    maxWaitTimeMs: 500,
    /** Bytes a fetch waits for (up to maxWaitTimeMs); 1: answer as soon as anything arrived. */
    minBytes: 1,
    /** Records handed to the handler at once (one partition). */
    chunk: 500,
    /**
     * How often a member commits its progress after batches (kafkajs alone committed after every
     * batch, in series with the next fetch: common/kafka/kafkajs.ts, patchPostBatchCommit). A
     * member that crashes leaves at most this much to be read again by the next owner.
     */
    autoCommitIntervalMs: 500,
    joinTimeoutMs: 30_000,
  },
  /**
   * Deadlines over kafkajs' own retries (which alone can keep one call going for minutes against
   * a dead broker): one admin operation, a lag poll (which runs every few seconds), a disconnect.
   */
  adminCallTimeoutMs: 15_000,
  lagCallTimeoutMs: 5000,
  disconnectTimeoutMs: 5000,
  /** ensureTopics: attempts over ~20 s before a start fails. */
  topicRetries: 9,
  producerConnectRetries: 4,
} as const;

declare const brand: unique symbol;
/** A handle on a Kafka cluster; what it wraps is private to common/kafka/. */
export interface KafkaClient {
  readonly [brand]: 'KafkaClient';
}

export interface KafkaOptions {
  brokers: string[];
  clientId: string;
  log: Logger;
  connectionTimeoutMs?: number;
  requestTimeoutMs?: number;
  /** What kafkajs itself logs (config: REALCHAT_KAFKA_LOG_LEVEL); warn unless given. */
  clientLogLevel?: KafkaLogLevel;
  /** Broker addresses (`host:port`, as the cluster advertises them) to connect to elsewhere (config: REALCHAT_ADDRESS_MAP). */
  addressMap?: ReadonlyMap<string, { host: string; port: number }>;
}

/** What every role's Kafka client takes from its configuration (REALCHAT_KAFKA_TIMEOUT_MS, REALCHAT_ADDRESS_MAP). */
export function kafkaConnection(config: {
  readonly kafka: { readonly requestTimeoutMs: number; readonly clientLogLevel: KafkaLogLevel };
  readonly addressMap: ReadonlyMap<string, { host: string; port: number }>;
}): Pick<KafkaOptions, 'requestTimeoutMs' | 'addressMap' | 'clientLogLevel'> {
  return { requestTimeoutMs: config.kafka.requestTimeoutMs, addressMap: config.addressMap, clientLogLevel: config.kafka.clientLogLevel };
}

const KAFKAJS_LEVEL: Record<KafkaLogLevel, number> = {
  error: logLevel.ERROR,
  warn: logLevel.WARN,
  info: logLevel.INFO,
  debug: logLevel.DEBUG,
};

/**
 * kafkajs' socket factory with the address map applied: brokers advertise their own addresses,
 * which a role behind a NAT or a proxy cannot reach as given. Plain TCP with kafkajs' keep-alive.
 */
function mappedSockets(map: ReadonlyMap<string, { host: string; port: number }>) {
  return ({ host, port, onConnect }: { host: string; port: number; onConnect: () => void }): Socket => {
    const to = map.get(`${host}:${port}`) ?? { host, port };
    const socket = connect({ host: to.host, port: to.port }, onConnect);
    socket.setKeepAlive(true, 60_000);
    return socket;
  };
}

export function createKafkaClient(opts: KafkaOptions): KafkaClient {
  const log = opts.log.child({ component: 'kafkajs' });
  const kafka = new KafkaJs({
    clientId: opts.clientId,
    brokers: opts.brokers,
    connectionTimeout: opts.connectionTimeoutMs ?? KAFKA_DEFAULTS.connectionTimeoutMs,
    requestTimeout: opts.requestTimeoutMs ?? KAFKA_DEFAULTS.requestTimeoutMs,
    retry: { ...KAFKA_DEFAULTS.clientRetry },
    ...(opts.addressMap && opts.addressMap.size > 0 ? { socketFactory: mappedSockets(opts.addressMap) } : {}),
    logLevel: KAFKAJS_LEVEL[opts.clientLogLevel ?? 'warn'],
    logCreator:
      () =>
      ({ level, namespace, log: entry }) => {
        const { message, ...rest } = entry;
        const fields = { ...rest, namespace };
        if (level <= logLevel.ERROR) log.error(fields, message);
        else if (level === logLevel.WARN) log.warn(fields, message);
        // kafkajs' info and debug go out at our info, so REALCHAT_KAFKA_LOG_LEVEL alone turns them on.
        else log.info(fields, message);
      },
  });
  return kafka as unknown as KafkaClient;
}

/** For the modules of common/kafka/ only (index.ts does not export it). */
export function raw(client: KafkaClient): Kafka {
  return client as unknown as Kafka;
}
