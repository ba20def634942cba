/**
 * common/kafka/producer.ts splitRequests: what one flush sends is cut into requests of a bounded
 * size, in order, so records that land in one partition never add up past the broker's limit.
 */
import { describe, expect, it } from 'vitest';
import { KafkaError, isRecordRefusal, splitRequests, type OutRecord } from '../common/kafka/index.js';
import { toKafkaError } from '../common/kafka/errors.js';

const rec = (key: string, bytes: number): OutRecord => ({ key, value: 'x'.repeat(bytes), headers: {} });

describe('produce requests are bounded in bytes', () => {
  it('keeps everything in one request while it fits', () => {
    const out = splitRequests(
      [
        ['a', [rec('1', 100), rec('2', 100)]],
        ['b', [rec('3', 100)]],
      ],
      10_000,
    );
    expect(out).toHaveLength(1);
    expect(out[0]!.map((t) => [t.topic, t.records.map((r) => r.key)])).toEqual([
      ['a', ['1', '2']],
      ['b', ['3']],
    ]);
  });

  it('cuts at the bound, keeps the order across requests, gives an oversized record a request of its own', () => {
    const records = [rec('1', 400), rec('2', 400), rec('3', 400), rec('big', 5_000), rec('4', 100)];
    const out = splitRequests([['a', records]], 1_000);
    expect(out.map((req) => req.flatMap((t) => t.records.map((r) => r.key)))).toEqual([['1', '2'], ['3'], ['big'], ['4']]);
    for (const req of out.filter((q) => q.some((t) => t.records.some((r) => r.key !== 'big'))))
      expect(req.flatMap((t) => t.records).reduce((n, r) => n + r.value.length, 0)).toBeLessThanOrEqual(1_000);
  });

  it('counts keys, headers and multi-byte characters', () => {
    const wide: OutRecord = { key: 'k', value: 'é'.repeat(300), headers: { trace: 't'.repeat(100) } }; // 600 bytes of value
    expect(splitRequests([['a', [wide, wide]]], 1_000)).toHaveLength(2);
  });
});

describe('which failures are a record refused (the only ones a shared request is redone call by call for)', () => {
  it("the broker refusing a record, also wrapped as kafkajs' retrier does; not a broker away or a timeout", async () => {
    const kafkajs = (await import('kafkajs')).default;
    // kafkajs' retrier: new KafkaJSNonRetriableError(e, { cause: e.cause || e }) (its types omit the option)
    const wrap = (e: Error) => Object.assign(new kafkajs.KafkaJSNonRetriableError(e), { cause: e });
    const tooLarge = new kafkajs.KafkaJSProtocolError(
      Object.assign(new Error('too large'), { type: 'MESSAGE_TOO_LARGE', code: 10, retriable: false }),
    );
    expect(isRecordRefusal(toKafkaError(tooLarge, 'kafka produce'))).toBe(true);
    expect(isRecordRefusal(toKafkaError(wrap(tooLarge), 'kafka produce'))).toBe(true);
    const away = new kafkajs.KafkaJSConnectionError('Connection error: connect ECONNREFUSED');
    expect(isRecordRefusal(toKafkaError(wrap(away), 'kafka produce'))).toBe(false);
    expect(isRecordRefusal(new KafkaError('kafka produce: timed out', { retriable: true }))).toBe(false);
  });
});
