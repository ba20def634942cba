/**
 * The distributed stack a chaos run owns: PostgreSQL, a 3-broker KRaft cluster (RF 3, min ISR 2),
 * Redis primary + replica + 3 sentinels, 3 gateways, 2 relays (or, with `relay: 'debezium'`, a Kafka
 * Connect worker running the Debezium outbox connector), 2 delivery workers, all on 127.0.0.1.
 * gateway-3 reaches PostgreSQL, Kafka and Redis, and relay-2 (or Connect) PostgreSQL, through proxies
 * of ours (network faults on each of those links).
 */
import { randomBytes } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import postgres from 'postgres';
import { freePort } from '../harness/postgres.js';
import { UNLIMITED_RATES } from '../harness/env.js';
import { type ExitRecord, KafkaCluster, NodeRole, Postgres, RedisSentinelSet, type Role, runEmergencyCleanup, sleep } from './procs.js';
import { ProxyProcess } from './proxy.js';
import { ConnectWorker } from './connect-worker.js';

export interface Link {
  name: string;
  proxy: ProxyProcess;
}

export interface StackOptions {
  gateways: number;
  /** Who publishes the outbox: our relays (`ts`), or Debezium in Kafka Connect from the WAL (no relays then). */
  relay: 'ts' | 'debezium';
  relays: number;
  deliveries: number;
  logDir: string;
  log: (msg: string) => void;
  /** Extra environment for every role. */
  env?: Record<string, string>;
}

export const CHAOS_TOPICS = { events: 'realchat.events.v1', deliveries: 'realchat.deliveries.v1', dlq: 'realchat.events.dlq.v1' };
const TOPICS = Object.values(CHAOS_TOPICS);
const PARTITIONS = 6;
let exitHook = false;
const SETTLE_MS = 15_000;

export class ChaosStack {
  readonly gateways: NodeRole[] = [];
  readonly relays: NodeRole[] = [];
  readonly deliveries: NodeRole[] = [];
  /** `--relay debezium`: the Connect worker that publishes the outbox. */
  connect: ConnectWorker | null = null;
  readonly links: Link[] = [];
  readonly unexpectedExits: ExitRecord[] = [];
  readonly secret = randomBytes(32).toString('hex');
  pg!: Postgres;
  kafka!: KafkaCluster;
  redis!: RedisSentinelSet;

  private constructor(private readonly o: StackOptions) {}

  static async start(o: StackOptions): Promise<ChaosStack> {
    // Kafka and PostgreSQL run in sessions of their own: they would outlive a runner that exits.
    if (!exitHook) {
      exitHook = true;
      process.once('exit', runEmergencyCleanup);
    }
    const s = new ChaosStack(o);
    try {
      await s.bringUp();
    } catch (err) {
      await s.stop().catch(() => {});
      throw err;
    }
    return s;
  }

