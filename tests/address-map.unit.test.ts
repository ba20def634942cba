/** REALCHAT_ADDRESS_MAP (common/config.ts): where to connect instead of the addresses Kafka and Sentinel hand out. */
import { describe, expect, it } from 'vitest';
import { loadConfig } from '../common/config.js';

describe('REALCHAT_ADDRESS_MAP', () => {
  it('parses host:port=host:port pairs; unset is empty', () => {
    expect(loadConfig({}).addressMap.size).toBe(0);
    const m = loadConfig({ REALCHAT_ADDRESS_MAP: '127.0.0.1:9092=127.0.0.1:19092, redis-1:6379=10.0.0.7:16379' }).addressMap;
    expect([...m]).toEqual([
      ['127.0.0.1:9092', { host: '127.0.0.1', port: 19092 }],
      ['redis-1:6379', { host: '10.0.0.7', port: 16379 }],
    ]);
  });

  it('refuses what is not a pair of host:port', () => {
    for (const bad of ['127.0.0.1:9092', 'a:1=b:2=c:3', 'a:1=b', 'a:0=b:2', '=b:2'])
      expect(() => loadConfig({ REALCHAT_ADDRESS_MAP: bad })).toThrow(/REALCHAT_ADDRESS_MAP/);
  });
});
