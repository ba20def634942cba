/**
 * Real Apache Kafka (KRaft, one broker) and Kafka Connect + Debezium for integration tests, as local
 * JVM processes started by infra/kafka/kafka.sh and connect.sh (no containers here). The jars come
 * from infra/kafka/fetch.sh (the setup script runs it); without them these helpers throw at once.
 */
import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { freePort } from './postgres.js';
import { processAlive, repoRoot } from './proc.js';

const ROOT = repoRoot(dirname(fileURLToPath(import.meta.url)));
const KAFKA_SH = join(ROOT, 'infra', 'kafka', 'kafka.sh');
const CONNECT_SH = join(ROOT, 'infra', 'kafka', 'connect.sh');
const MIRROR_MAKER_SH = join(ROOT, 'infra', 'kafka', 'mirror-maker.sh');
const KAFKA_CACHE = process.env.REALCHAT_KAFKA_CACHE ?? join(ROOT, '.cache', 'kafka');
/** kafka.sh puts the KRaft controller listener on the client port + 100, the REMOTE one on + 200. */
const CONTROLLER_PORT_OFFSET = 100;
const REMOTE_PORT_OFFSET = 200;

export interface KafkaHandle {
  /** "127.0.0.1:<port>", for KAFKA_BROKERS */
  brokers: string;
  port: number;
  dir: string;
  /** SIGTERM, bounded wait, SIGKILL; deletes the dir when startKafka created it. */
  stop(): Promise<void>;
  /** kill -9 the broker (data kept). */
  kill(): Promise<void>;
  /** Starts it again on the same port and data; resolves once it serves requests. */
  restart(): Promise<void>;
  /** Idempotent (--if-not-exists), replication factor 1. */
  createTopic(name: string, partitions: number): Promise<void>;
}

export interface ConnectHandle {
  url: string;
  port: number;
  dir: string;
  /** SIGTERM, bounded wait, SIGKILL; deletes the dir when startConnect created it. */
  stop(): Promise<void>;
  /** kill -9 the worker (its config, offsets and status live in Kafka topics and survive). */
  crash(): Promise<void>;
  /**
   * Starts the worker again on the same port and dir; resolves once its REST API answers and, if
   * registerOutbox ran, the connector and its task are RUNNING again (they resume from the stored LSN).
   */
  restart(): Promise<void>;
  /**
   * Registers the Debezium outbox connector (infra/kafka/connect.sh register-outbox) publishing to
   * `topic`; resolves once the connector and its task run and the replication slot is active.
   * public.outbox must exist (run the migrations first): the publication is created for it.
   */
  registerOutbox(topic: string): Promise<void>;
}

export interface PgTarget {
  host: string;
  port: number;
  db: string;
  user?: string;
  password?: string;
  /** replication slot name (publication = `<slot>_pub`); default realchat_outbox */
  slot?: string;
}

function sh(argv: string[], env: Record<string, string> = {}, timeoutMs = 180_000): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile('bash', argv, { env: { ...process.env, ...env }, timeout: timeoutMs, maxBuffer: 16 * 1024 * 1024 }, (err, stdout, stderr) => {
      if (err)
        reject(new Error(`${argv.map((a) => a.replace(ROOT + '/', '')).join(' ')} failed: ${err.message}\n${String(stderr).slice(-3000)}`));
      else resolve(String(stdout));
    });
  });
}

function portIsFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = createServer();
    s.once('error', () => resolve(false));
    s.listen(port, '127.0.0.1', () => s.close(() => resolve(true)));
  });
}

/** Older names, kept for callers. */
export type KafkaBroker = KafkaHandle;
export type KafkaConnect = ConnectHandle;

/** A free client port whose controller port (+100) and remote port (+200) are free too. */
export async function freeBrokerPort(): Promise<number> {
  for (let i = 0; i < 50; i++) {
    const p = await freePort();
    if (p + REMOTE_PORT_OFFSET <= 65535 && (await portIsFree(p + CONTROLLER_PORT_OFFSET)) && (await portIsFree(p + REMOTE_PORT_OFFSET)))
      return p;
  }
  throw new Error('no free ports (p, p+100, p+200) for a Kafka broker');
}

/** The broker's REMOTE listener (kafka.sh), for a proxy in front of it. */
export const remoteListenerPort = (brokerPort: number): number => brokerPort + REMOTE_PORT_OFFSET;

