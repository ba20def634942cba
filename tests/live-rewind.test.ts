/**
 * A client still connected to the old home when it learns of a failover (docs/multi-region.md,
 * "Regional failover"): two regions, each a RealChat node on its own PostgreSQL database, their
 * streams carried by taps (tests/harness/regions.ts). Alice is connected to a, her conversation's
 * home, and has been sent a's entries 1-5 live; b has only 1-3 (4 and 5 are the RPO window) when
 * it takes the conversation over and numbers bob's message 4. When a applies b's stream, alice's
 * connection gets `rewind` to 3 and then b's entry 4 live, with no reconnect, and so does carol's, connected to a
 * at its 5 without having been sent anything. Without the live rewind, a's connection had
 * already sent its 4 and dropped b's 4 as a duplicate: a loss nobody saw.
 */
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { failover } from '../delivery/mirror/failover.js';
import { freePort } from './harness/postgres.js';
import { tapStream } from './harness/regions.js';
import { createConversation, startTestServer, type TestServer } from './harness/server.js';
import { TestClient } from './harness/ws-client.js';

const SECRET = randomBytes(32).toString('hex');

describe('live rewind: a connection of the old home learns of the failover without reconnecting', () => {
  let a: TestServer;
  let b: TestServer;
  let tapA: Awaited<ReturnType<typeof tapStream>>;
  let tapB: Awaited<ReturnType<typeof tapStream>>;

  beforeAll(async () => {
    const [portA, portB] = [await freePort(), await freePort()];
    const region = (self: string, port: number, peer: string, peerPort: number) => ({
      PORT: String(port),
      REALCHAT_REGION: self,
      REALCHAT_REGION_PEERS: `${peer}=http://127.0.0.1:${peerPort}`,
      REALCHAT_REGION_SECRET: SECRET,
    });
    [a, b] = await Promise.all([
      startTestServer('postgres', region('a', portA, 'b', portB)),
      startTestServer('postgres', region('b', portB, 'a', portA)),
    ]);
    tapA = await tapStream(a, 'a');
    tapB = await tapStream(b, 'b');
  }, 60_000);
  afterAll(async () => {
    await b?.close();
    await a?.close();
  });

  it("a's connections past the takeover are rewound to it and get the new home's entries live", async () => {
    const alice = await a.token();
    const bobId = (await b.token()).userId;
    const carol = await a.token();
    const conv = await createConversation(a, alice.token, [bobId, carol.userId]);
    await tapA.into(b);
    const inA = await TestClient.connect(a.wsUrl, alice.token);
    const bob = await TestClient.connect(b.wsUrl, (await b.token(bobId)).token);
    const sent: string[] = [];
    try {
      for (let k = 1; k <= 3; k++) sent.push((await inA.sendMessage(conv, `a${k}`, { k })).message_id);
      await tapA.into(b);
      // 4 and 5: acknowledged by a, never mirrored
      for (let k = 4; k <= 5; k++) sent.push((await inA.sendMessage(conv, `a${k}`, { k })).message_id);
      await inA.waitForCount((f) => f.type === 'message' && f.message.conversation_id === conv, 5);
      // Carol connects to a only now: her position is a's 5 without a message of a's sent to her.
      const carolLate = await TestClient.connect(a.wsUrl, carol.token);

      expect(await failover(b.app.sql, { from: 'a', to: 'b', queryTimeoutMs: 10_000, outboxMode: 'table' })).toEqual({ conversations: 1 });
      const b4 = await bob.sendMessage(conv, 'b1', { from: 'b' });
      expect(b4).toMatchObject({ type: 'ack', sequence_number: 4 });
      // a applies b's stream: the re-homing, then b's 4
      expect(await tapB.into(a)).toBeGreaterThanOrEqual(2);

      const rewind = await inA.waitFor((f) => f.type === 'rewind', 10_000);
      expect(rewind).toEqual({ type: 'rewind', conversation_id: conv, after_sequence: 3, reason: 'rehomed' });
      const afterRewind = await inA.waitFor(
        (f) => f.type === 'message' && f.message.conversation_id === conv && f.message.message_id === b4.message_id,
        10_000,
      );
      expect([afterRewind.message.sequence_number, afterRewind.via]).toEqual([4, 'live']);
      // in order: the rewind came before b's 4, and nothing of the conversation between them
      const idx = (pred: (f: Record<string, any>) => boolean) => inA.frames.findIndex(pred);
      expect(idx((f) => f.type === 'rewind')).toBe(idx((f) => f.type === 'message' && f.message.message_id === b4.message_id) - 1);
      // Carol's position was a's 5 as well: rewound the same way, then b's 4 live.
      expect(await carolLate.waitFor((f) => f.type === 'rewind', 10_000)).toMatchObject({ after_sequence: 3 });
      expect((await carolLate.waitFor((f) => f.type === 'message' && f.message.message_id === b4.message_id, 10_000)).via).toBe('live');
      carolLate.close();
      // Still connected: no reconnect was needed.
      expect(inA.frames.filter((f) => f.type === 'error')).toEqual([]);
    } finally {
      inA.close();
      bob.close();
    }
  });
});