  private async bringUp(): Promise<void> {
    const { log } = this.o;
    const t0 = Date.now();
    log('starting PostgreSQL, Kafka (3 brokers), Redis + Sentinel');
    // Settled together, so a failure of one never leaves another starting after the teardown ran.
    const results = await Promise.allSettled([
      Postgres.create({ logical: this.o.relay === 'debezium' }).then((p) => (this.pg = p)),
      KafkaCluster.createWithRetry(log).then((k) => (this.kafka = k)),
      RedisSentinelSet.create().then((r) => (this.redis = r)),
    ]);
    for (const r of results) if (r.status === 'rejected') throw r.reason;
    const [pg, kafka, redis] = [this.pg, this.kafka, this.redis];
    for (const t of TOPICS) await kafka.createTopic(t, PARTITIONS);
    log(`infrastructure up in ${Date.now() - t0} ms: pg ${pg.port}, kafka ${kafka.brokers}, sentinels ${redis.sentinelAddrs}`);

    const env: Record<string, string> = {
      KAFKA_BROKERS: kafka.brokers,
      REDIS_SENTINELS: redis.sentinelAddrs,
      REDIS_SENTINEL_NAME: redis.name,
      REALCHAT_JWT_SECRET: this.secret,
      ...UNLIMITED_RATES,
      REALCHAT_CONVERSATION_CREATES_PER_MIN: '100000',
      REALCHAT_MAX_CONNECTIONS_PER_ADDRESS: '1000000',
      REALCHAT_TOPIC_PARTITIONS: String(PARTITIONS),
      REALCHAT_NODE_TOPIC_PARTITIONS: '2',
      REALCHAT_KAFKA_TIMEOUT_MS: '5000',
      REALCHAT_DRAIN_TIMEOUT_MS: '3000',
      // Clients must notice a frozen node within seconds (pings every 2 s, SDK pong timeout 3 s).
      REALCHAT_HEARTBEAT_INTERVAL_MS: '2000',
      ...(this.o.relay === 'debezium' ? { REALCHAT_OUTBOX_MODE: 'wal' } : {}),
      ...this.o.env,
    };
    const direct = `postgres://postgres@127.0.0.1:${pg.port}/postgres`;
    const viaProxy = async (name: string) => {
      const proxy = await ProxyProcess.start(pg.port);
      this.links.push({ name, proxy });
      return `postgres://postgres@127.0.0.1:${proxy.port}/postgres`;
    };
    /**
     * A gateway's Kafka and Redis links through proxies too: its bootstrap list and sentinels are
     * the proxies, and REALCHAT_ADDRESS_MAP sends it to the proxies for the broker and Redis
     * addresses the cluster and Sentinel hand out.
     */
    const brokerPorts = kafka.brokers.split(',').map((b) => Number(b.split(':')[1]));
    const kafkaAndRedisViaProxies = async (name: string): Promise<Record<string, string>> => {
      const k = await ProxyProcess.start(...brokerPorts);
      this.links.push({ name: `${name}<->kafka`, proxy: k });
      const servers = redis.servers.map((r) => r.port);
      const sentinels = redis.sentinels.map((x) => x.port);
      const r = await ProxyProcess.start(...servers, ...sentinels);
      this.links.push({ name: `${name}<->redis`, proxy: r });
      const map = [
        ...brokerPorts.map((p, i) => `127.0.0.1:${p}=127.0.0.1:${k.ports[i]}`),
        ...[...servers, ...sentinels].map((p, i) => `127.0.0.1:${p}=127.0.0.1:${r.ports[i]}`),
      ];
      return {
        KAFKA_BROKERS: k.ports.map((p) => `127.0.0.1:${p}`).join(','),
        REDIS_SENTINELS: r.ports
          .slice(servers.length)
          .map((p) => `127.0.0.1:${p}`)
          .join(','),
        REALCHAT_ADDRESS_MAP: map.join(','),
        // Its Kafka client's every request, with broker and correlation id, in gateway-3.log: a
        // consumer that waits on a dead broker behind the proxy (docs/chaos.md finding 20) shows
        // which request it waits on. About 20 lines a second.
        REALCHAT_KAFKA_LOG_LEVEL: 'debug',
      };
    };
    const add = async (role: Role, i: number, list: NodeRole[], proxied: boolean) => {
      const name = `${role}-${i}`;
      const port = await freePort();
      const db = proxied ? await viaProxy(`${name}<->postgres`) : direct;
      const extra: Record<string, string> = role === 'gateway' ? { PORT: String(port) } : { METRICS_PORT: String(port) };
      if (proxied && role === 'gateway') Object.assign(extra, await kafkaAndRedisViaProxies(name));
      const r = new NodeRole(
        name,
        role,
        port,
        { ...env, ...extra, DATABASE_URL: db, REALCHAT_NODE_ID: name },
        this.o.logDir,
        this.unexpectedExits,
        log,
      );
      list.push(r);
      return r;
    };
    for (let i = 1; i <= this.o.gateways; i++) await add('gateway', i, this.gateways, i === 3);
    if (this.o.relay === 'ts') for (let i = 1; i <= this.o.relays; i++) await add('relay', i, this.relays, i === 2);
    for (let i = 1; i <= this.o.deliveries; i++) await add('delivery', i, this.deliveries, false);

    // The first gateway applies the migrations; the rest start together.
    await this.must(this.gateways[0]!);
    await Promise.all([...this.gateways.slice(1), ...this.relays, ...this.deliveries].map((r) => this.must(r)));
    if (this.o.relay === 'debezium') {
      // After the migrations (the connector's publication names the outbox table); its database link proxied.
      const proxy = await ProxyProcess.start(pg.port);
      this.links.push({ name: 'connect<->postgres', proxy });
      this.connect = await ConnectWorker.create(kafka.brokers, proxy.port, CHAOS_TOPICS.events);
      log('Kafka Connect up, the Debezium outbox connector running');
    }
    // The delivery group rebalances as its second member joins, shortly after both say "started";
    // a schedule started before that would charge the rebalance's reordering to the first fault, or
    // to nothing (fills outside fault windows).
    await sleep(SETTLE_MS);
    log(`stack ready in ${Date.now() - t0} ms (including ${SETTLE_MS / 1000} s to settle)`);
  }

