/**
 * `REGIONS=a,b npm run stack:up` (infra/stack-regions.sh, docs/multi-region.md), run as an operator
 * would, in a stack directory of its own and on ports below the ephemeral range (no other test's
 * free port can take them): the status names each process's region and each gateway's URL; clients
 * at those URLs chat across the regions through the link (a forwarded send costs at least the round
 * trip: the link is in the path); `link cut` refuses forwarded sends `unavailable`, `link heal` lets
 * them through; a killed gateway is the only thing `up` starts again; `failover` re-homes the lost
 * region's conversations; `down` leaves nothing running. What the regions do under loss and
 * partition is tested on the harness's pair (two-regions*.test.ts); this tests the stack script.
 */
import { execFile } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createAuthenticator } from '../gateway/auth.js';
import { UNLIMITED_RATES } from './harness/env.js';
import { CLEAN_REPORT, History } from './harness/history.js';
import { createConversationAt, storedMessages } from './harness/queries.js';
import { TestClient } from './harness/ws-client.js';

const ROOT = join(import.meta.dirname, '..');
const RTT_MS = 60;

interface Entry {
  region: string | null;
  name: string;
  role: string;
  pid: number;
  port: number | null;
  url?: string;
}

describe('REGIONS=a,b stack:up: two regions as one command starts them', () => {
  const dir = mkdtempSync(join(tmpdir(), 'realchat-stack-regions-'));
  // PostgreSQL runs as the postgres user, who must reach its data directory in here
  chmodSync(dir, 0o755);
  const jwtSecret = randomBytes(32).toString('hex');
  const auth = createAuthenticator({ secret: jwtSecret });
  const env: Record<string, string> = {
    ...(process.env as Record<string, string>),
    STACK_DIR: dir,
    REALCHAT_JWT_SECRET: jwtSecret,
    STACK_PG_PORT: '25432',
    STACK_REDIS_PORT: '25379',
    STACK_KAFKA_PORT: '25092',
    STACK_CONNECT_PORT: '25083',
    PORT: '25080',
    STACK_RELAY_METRICS_PORT: '25100',
    STACK_DELIVERY_METRICS_PORT: '25200',
    STACK_NOTIFIER_METRICS_PORT: '25300',
    STACK_WEBHOOKS_METRICS_PORT: '25400',
    STACK_MIRROR_METRICS_PORT: '25500',
    STACK_LINK_PORT: '24500',
    // Web Push and webhooks play no part here: two processes fewer per region on 2 cores.
    STACK_NOTIFIERS: '0',
    STACK_WEBHOOKS: '0',
    REALCHAT_RELAY_POLL_MS: '200',
    LOG_LEVEL: 'warn',
    ...UNLIMITED_RATES,
  };
  delete env.REGIONS;
  const open: TestClient[] = [];

  /** bash infra/stack.sh <args>: its stdout (stderr is in the error when it fails). */
  const stack = (args: string[], extra: Record<string, string> = {}) =>
    new Promise<string>((resolve, reject) => {
      execFile(
        'bash',
        [join(ROOT, 'infra/stack.sh'), ...args],
        { env: { ...env, ...extra }, timeout: 400_000, maxBuffer: 1 << 24 },
        (err, out, errOut) =>
          err ? reject(new Error(`stack.sh ${args.join(' ')}: ${err.message}\n${errOut.slice(-4000)}`)) : resolve(out),
      );
    });
  const status = async () => JSON.parse(await stack(['status', '--json'])) as Entry[];
  const gatewayUrl = (entries: Entry[], region: string) => entries.find((e) => e.region === region && e.role === 'gateway')!.url!;
  const databaseUrl = (entries: Entry[], region: string) =>
    `postgres://postgres@127.0.0.1:${entries.find((e) => e.region === region && e.role === 'postgres')!.port}/realchat`;
  const connect = async (httpUrl: string, user: string) => {
    const c = await TestClient.connect(`${httpUrl.replace('http', 'ws')}/v1/ws`, await auth.issue(user));
    open.push(c);
    return c;
  };

  let entries: Entry[];

  beforeAll(async () => {
    await stack(['up'], { REGIONS: 'a,b', REGION_RTT_MS: String(RTT_MS) });
    entries = await status();
  }, 420_000);

  afterAll(async () => {
    for (const c of open) c.close();
    // whatever the tests left: down reads the regions from the stack directory
    if (existsSync(join(dir, 'regions'))) await stack(['down']).catch((err: Error) => console.error(err.message));
    rmSync(dir, { recursive: true, force: true });
  }, 180_000);

  it("status --json: every process of each region, with its region; each gateway's URL; the links", () => {
    for (const region of ['a', 'b']) {
      const roles = entries.filter((e) => e.region === region).map((e) => e.role);
      expect(roles.sort()).toEqual(['delivery', 'gateway', 'kafka', 'mirror', 'mirror-maker', 'postgres', 'redis', 'relay'].sort());
    }
    // region b has every port shifted by 1000
    expect(gatewayUrl(entries, 'a')).toBe('http://127.0.0.1:25080');
    expect(gatewayUrl(entries, 'b')).toBe('http://127.0.0.1:26080');
    expect(entries.find((e) => e.role === 'link')).toMatchObject({ region: null, port: 24500, rtt_ms: RTT_MS });
    expect(entries.every((e) => 'region' in e)).toBe(true);
  });

  let conv: string;
  let alice: string;
  let bob: string;

  it("clients at the status's URLs chat across the regions, through the link; the history checker finds the home's order everywhere", async () => {
    [alice, bob] = [randomUUID(), randomUUID()];
    const a = await connect(gatewayUrl(entries, 'a'), alice);
    conv = await createConversationAt(Number(new URL(gatewayUrl(entries, 'a')).port), await auth.issue(alice), [bob]);
    // b learns the conversation through MirrorMaker and its mirror applier
    const b = await connect(gatewayUrl(entries, 'b'), bob);
    const t0 = Date.now();
    while (
      !(
        (await (
          await fetch(`${gatewayUrl(entries, 'b')}/v1/conversations/${conv}/members`, {
            headers: { authorization: `Bearer ${await auth.issue(bob)}` },
            signal: AbortSignal.timeout(5000),
          })
        ).status) === 200
      )
    ) {
      if (Date.now() - t0 > 60_000) throw new Error('the conversation never reached region b');
      await new Promise((r) => setTimeout(r, 200));
    }
    const h = new History();
    const forwardedMs: number[] = [];
    for (let k = 0; k < 10; k++) {
      for (const [who, client, prefix] of [
        [alice, a, 'a'],
        [bob, b, 'b'],
      ] as const) {
        const key = `${prefix}${k}`;
        h.send(who, conv, key);
        const s = performance.now();
        const ack = await client.sendMessage(conv, key, { k });
        if (client === b) forwardedMs.push(performance.now() - s);
        expect(ack, JSON.stringify(ack)).toMatchObject({ type: 'ack' });
        h.ack(who, key, ack as never);
      }
    }
    // b's sends went to a through the link: none faster than its round trip
    console.log(`forwarded sends, ms: min ${Math.round(Math.min(...forwardedMs))}, max ${Math.round(Math.max(...forwardedMs))}`);
    expect(Math.min(...forwardedMs)).toBeGreaterThanOrEqual(RTT_MS - 2);
    for (const [who, client] of [
      [alice, a],
      [bob, b],
    ] as const) {
      const frames = await client.waitForCount((f) => f.type === 'message' && f.message.conversation_id === conv, 20, 60_000);
      for (const f of frames) h.receive(who, f.message, { via: f.via });
      expect(frames.map((f) => f.via)).toEqual(Array(20).fill('live'));
    }
    const stored = await storedMessages(databaseUrl(entries, 'a'), conv);
    expect(h.check(stored, () => [alice, bob])).toEqual(CLEAN_REPORT);
    const t1 = Date.now();
    while ((await storedMessages(databaseUrl(entries, 'b'), conv)).length < stored.length && Date.now() - t1 < 30_000)
      await new Promise((r) => setTimeout(r, 200));
    expect(await storedMessages(databaseUrl(entries, 'b'), conv)).toEqual(stored);
  }, 180_000);

  it('link cut a b: a forwarded send is refused unavailable (home_unreachable); link heal: the same send, same key, is accepted', async () => {
    const b = await connect(gatewayUrl(entries, 'b'), bob);
    await stack(['link', 'cut', 'a', 'b']);
    const links = JSON.parse(await stack(['link', 'status'])) as Array<{ cut: boolean }>;
    expect(links.map((l) => l.cut)).toEqual(links.map(() => true));
    const refused = await b.sendMessage(conv, 'during-cut', { cut: true });
    expect(refused).toMatchObject({ type: 'error', code: 'unavailable', reason: 'home_unreachable' });
    await stack(['link', 'heal', 'a', 'b']);
    const ack = await b.sendMessage(conv, 'during-cut', { cut: true });
    expect(ack, JSON.stringify(ack)).toMatchObject({ type: 'ack', sequence_number: 21 });
  }, 120_000);

  it("up again starts only what died: region b's gateway, killed -9, and nothing else", async () => {
    const before = await status();
    const gw = before.find((e) => e.region === 'b' && e.role === 'gateway')!;
    process.kill(gw.pid, 'SIGKILL');
    // REGIONS not given: up reads the running set from the stack directory
    await stack(['up']);
    const after = await status();
    const key = (e: Entry) => `${e.region}/${e.name}`;
    const changed = after.filter((e) => before.find((x) => key(x) === key(e))?.pid !== e.pid).map(key);
    expect(changed).toEqual(['b/gateway-1']);
    expect(after.map(key).sort()).toEqual(before.map(key).sort());
    const b = await connect(gatewayUrl(after, 'b'), bob);
    const ack = await b.sendMessage(conv, 'after-restart', {});
    expect(ack, JSON.stringify(ack)).toMatchObject({ type: 'ack', sequence_number: 22 });
  }, 240_000);

  it("failover --from a --to b re-homes a's conversations in b, which then sequences them itself", async () => {
    // everything a acknowledged is in b's copy first (else it would be the RPO window, re-appended later)
    const t0 = Date.now();
    while ((await storedMessages(databaseUrl(entries, 'b'), conv)).length < 22) {
      if (Date.now() - t0 > 30_000) throw new Error("a's entries never reached b's copy");
      await new Promise((r) => setTimeout(r, 200));
    }
    const out = JSON.parse(await stack(['failover', '--from', 'a', '--to', 'b'])) as { from: string; to: string; conversations: number };
    expect(out).toMatchObject({ from: 'a', to: 'b' });
    expect(out.conversations).toBeGreaterThanOrEqual(1);
    // b is the home now: with the link cut, b still takes the conversation's sends
    await stack(['link', 'cut']);
    const b = await connect(gatewayUrl(entries, 'b'), bob);
    const ack = await b.sendMessage(conv, 'after-failover', {});
    expect(ack, JSON.stringify(ack)).toMatchObject({ type: 'ack', sequence_number: 23 });
    await stack(['link', 'heal']);
  }, 120_000);

  it('down stops every process of every region and the links', async () => {
    const pids = (await status()).map((e) => e.pid);
    await stack(['down']);
    expect(existsSync(join(dir, 'regions'))).toBe(false);
    // a zombie (exited, not yet reaped by pid 1) is not running
    const alive = pids.filter((pid) => {
      try {
        return !/^\d+ \(.*\) [ZX]/.test(readFileSync(`/proc/${pid}/stat`, 'utf8'));
      } catch {
        return false;
      }
    });
    expect(alive).toEqual([]);
    expect(JSON.parse(await stack(['status', '--json'], { REGIONS: 'a,b' }))).toEqual([]);
  }, 180_000);
});