function assertJars(): void {
  const fetched = existsSync(KAFKA_CACHE) && readdirSync(KAFKA_CACHE).some((f) => f.startsWith('.fetched-'));
  if (!fetched || !existsSync(join(KAFKA_CACHE, 'lib'))) {
    throw new Error(
      `Kafka jars are missing in ${KAFKA_CACHE}: run infra/kafka/fetch.sh once (needs mvn and Java 17; the setup script does it)`,
    );
  }
}

/**
 * `remoteAdvertised`: host:port of a proxy in front of the broker's REMOTE listener
 * (remoteListenerPort), which clients of another region bootstrap from (kafka.sh).
 */
export async function startKafka(opts: { dir?: string; port?: number; remoteAdvertised?: string } = {}): Promise<KafkaHandle> {
  assertJars();
  const ownDir = opts.dir === undefined;
  const dir = opts.dir ?? mkdtempSync(join(tmpdir(), 'realchat-kafka-'));
  const port = opts.port ?? (await freeBrokerPort());
  try {
    await sh(
      [KAFKA_SH, 'start-single', dir, String(port)],
      opts.remoteAdvertised ? { KAFKA_REMOTE_ADVERTISED: opts.remoteAdvertised } : {},
    );
  } catch (err) {
    await sh([KAFKA_SH, 'stop', dir]).catch(() => {});
    if (ownDir) rmSync(dir, { recursive: true, force: true });
    throw err;
  }
  return {
    brokers: `127.0.0.1:${port}`,
    port,
    dir,
    async stop() {
      await sh([KAFKA_SH, 'stop', dir]);
      if (ownDir) rmSync(dir, { recursive: true, force: true });
    },
    async kill() {
      await sh([KAFKA_SH, 'kill-broker', dir, '1']);
    },
    async restart() {
      await sh([KAFKA_SH, 'restart-broker', dir, '1']);
    },
    async createTopic(name: string, partitions: number) {
      await sh([KAFKA_SH, 'create-topic', dir, name, String(partitions), '1']);
    },
  };
}

export interface MirrorMakerHandle {
  dir: string;
  /** SIGTERM, bounded wait, SIGKILL; deletes its dir. */
  stop(): Promise<void>;
}

