import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['scripts/*.test.mjs', 'ops/*.test.ts', 'packages/*/src/**/*.test.ts', 'apps/*/src/**/*.test.ts', 'apps/monitor/web/**/*.test.ts'],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    pool: 'forks',
    // the tests that spawn `emp` run the build (dist/), made here from the sources under test
    globalSetup: ['scripts/build.mjs'],
    reporters: ['default'],
  },
});
