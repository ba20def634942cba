/**
 * Two regions as separate stacks, every role a real process (docs/multi-region.md): each region its
 * own PostgreSQL database, Kafka broker, gateway, relay, delivery worker and mirror applier;
 * MirrorMaker 2 between the brokers. With `rttMs`, everything that crosses between the regions goes
 * through one proxy process (tests/chaos/proxy.ts) that adds rttMs / 2 each way and can cut the
 * link: the gateways' forwarded writes and failover probes (REALCHAT_REGION_PEERS names the proxy)
 * and MirrorMaker's connections to region a's broker (its REMOTE listener advertises the proxy).
 * MirrorMaker runs next to region b, so its reads of a's stream and its writes of b's stream into a
 * both cross the link once. No netem on this kernel (docs/chaos.md, "Network faults").
 */
import { randomBytes } from 'node:crypto';
import { ProxyProcess } from '../chaos/proxy.js';
import { createAuthenticator } from '../../gateway/auth.js';
import { UNLIMITED_RATES } from './env.js';
import { freeBrokerPort, remoteListenerPort, startKafka, startMirrorMaker, type KafkaHandle, type MirrorMakerHandle } from './kafka.js';
import { freePort } from './postgres.js';
import { freshDatabase } from './server.js';
import { spawnRole, type RoleProcess } from './stack.js';

export type RegionName = 'a' | 'b';

export interface RegionStack {
  name: RegionName;
  databaseUrl: string;
  kafka: KafkaHandle;
  /** The gateway's port (HTTP and WebSocket), on this machine. */
  port: number;
  wsUrl: string;
  httpUrl: string;
  processes: RoleProcess[];
}

export interface RegionPair {
  a: RegionStack;
  b: RegionStack;
  /** The link between them (null without rttMs). */
  link: ProxyProcess | null;
  mm2: MirrorMakerHandle;
  issueToken(userId: string): Promise<string>;
  /** Cuts the link (both ways, every protocol); heal() restores it with its latency. */
  partition(): Promise<void>;
  heal(): Promise<void>;
  /** kill -9 of every process of the region: its roles and its broker (its database stays, as a disk would). */
  killRegion(name: RegionName): Promise<void>;
  /** Starts the region's broker and roles again (after killRegion); `withoutMirror`: not its mirror applier yet. */
  restartRegion(name: RegionName, opts?: { withoutMirror?: boolean }): Promise<void>;
  /** Starts the region's mirror applier (after restartRegion withoutMirror). */
  startMirror(name: RegionName): Promise<void>;
  stop(): Promise<void>;
}

export interface RegionPairOptions {
  /** Round trip added between the regions (ms); 0 or absent: a direct link. */
  rttMs?: number;
  /** REALCHAT_REGION_FAILOVER_AFTER_MS of each region's mirror applier (0: off). */
  failoverAfterMs?: number;
  partitions?: number;
  /** Extra environment for every role. */
  env?: Record<string, string>;
}

const TOPIC = 'realchat.events.v1';

