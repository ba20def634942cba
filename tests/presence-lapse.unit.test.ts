/**
 * Chaos finding 16 (docs/chaos.md): a gateway cut off from Redis longer than the presence TTL looks
 * dead to delivery workers that still reach Redis, so its users' messages were routed to no node,
 * silently; a connected member got them only if a later message in the same conversation revealed
 * the gap (a `fill` hiding a pipeline loss), never in a conversation that went quiet.
 * The node now suspects the lapse (heartbeat overdue or expired, entries lost) and, once registered
 * again, catches every connection up from the database. With fakes of our own ports; the real
 * Redis + Kafka path is in tests/presence-lapse.test.ts.
 */
import { describe, expect, it } from 'vitest';
import { Connection } from '../gateway/connection.js';
import { envelope, RecordingSocket } from './harness/socket-port.js';
import { PresenceAgent, type LapseHandler } from '../gateway/presence-agent.js';
import { createLapseCatchUp } from '../gateway/lapse-catch-up.js';
import type { PresenceRegistry } from '../common/presence.js';
import { encodeMessageFrame } from '../common/protocol.js';
import { createMetrics, type Metrics } from '../common/metrics.js';
import { createLogger } from '../common/log.js';

const log = createLogger({ level: 'silent', nodeId: 't', role: 'test' });
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const CONV = '11111111-1111-4111-8111-111111111111';

const env = (seq: number) => envelope(CONV, seq);
const db = Array.from({ length: 10 }, (_, i) => env(i + 1));

function connection(metrics: Metrics, lapsed: () => boolean = () => false) {
  const socket = new RecordingSocket();
  const conn = new Connection('u', socket, {
    history: { messagesAfter: async (_c, after, limit) => db.filter((m) => m.sequence_number > after).slice(0, limit) },
    log,
    metrics,
    fillBatch: 100,
    highWaterBytes: 1 << 20,
    drainTimeoutMs: 1000,
    registrationLapsed: lapsed,
  });
  return { conn, socket };
}
const live = (conn: Connection, seq: number) => conn.deliverMessage(env(seq), encodeMessageFrame(env(seq), 'live'));
const gapFills = async (metrics: Metrics) =>
  (await metrics.failedDeliveries.get()).values.find((v) => v.labels.reason === 'gap_filled_from_db')?.value ?? 0;

describe('a connection after a presence lapse', () => {
  it('catches up to the database without any later live message (a quiet conversation)', async () => {
    const metrics = createMetrics({ nodeId: 't', defaultMetrics: false });
    const { conn, socket } = connection(metrics);
    conn.activate([[CONV, 0]], new Map());
    live(conn, 1);
    live(conn, 2);
    expect(conn.catchUp(new Map([[CONV, 5]]))).toBe(1);
    await sleep(5);
    expect(socket.arrivals()).toEqual([
      [1, 'live'],
      [2, 'live'],
      [3, 'resume'],
      [4, 'resume'],
      [5, 'resume'],
    ]);
    // Nothing behind: nothing read, nothing written.
    expect(conn.catchUp(new Map([[CONV, 5]]))).toBe(0);
    expect(conn.catchUp(new Map())).toBe(0);
    await sleep(5);
    expect(socket.arrivals()).toHaveLength(5);
  });

  it('a gap seen while the lapse is suspected is part of the catch-up (resume), not a pipeline loss (fill)', async () => {
    const metrics = createMetrics({ nodeId: 't', defaultMetrics: false });
    let lapsed = true;
    const { conn, socket } = connection(metrics, () => lapsed);
    conn.activate([[CONV, 0]], new Map());
    live(conn, 1);
    live(conn, 4);
    await sleep(5);
    expect(socket.arrivals()).toEqual([
      [1, 'live'],
      [2, 'resume'],
      [3, 'resume'],
      [4, 'resume'],
    ]);
    expect(await gapFills(metrics)).toBe(0);
    // Registered again: a gap is a loss again.
    lapsed = false;
    live(conn, 6);
    await sleep(5);
    expect(socket.arrivals().slice(4)).toEqual([
      [5, 'fill'],
      [6, 'fill'],
    ]);
    expect(await gapFills(metrics)).toBe(1);
  });
});

