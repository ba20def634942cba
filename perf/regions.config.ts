import { defineConfig } from 'vitest/config';

/** `npm run perf:regions`: the multi-region measurements (perf/regions.measure.ts), not part of npm test. */
export default defineConfig({
  test: {
    include: ['perf/regions.measure.ts'],
    globalSetup: ['tests/global-setup.ts'],
    testTimeout: 3_600_000,
    hookTimeout: 300_000,
    pool: 'forks',
    maxWorkers: 1,
    reporters: ['default'],
  },
});
