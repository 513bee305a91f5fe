import { defineConfig } from 'vitest/config';

// The VM suite (npm run test:vm): boots QEMU guests under TCG, one file at a time (2 cores).
// vm-test-results.json is read by .ci/run for its summary line.
export default defineConfig({
  test: {
    include: ['vm/**/*.test.ts'],
    testTimeout: 900_000,
    hookTimeout: 3_600_000,
    pool: 'forks',
    fileParallelism: false,
    sequence: { concurrent: false },
    globalSetup: ['vm/global-setup.ts'],
    reporters: ['default', ['json', { outputFile: 'vm-test-results.json' }]],
  },
});