describe('the node-level catch-up', () => {
  it('is active from the suspicion until a catch-up that no newer suspicion overlapped', async () => {
    const metrics = createMetrics({ nodeId: 't', defaultMetrics: false });
    const { conn, socket } = connection(metrics);
    conn.activate([[CONV, 0]], new Map());
    let reads = 0;
    let during: (() => void) | null = null;
    const lapse = createLapseCatchUp({
      connections: () => [conn],
      lastSequences: async (ids) => {
        reads++;
        during?.();
        return ids.map((id) => ({ conversation_id: id, last_seq: 3 }));
      },
      log,
      metrics,
    });
    expect(lapse.active()).toBe(false);
    lapse.suspect();
    expect(lapse.active()).toBe(true);
    // A new suspicion while the catch-up reads: the lapse is not over.
    during = () => lapse.suspect();
    await lapse.recover();
    expect(lapse.active()).toBe(true);
    during = null;
    await lapse.recover();
    expect(lapse.active()).toBe(false);
    expect(reads).toBe(2);
    await sleep(5);
    expect(socket.arrivals()).toEqual([
      [1, 'resume'],
      [2, 'resume'],
      [3, 'resume'],
    ]);
    expect((await metrics.presenceLapses.get()).values[0]?.value).toBe(2);
  });

  it('waits for a connection still in hello, then covers it', async () => {
    const metrics = createMetrics({ nodeId: 't', defaultMetrics: false });
    const { conn, socket } = connection(metrics);
    const lapse = createLapseCatchUp({
      connections: () => [conn],
      lastSequences: async (ids) => ids.map((id) => ({ conversation_id: id, last_seq: 2 })),
      log,
      metrics,
    });
    lapse.suspect();
    const done = lapse.recover();
    await sleep(120);
    conn.activate([[CONV, 0]], new Map());
    await done;
    await sleep(5);
    expect(socket.arrivals()).toEqual([
      [1, 'resume'],
      [2, 'resume'],
    ]);
  });
});

/** A registry whose heartbeat the test steers; its calls and the lapse handler's go into one log. */
class FakeRegistry implements Partial<PresenceRegistry> {
  constructor(
    readonly events: string[],
    private readonly onResync: () => void = () => {},
  ) {}
  mode: 'ok' | 'lost' | 'down' | 'slow' = 'ok';
  slowMs = 0;
  heartbeats = 0;
  async heartbeat(): Promise<boolean> {
    this.heartbeats++;
    if (this.mode === 'down') throw new Error('down');
    if (this.mode === 'slow') await sleep(this.slowMs);
    if (this.mode === 'lost') {
      this.mode = 'ok';
      return false;
    }
    return true;
  }
  async resync() {
    this.events.push('resync');
    this.onResync();
  }
  async removeNode() {}
  async addConnection() {}
  async removeConnection() {}
}

/** An agent (beat 20 ms, TTL 100 ms) over a fake registry; `failRecoveries`: catch-ups that throw first. */
async function started(failRecoveries = 0, catchUpDelayMs = 0) {
  const events: string[] = [];
  let resyncedAt = 0;
  const registry = new FakeRegistry(events, () => (resyncedAt = performance.now()));
  let failures = failRecoveries;
  const handler: LapseHandler = {
    suspect: () => void events.push('suspect'),
    recover: async () => {
      events.push(`recover${catchUpDelayMs ? ` after ${Math.round((performance.now() - resyncedAt) / 50) * 50}` : ''}`);
      if (failures-- > 0) throw new Error('database down');
    },
  };
  const agent = new PresenceAgent(
    registry as unknown as PresenceRegistry,
    'n1',
    20,
    100,
    log,
    () => new Map([['u', 1]]),
    () => [],
    handler,
    catchUpDelayMs,
  );
  await agent.start();
  events.length = 0;
  return { agent, registry, events };
}

describe('PresenceAgent: suspecting and ending a lapse', () => {
  it('heartbeats that land in time: no lapse', async () => {
    const { agent, registry, events } = await started();
    await sleep(300);
    await agent.stop();
    expect(registry.heartbeats).toBeGreaterThan(5);
    expect(events).toEqual([]);
  });

  it('entries lost: suspect, re-sync, then catch up (after the re-sync: it must read what was missed)', async () => {
    const { agent, registry, events } = await started();
    registry.mode = 'lost';
    await sleep(100);
    await agent.stop();
    expect(events).toEqual(['suspect', 'resync', 'recover']);
  });

  it('registry unreachable: suspected once the heartbeat is overdue (before it is back), caught up when it is', async () => {
    const { agent, registry, events } = await started();
    registry.mode = 'down';
    await sleep(200);
    expect(events).toEqual(['suspect']);
    registry.mode = 'ok';
    await sleep(100);
    await agent.stop();
    expect(events).toEqual(['suspect', 'resync', 'recover']);
  });

  it('a heartbeat that lands later than the TTL: suspect, re-sync and catch up even though it succeeded', async () => {
    const { agent, registry, events } = await started();
    registry.mode = 'slow';
    registry.slowMs = 150;
    await sleep(120);
    registry.mode = 'ok';
    await sleep(200);
    await agent.stop();
    // The beat after the slow one is sent more than a TTL after the slow one was (which may have run
    // on Redis as early as then): that is a possible lapse too, so one or two rounds.
    expect(events.length).toBeGreaterThan(0);
    for (let i = 0; i < events.length; i += 3) expect(events.slice(i, i + 3)).toEqual(['suspect', 'resync', 'recover']);
  });

  it("the catch-up waits out the delivery workers' live-node cache after the re-sync (finding 16: a stale list routed past the node)", async () => {
    const { agent, registry, events } = await started(0, 200);
    registry.mode = 'lost';
    await sleep(100);
    expect(events).toEqual(['suspect', 'resync']);
    await sleep(250);
    await agent.stop();
    expect(events).toEqual(['suspect', 'resync', 'recover after 200']);
  });

  it('a catch-up that fails is tried again by the next beat', async () => {
    const { agent, registry, events } = await started(1);
    registry.mode = 'lost';
    await sleep(150);
    await agent.stop();
    expect(events).toEqual(['suspect', 'resync', 'recover', 'recover']);
  });
});