  private async must(r: NodeRole): Promise<void> {
    if (!(await r.start(120_000)) || !r.pid) throw new Error(`${r.name} did not become ready (log: ${this.o.logDir}/${r.name}.log)`);
  }

  get roles(): NodeRole[] {
    return [...this.gateways, ...this.relays, ...this.deliveries];
  }

  gatewayUrls(): Array<{ url: string; up: boolean }> {
    return this.gateways.map((g) => ({ url: `ws://127.0.0.1:${g.port}/v1/ws`, up: g.up && !g.expectDown }));
  }

  /**
   * The relay that publishes now: from its metrics, else from the lease row (holder = "<node id>/<uuid>",
   * relay/main.ts), else null.
   */
  async relayLeader(): Promise<NodeRole | null> {
    for (const r of this.relays) {
      if (!r.up) continue;
      try {
        const res = await fetch(`http://127.0.0.1:${r.port}/metrics`, { signal: AbortSignal.timeout(1000) });
        const text = await res.text();
        if (/^realchat_relay_leader(\{[^}]*\})? 1$/m.test(text)) return r;
      } catch {
        /* not answering: not a leader we can see */
      }
    }
    const sql = postgres(this.pg.url, { max: 1, connect_timeout: 2, idle_timeout: 1, onnotice: () => {} });
    try {
      const rows = await Promise.race([
        sql<{ holder: string }[]>`SELECT holder FROM relay_lease WHERE name = 'outbox' AND expires_at > now()`,
        new Promise<never>((_, rej) => setTimeout(() => rej(new Error('timeout')), 2000)),
      ]);
      const node = rows[0]?.holder.split('/')[0];
      return this.relays.find((r) => r.name === node) ?? null;
    } catch {
      return null;
    } finally {
      void sql.end({ timeout: 1 }).catch(() => {});
    }
  }

  /** Every role's /metrics (gateways on their client port, the others on METRICS_PORT), for diagnosis. */
  async scrapeMetrics(dir: string): Promise<Record<string, Record<string, number>>> {
    mkdirSync(dir, { recursive: true });
    const sums: Record<string, Record<string, number>> = {};
    await Promise.all(
      this.roles.map(async (r) => {
        try {
          const res = await fetch(`http://127.0.0.1:${r.port}/metrics`, { signal: AbortSignal.timeout(3000) });
          const text = await res.text();
          writeFileSync(join(dir, `${r.name}.prom`), text);
          const s: Record<string, number> = {};
          for (const line of text.split('\n')) {
            const m = /^(realchat_[a-z_]+(?:_total|_backlog))(\{[^}]*\})? ([0-9.e+-]+)$/.exec(line);
            if (m) s[m[1]! + (m[2] ?? '')] = Number(m[3]);
          }
          sums[r.name] = s;
        } catch {
          /* a role that does not answer has nothing to add */
        }
      }),
    );
    return sums;
  }

  /** Safety net after the schedule: everything running, unpaused, unpartitioned. */
  async healAll(): Promise<void> {
    await Promise.all(this.links.map((l) => l.proxy.heal()));
    this.pg.resume();
    if (!this.pg.postmaster()) await this.pg.start();
    for (const s of [...this.redis.servers, ...this.redis.sentinels]) {
      if (s.paused) s.sig('SIGCONT');
      if (!s.pid) await s.start();
    }
    for (let n = 1; n <= 3; n++) {
      if (this.kafka.paused.has(n)) this.kafka.sig(n, 'SIGCONT');
      if (!this.kafka.pid(n)) await this.kafka.restart(n);
    }
    for (const r of this.roles) {
      if (r.paused) r.sig('SIGCONT');
      r.expectDown = false;
      if (!r.pid) await r.start(60_000);
    }
    if (this.connect?.paused) this.connect.sig('SIGCONT');
    if (this.connect && !this.connect.pid()) await this.connect.restart();
  }

  async stop(): Promise<void> {
    await Promise.all(this.roles.map((r) => r.stop().catch(() => {})));
    await this.connect?.stop(this.o.logDir).catch(() => {});
    for (const l of this.links) await l.proxy.close().catch(() => {});
    await this.redis?.stop(this.o.logDir).catch(() => {});
    await this.kafka?.stop(this.o.logDir).catch(() => {});
    await this.pg?.stop().catch(() => {});
  }
}
