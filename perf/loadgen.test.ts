import { describe, it, expect } from 'vitest';
import { newHist, recordMs, encodeHist, mergeEncoded, summarize, decodeHist } from './lib/hist.js';
import { leastSquares } from './lib/fit.js';
import { dueCount, intendedTime, slotOf, totalMessages } from './lib/schedule.js';
import { parseProm } from './lib/sampler.js';
import { signHS256 } from './lib/jwt.js';
import { parseArgs } from './lib/args.js';
import { mergeConnect, tallyReports } from './lib/tally.js';
import type { WorkerReport } from './lib/types.js';
import { createHmac } from 'node:crypto';

describe('histogram merge across workers', () => {
  it('merges encoded histograms exactly (count, max, percentiles)', () => {
    const a = newHist();
    const b = newHist();
    for (let i = 1; i <= 900; i++) recordMs(a, 1); // 900 x 1 ms
    for (let i = 1; i <= 100; i++) recordMs(b, 100); // 100 x 100 ms
    const merged = mergeEncoded([encodeHist(a), encodeHist(b)]);
    const s = summarize(merged);
    expect(s.count).toBe(1000);
    expect(s.p50).toBeCloseTo(1, 2);
    expect(s.p95).toBeCloseTo(100, 0); // would be 1 ms if b were dropped
    expect(s.max).toBeCloseTo(100, 0);
  });
  it('round-trips sub-millisecond values', () => {
    const a = newHist();
    recordMs(a, 0.25);
    const d = decodeHist(encodeHist(a));
    expect(d.totalCount).toBe(1);
    expect(d.maxValue).toBeGreaterThanOrEqual(249);
    expect(d.maxValue).toBeLessThanOrEqual(251);
  });
  it('an empty worker contributes nothing', () => {
    const a = newHist();
    recordMs(a, 5);
    expect(summarize(mergeEncoded([encodeHist(a), encodeHist(newHist()), ''])).count).toBe(1);
  });
});

describe('memory per connection fit', () => {
  it('recovers slope and intercept of an exact line', () => {
    const f = leastSquares([0, 1000, 5000, 10000], [50e6, 50e6 + 6.6e6, 50e6 + 33e6, 50e6 + 66e6]);
    expect(f.slope).toBeCloseTo(6600, 6);
    expect(f.intercept).toBeCloseTo(50e6, 0);
    expect(f.r2).toBeCloseTo(1, 9);
  });
  it('is a least-squares fit, not the endpoint slope', () => {
    // y = 2x with one noisy point; endpoints alone would give slope 2
    const f = leastSquares([0, 1, 2, 3], [0, 2, 6, 6]);
    expect(f.slope).toBeCloseTo(2.2, 9);
    expect(f.intercept).toBeCloseTo(0.2, 9);
    expect(f.r2).toBeLessThan(1);
  });
  it('refuses degenerate input', () => {
    expect(() => leastSquares([1], [1])).toThrow();
    expect(() => leastSquares([1, 1], [1, 2])).toThrow();
  });
});

describe('open-loop scheduler', () => {
  it('intended times are fixed by rate, independent of when sends happen', () => {
    expect(intendedTime(1000, 100, 0)).toBe(1000);
    expect(intendedTime(1000, 100, 1)).toBe(1010);
    expect(intendedTime(1000, 100, 250)).toBe(3500);
    expect(intendedTime(0, 3, 1)).toBeCloseTo(333.333, 3);
  });
  it('a stalled sender catches up: everything intended before now is due at once', () => {
    // rate 1000/s; the loop was blocked for 2 s: 2001 messages are due, none is skipped or re-timed
    expect(dueCount(0, 1000, 1_000_000, 2000)).toBe(2001);
    expect(dueCount(0, 1000, 1_000_000, 1999.5)).toBe(2000);
    expect(dueCount(0, 1000, 1_000_000, -1)).toBe(0);
    expect(dueCount(0, 1000, 500, 2000)).toBe(500);
  });
  it('total and slot assignment', () => {
    expect(totalMessages(1000, 60)).toBe(60000);
    expect(totalMessages(0, 60)).toBe(0);
    expect([0, 1, 2, 3, 4].map((k) => slotOf(k, 2))).toEqual([0, 1, 0, 1, 0]);
  });
});