export async function startRegionPair(opts: RegionPairOptions = {}): Promise<RegionPair> {
  const rttMs = opts.rttMs ?? 0;
  const partitions = opts.partitions ?? 4;
  const regionSecret = randomBytes(32).toString('hex');
  const jwtSecret = randomBytes(32).toString('hex');
  const auth = createAuthenticator({ secret: jwtSecret });
  const ports = { a: await freePort(), b: await freePort() };
  const kafkaPortA = await freeBrokerPort();
  // One process for the whole link: a cut or a delay applies to every protocol at once.
  const link = rttMs > 0 ? await ProxyProcess.start(ports.a, ports.b, remoteListenerPort(kafkaPortA)) : null;
  const cleanups: Array<() => Promise<unknown>> = [];
  try {
    if (link) {
      cleanups.push(() => link.close());
      await link.latency(rttMs / 2);
    }
    const kafkaA = await startKafka({ port: kafkaPortA, ...(link ? { remoteAdvertised: `127.0.0.1:${link.ports[2]}` } : {}) });
    cleanups.push(() => kafkaA.stop());
    const kafkaB = await startKafka();
    cleanups.push(() => kafkaB.stop());
    const regions = {} as Record<RegionName, RegionStack>;
    for (const [name, kafka] of [
      ['a', kafkaA],
      ['b', kafkaB],
    ] as const) {
      await kafka.createTopic(TOPIC, partitions);
      regions[name] = {
        name,
        databaseUrl: await freshDatabase(),
        kafka,
        port: ports[name],
        wsUrl: `ws://127.0.0.1:${ports[name]}/v1/ws`,
        httpUrl: `http://127.0.0.1:${ports[name]}`,
        processes: [],
      };
    }
    // As seen from the other region: through the link when there is one.
    const reach = { a: link ? link.ports[0]! : ports.a, b: link ? link.ports[1]! : ports.b };
    const mm2 = await startMirrorMaker({ a: link ? `127.0.0.1:${link.ports[2]}` : kafkaA.brokers, b: kafkaB.brokers });
    cleanups.push(() => mm2.stop());

    const env = (r: RegionStack, peer: RegionName): Record<string, string> => ({
      DATABASE_URL: r.databaseUrl,
      KAFKA_BROKERS: r.kafka.brokers,
      REALCHAT_JWT_SECRET: jwtSecret,
      REALCHAT_REGION: r.name,
      REALCHAT_REGION_PEERS: `${peer}=http://127.0.0.1:${reach[peer]}`,
      REALCHAT_REGION_SECRET: regionSecret,
      REALCHAT_TOPIC_PARTITIONS: String(partitions),
      REALCHAT_RELAY_POLL_MS: '200',
      ...UNLIMITED_RATES,
      ...opts.env,
    });
    const peerOf = (r: RegionStack): RegionName => (r.name === 'a' ? 'b' : 'a');
    const startMirror = async (r: RegionStack) => {
      const peer = peerOf(r);
      r.processes.push(
        await spawnRole('mirror', {
          ...env(r, peer),
          REALCHAT_MIRROR_SOURCE: peer,
          REALCHAT_NODE_ID: `mirror-${r.name}`,
          METRICS_PORT: String(await freePort()),
          ...(opts.failoverAfterMs ? { REALCHAT_REGION_FAILOVER_AFTER_MS: String(opts.failoverAfterMs) } : {}),
        }),
      );
    };
    const startRoles = async (r: RegionStack, withMirror = true) => {
      const peer = peerOf(r);
      // The gateway first: it applies the migrations.
      r.processes.push(await spawnRole('gateway', { ...env(r, peer), PORT: String(r.port), REALCHAT_NODE_ID: `gateway-${r.name}` }));
      for (const role of ['relay', 'delivery'] as const) {
        r.processes.push(
          await spawnRole(role, { ...env(r, peer), REALCHAT_NODE_ID: `${role}-${r.name}`, METRICS_PORT: String(await freePort()) }),
        );
      }
      if (withMirror) await startMirror(r);
    };
    const stopRoles = async (r: RegionStack) => {
      for (const p of r.processes.splice(0)) await p.crash().catch(() => {});
    };
    cleanups.push(async () => {
      await stopRoles(regions.a);
      await stopRoles(regions.b);
    });
    await startRoles(regions.a);
    await startRoles(regions.b);
    return {
      a: regions.a,
      b: regions.b,
      link,
      mm2,
      issueToken: (userId) => auth.issue(userId),
      async partition() {
        if (!link) throw new Error('a direct link cannot be cut: start the pair with rttMs');
        await link.partition();
      },
      async heal() {
        if (!link) return;
        await link.heal();
        await link.latency(rttMs / 2);
      },
      async killRegion(name) {
        const r = regions[name];
        await Promise.all([stopRoles(r), r.kafka.kill()]);
      },
      async restartRegion(name, o = {}) {
        const r = regions[name];
        await r.kafka.restart();
        await startRoles(r, !o.withoutMirror);
      },
      startMirror: (name) => startMirror(regions[name]),
      async stop() {
        for (const c of cleanups.splice(0).reverse()) await c().catch(() => {});
      },
    };
  } catch (err) {
    for (const c of cleanups.reverse()) await c().catch(() => {});
    throw err;
  }
}
