/**
 * Fetch and linger defaults measured in perf/README.md, "Twelfth round": the real-time consumers
 * answer on the first byte, the background ones (notifier, webhook dispatcher) wait for a large
 * fetch, and the relay polls as soon as a commit wakes it.
 */
import { describe, expect, it } from 'vitest';
import { loadConfig } from '../common/config.js';

describe('Kafka fetch and relay linger settings', () => {
  it('defaults: real-time fetches on the first byte, background fetches of 256 KiB or 100 ms, no relay linger', () => {
    const config = loadConfig({});
    expect(config.kafka.fetchMinBytes).toBe(1);
    expect(config.kafka.fetchMaxWaitMs).toBe(500);
    expect(config.kafka.backgroundFetchMinBytes).toBe(256 * 1024);
    expect(config.kafka.backgroundFetchMaxWaitMs).toBe(100);
    expect(config.timeouts.relayLingerMs).toBe(0);
  });

  it('each is set on its own and refused out of its bounds', () => {
    const config = loadConfig({
      REALCHAT_KAFKA_BACKGROUND_FETCH_MIN_BYTES: '1',
      REALCHAT_KAFKA_BACKGROUND_FETCH_MAX_WAIT_MS: '500',
      REALCHAT_RELAY_LINGER_MS: '5',
    });
    expect(config.kafka.backgroundFetchMinBytes).toBe(1);
    expect(config.kafka.backgroundFetchMaxWaitMs).toBe(500);
    expect(config.kafka.fetchMinBytes).toBe(1);
    expect(config.timeouts.relayLingerMs).toBe(5);
    expect(() => loadConfig({ REALCHAT_KAFKA_BACKGROUND_FETCH_MIN_BYTES: '0' })).toThrow(/REALCHAT_KAFKA_BACKGROUND_FETCH_MIN_BYTES/);
    expect(() => loadConfig({ REALCHAT_KAFKA_BACKGROUND_FETCH_MAX_WAIT_MS: '20000' })).toThrow(
      /REALCHAT_KAFKA_BACKGROUND_FETCH_MAX_WAIT_MS/,
    );
  });
});