/** MirrorMaker 2 mirroring the event topic between every pair of the named regions' clusters (infra/kafka/mirror-maker.sh). */
export async function startMirrorMaker(clusters: Record<string, string>): Promise<MirrorMakerHandle> {
  assertJars();
  const dir = mkdtempSync(join(tmpdir(), 'realchat-mm2-'));
  try {
    await sh([MIRROR_MAKER_SH, 'start', dir, ...Object.entries(clusters).map(([region, brokers]) => `${region}=${brokers}`)]);
  } catch (err) {
    await sh([MIRROR_MAKER_SH, 'stop', dir]).catch(() => {});
    rmSync(dir, { recursive: true, force: true });
    throw err;
  }
  return {
    dir,
    async stop() {
      await sh([MIRROR_MAKER_SH, 'stop', dir]);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

export async function startConnect(brokers: string, pg: PgTarget, opts: { dir?: string; port?: number } = {}): Promise<ConnectHandle> {
  assertJars();
  const ownDir = opts.dir === undefined;
  // the dir name names the worker's group and internal topics: unique per call
  const dir = opts.dir ?? mkdtempSync(join(tmpdir(), 'realchat-connect-'));
  const port = opts.port ?? (await freePort());
  const url = `http://127.0.0.1:${port}`;
  try {
    await sh([CONNECT_SH, 'start', dir, String(port), brokers]);
  } catch (err) {
    await sh([CONNECT_SH, 'stop', dir]).catch(() => {});
    if (ownDir) rmSync(dir, { recursive: true, force: true });
    throw err;
  }
  const connectorName = process.env.OUTBOX_CONNECTOR ?? 'realchat-outbox';
  let registered = false;
  return {
    url,
    port,
    dir,
    async stop() {
      await sh([CONNECT_SH, 'stop', dir]);
      if (ownDir) rmSync(dir, { recursive: true, force: true });
    },
    async crash() {
      const pidFile = join(dir, 'pid');
      const pid = existsSync(pidFile) ? Number(readFileSync(pidFile, 'utf8').trim()) : NaN;
      if (Number.isInteger(pid) && pid > 0) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          /* already gone */
        }
        await waitUntil(() => !processAlive(pid), 10_000, `connect worker ${pid} still alive after SIGKILL`);
      }
      // A JVM's main thread turns zombie before its other threads have exited and closed its sockets.
      await waitUntil(() => portIsFree(port), 20_000, `connect port ${port} still held after the kill`);
      // connect.sh tests liveness with kill -0, which a not yet reaped (zombie) JVM passes
      rmSync(pidFile, { force: true });
    },
    async restart() {
      await sh([CONNECT_SH, 'start', dir, String(port), brokers]);
      if (!registered) return;
      let last = '';
      await waitUntil(
        async () => {
          const res = await fetch(`${url}/connectors/${connectorName}/status`, { signal: AbortSignal.timeout(5000) }).catch(() => null);
          last = res ? await res.text() : 'no answer';
          if (last.includes('"state":"FAILED"')) throw new Error(`connector ${connectorName} FAILED after restart: ${last}`);
          return (last.match(/"state":"RUNNING"/g) ?? []).length >= 2;
        },
        60_000,
        () => `connector ${connectorName} not RUNNING 60 s after the restart: ${last}`,
      );
    },
    async registerOutbox(topic: string) {
      const env: Record<string, string> = { OUTBOX_TOPIC: topic, OUTBOX_CONNECTOR: connectorName };
      if (pg.slot) env.OUTBOX_SLOT = pg.slot;
      await sh(
        [CONNECT_SH, 'register-outbox', url, pg.host, String(pg.port), pg.db, pg.user ?? 'postgres', pg.password ?? 'postgres'],
        env,
      );
      registered = true;
    },
  };
}

async function waitUntil(cond: () => boolean | Promise<boolean>, timeoutMs: number, what: string | (() => string)): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(typeof what === 'string' ? what : what());
    await new Promise((r) => setTimeout(r, 200));
  }
}

export interface KafkaClusterHandle {
  /** "127.0.0.1:p,127.0.0.1:p+1,127.0.0.1:p+2" */
  brokers: string;
  dir: string;
  /** kill -9 of broker n (1-3), data kept. */
  killBroker(n: number): Promise<void>;
  /** Starts broker n again; resolves once it serves requests. */
  restartBroker(n: number): Promise<void>;
  /** Replication factor 3 (min.insync.replicas 2). */
  createTopic(name: string, partitions: number): Promise<void>;
  stop(): Promise<void>;
}

/** Three KRaft brokers (replication factor 3, min.insync.replicas=2, unclean leader election off). */
export async function startKafkaCluster(): Promise<KafkaClusterHandle> {
  assertJars();
  const dir = mkdtempSync(join(tmpdir(), 'realchat-kafka-cluster-'));
  let base = 0;
  for (let i = 0; i < 50 && !base; i++) {
    const p = await freePort();
    if (p + 2 + CONTROLLER_PORT_OFFSET > 65535) continue;
    const ports = [p, p + 1, p + 2, p + CONTROLLER_PORT_OFFSET, p + 1 + CONTROLLER_PORT_OFFSET, p + 2 + CONTROLLER_PORT_OFFSET];
    if ((await Promise.all(ports.map(portIsFree))).every(Boolean)) base = p;
  }
  if (!base) throw new Error('no free port range for a 3-broker Kafka cluster');
  try {
    await sh([KAFKA_SH, 'start-cluster', dir, String(base)]);
  } catch (err) {
    await sh([KAFKA_SH, 'stop', dir]).catch(() => {});
    rmSync(dir, { recursive: true, force: true });
    throw err;
  }
  return {
    brokers: [0, 1, 2].map((k) => `127.0.0.1:${base + k}`).join(','),
    dir,
    killBroker: async (n) => void (await sh([KAFKA_SH, 'kill-broker', dir, String(n)])),
    restartBroker: async (n) => void (await sh([KAFKA_SH, 'restart-broker', dir, String(n)])),
    createTopic: async (name, partitions) => void (await sh([KAFKA_SH, 'create-topic', dir, name, String(partitions), '3'])),
    async stop() {
      await sh([KAFKA_SH, 'stop', dir]).catch(() => '');
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
