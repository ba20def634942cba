/** REALCHAT_KAFKA_LOG_LEVEL: what the Kafka client logs, for an incident (common/config.ts, common/kafka/client.ts). */
import { Writable } from 'node:stream';
import pino from 'pino';
import { describe, expect, it } from 'vitest';
import { loadConfig } from '../common/config.js';
import { createKafkaClient, kafkaConnection, raw } from '../common/kafka/client.js';

/** A role's logger at info, writing its lines to an array. */
function capture() {
  const lines: Record<string, unknown>[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const l of chunk.toString().split('\n').filter(Boolean)) lines.push(JSON.parse(l) as Record<string, unknown>);
      done();
    },
  });
  return { log: pino({ level: 'info' }, sink), lines };
}

describe('REALCHAT_KAFKA_LOG_LEVEL', () => {
  it('defaults to warn and refuses what is not a level', () => {
    expect(loadConfig({}).kafka.clientLogLevel).toBe('warn');
    expect(loadConfig({ REALCHAT_KAFKA_LOG_LEVEL: 'debug' }).kafka.clientLogLevel).toBe('debug');
    for (const bad of ['DEBUG', 'trace', 'verbose', '5'])
      expect(() => loadConfig({ REALCHAT_KAFKA_LOG_LEVEL: bad })).toThrow(/REALCHAT_KAFKA_LOG_LEVEL/);
  });

  it('at debug the client logs its requests at the role info level, with the namespace; at warn it does not', async () => {
    for (const level of ['warn', 'debug'] as const) {
      const { log, lines } = capture();
      const config = loadConfig({ REALCHAT_KAFKA_LOG_LEVEL: level });
      const client = createKafkaClient({ brokers: ['127.0.0.1:1'], clientId: 'log-test', log, ...kafkaConnection(config) });
      const logger = raw(client).logger().namespace('Connection');
      logger.debug('Request Fetch(key: 1, version: 11)', { broker: '127.0.0.1:9092', correlationId: 7 });
      logger.warn('Response without a request', { correlationId: 8 });
      await new Promise((r) => setImmediate(r));
      const requests = lines.filter((l) => l.msg === 'Request Fetch(key: 1, version: 11)');
      if (level === 'warn') expect(requests).toEqual([]);
      else
        expect(requests).toMatchObject([
          { level: 30, namespace: 'Connection', broker: '127.0.0.1:9092', correlationId: 7, component: 'kafkajs' },
        ]);
      expect(lines.filter((l) => l.msg === 'Response without a request')).toMatchObject([{ level: 40, namespace: 'Connection' }]);
    }
  });
});