/** A registry that records what it holds for the node, with a re-sync the test holds open. */
class HeldResyncRegistry implements Partial<PresenceRegistry> {
  readonly counts = new Map<string, number>();
  lost = false;
  private release: (() => void) | null = null;
  resyncStarted: Promise<void> = new Promise(() => {});
  holdNextResync(): void {
    let started!: () => void;
    this.resyncStarted = new Promise((r) => (started = r));
    const held = new Promise<void>((r) => (this.release = r));
    this.nextResync = async () => {
      started();
      await held;
    };
  }
  private nextResync: (() => Promise<void>) | null = null;
  releaseResync(): void {
    this.release?.();
  }
  async heartbeat(): Promise<boolean> {
    if (this.lost) {
      this.lost = false;
      return false;
    }
    return true;
  }
  async resync(_node: string, users: ReadonlyMap<string, number>) {
    // The snapshot is taken when the call is made; its writes land later.
    const snapshot = new Map(users);
    const hold = this.nextResync;
    this.nextResync = null;
    await hold?.();
    this.counts.clear();
    for (const [u, n] of snapshot) this.counts.set(u, n);
  }
  async setConnections(_node: string, users: ReadonlyMap<string, number>) {
    for (const [u, n] of users) {
      if (n > 0) this.counts.set(u, n);
      else this.counts.delete(u);
    }
  }
  async removeNode() {
    if (this.downAtStart) {
      this.downAtStart = false;
      throw new Error('down');
    }
    this.counts.clear();
  }
  downAtStart = false;
  async addConnection(_node: string, u: string) {
    this.counts.set(u, (this.counts.get(u) ?? 0) + 1);
  }
  async removeConnection(_node: string, u: string) {
    const n = (this.counts.get(u) ?? 0) - 1;
    if (n > 0) this.counts.set(u, n);
    else this.counts.delete(u);
  }
}

/** An agent (beat 20 ms, TTL 1 s) whose users are `local`'s, at each call. */
const agentOver = (registry: HeldResyncRegistry, local: Map<string, number>, handler?: LapseHandler) =>
  new PresenceAgent(
    registry as unknown as PresenceRegistry,
    'n1',
    20,
    1000,
    log,
    () => new Map(local),
    () => [],
    handler ?? null,
  );

describe('PresenceAgent: connections that come and go during a re-sync (finding 19)', () => {
  it('are in the registry once the re-sync ends, though the re-sync read its users before they came', async () => {
    const registry = new HeldResyncRegistry();
    const local = new Map([['a', 1]]);
    const agent = agentOver(registry, local);
    await agent.start();
    expect([...registry.counts]).toEqual([['a', 1]]);
    registry.holdNextResync();
    registry.lost = true;
    await registry.resyncStarted;
    // A member arrives (the way ws-handler does it: the local registry first, then the agent), a
    // second one arrives and leaves again, and a's connection closes: all while the re-sync runs.
    local.set('b', 1);
    await agent.connected('b');
    local.set('c', 1);
    await agent.connected('c');
    local.delete('c');
    agent.disconnected('c');
    local.delete('a');
    agent.disconnected('a');
    registry.releaseResync();
    await sleep(60);
    expect([...registry.counts]).toEqual([['b', 1]]);
    // Healthy again: connections write their own entries.
    local.set('d', 1);
    await agent.connected('d');
    expect(new Map(registry.counts)).toEqual(
      new Map([
        ['b', 1],
        ['d', 1],
      ]),
    );
    await agent.stop();
  });

  it('a connection that arrives while the node is not registered is caught up once it is (its hello read too early)', async () => {
    const registry = new HeldResyncRegistry();
    registry.downAtStart = true;
    const local = new Map<string, number>();
    const events: string[] = [];
    const handler: LapseHandler = {
      suspect: () => void events.push('suspect'),
      recover: async () => void events.push(`recover (b registered: ${registry.counts.has('b')})`),
    };
    const agent = agentOver(registry, local, handler);
    await agent.start();
    local.set('b', 1);
    await agent.connected('b');
    expect(events).toEqual(['suspect']);
    await sleep(80);
    await agent.stop();
    expect(events).toEqual(['suspect', 'recover (b registered: true)']);
  });
});
