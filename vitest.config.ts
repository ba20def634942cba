import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['tests/**/*.test.ts', 'perf/**/*.test.ts'],
    globalSetup: ['tests/global-setup.ts'],
    testTimeout: 60_000,
    hookTimeout: 120_000,
    // 2 cores: a few files at a time, each with its own server and database.
    pool: 'forks',
    maxWorkers: 2,
    reporters: ['default'],
  },
});