describe('helpers', () => {
  it('parses prom-client text, summing labelled series', () => {
    const m = parseProm(
      [
        '# HELP nodejs_heap_size_used_bytes x',
        'nodejs_heap_size_used_bytes 1234',
        'nodejs_gc_duration_seconds_sum{kind="minor"} 0.5',
        'nodejs_gc_duration_seconds_sum{kind="major"} 0.25',
        'unrelated_metric 9',
      ].join('\n'),
    );
    expect(m['nodejs_heap_size_used_bytes']).toBe(1234);
    expect(m['nodejs_gc_duration_seconds_sum']).toBeCloseTo(0.75, 9);
    expect(m['unrelated_metric']).toBeUndefined();
  });
  it('signs HS256 JWTs that verify with the secret', () => {
    const t = signHS256({ sub: 'u1', exp: 2 }, 's3cret');
    const [h, b, sig] = t.split('.');
    expect(createHmac('sha256', 's3cret').update(`${h}.${b}`).digest('base64url')).toBe(sig);
    expect(JSON.parse(Buffer.from(b!, 'base64url').toString())).toEqual({ sub: 'u1', exp: 2 });
  });
});

describe('cluster scenario options', () => {
  it('allows up to 100000 connections for cluster only, and parses the gateway list', () => {
    const o = parseArgs([
      'cluster',
      '--connections',
      '100000',
      '--urls',
      'http://127.0.0.1:8080,http://127.0.0.1:8081',
      '--conversations',
      '500',
    ]);
    expect(o.scenario).toBe('cluster');
    expect(o.connections).toBe(100000);
    expect(o.urls).toEqual(['http://127.0.0.1:8080', 'http://127.0.0.1:8081']);
    expect(o.conversations).toBe(500);
    expect(() => parseArgs(['cluster', '--connections', '100001'])).toThrow(/1\.\.100000/);
    expect(() => parseArgs(['idle', '--connections', '60000'])).toThrow(/1\.\.50000/);
    const g = parseArgs(['cluster', '--gateways', '8', '--base-port', '9000', '--jwt-secret-file', '/x']);
    expect([g.gateways, g.basePort, g.jwtSecretFile, g.auth]).toEqual([8, 9000, '/x', 'jwt']);
  });
  it("reads a gateway's realchat_active_connections from its labelled series", () => {
    expect(parseProm('realchat_active_connections{node_id="gateway-3"} 12500\n')['realchat_active_connections']).toBe(12500);
  });
});

describe('merging worker reports', () => {
  const report = (over: Partial<WorkerReport>): WorkerReport => ({
    workerId: 0,
    hist: '',
    sent: 0,
    acked: 0,
    delivered: 0,
    duplicates: 0,
    gaps: 0,
    errors: {},
    acked_per_conv: {},
    unique_per_conn_conv: [],
    first_recv_ms: 0,
    last_recv_ms: 0,
    open: 0,
    ...over,
  });
  it('counts loss per member of each conversation against the acked messages, across workers', () => {
    const h = newHist();
    recordMs(h, 2);
    const tally = tallyReports(
      [
        report({
          workerId: 0,
          hist: encodeHist(h),
          sent: 3,
          acked: 3,
          delivered: 5,
          open: 1,
          errors: { closed_1006: 1 },
          acked_per_conv: { a: 2, b: 1 },
          unique_per_conn_conv: [
            [0, 'a', 2],
            [2, 'b', 1],
          ],
        }),
        report({
          workerId: 1,
          sent: 1,
          acked: 1,
          delivered: 2,
          open: 2,
          errors: { closed_1006: 2 },
          acked_per_conv: { a: 1 },
          unique_per_conn_conv: [[1, 'a', 2]],
        }),
      ],
      new Map([
        ['a', [0, 1]],
        ['b', [2, 3]],
      ]),
    );
    // a: 3 acked x 2 members, member 0 and 1 miss one each; b: 1 acked x 2 members, member 3 got nothing
    expect([tally.expected_deliveries, tally.lost]).toEqual([8, 3]);
    expect([tally.sent, tally.acked, tally.delivered, tally.open]).toEqual([4, 4, 7, 3]);
    expect(tally.errors).toEqual({ closed_1006: 3 });
    expect(tally.latency_ms.count).toBe(1);
  });
  it('accept rate spans all workers; no workers means nothing open', () => {
    const c = mergeConnect([
      { attempted: 10, open: 10, failed: 0, first_attempt_ms: 1000, last_open_ms: 2000 },
      { attempted: 10, open: 8, failed: 2, first_attempt_ms: 1500, last_open_ms: 3000 },
    ]);
    expect(c).toEqual({ open: 18, failed: 2, accept_per_s: 9 });
    expect(mergeConnect([])).toEqual({ open: 0, failed: 0, accept_per_s: 0 });
  });
});
