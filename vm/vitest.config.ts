import { defineConfig } from 'vitest/config';

// The VM suite (npm run test:vm): boots QEMU guests under TCG. The two variants (bios.test.ts,
// uefi.test.ts) run side by side, one VM each: a guest is often idle (firmware and boot loader
// timeouts, panic delays, the harness polling), so two share the 2 cores well.
// TIU_VM_PARALLEL=1 runs them one after the other. vm-test-results.json feeds .ci/run's summary.
export default defineConfig({
  test: {
    include: ['vm/**/*.test.ts'],
    testTimeout: 900_000,
    hookTimeout: 3_600_000,
    pool: 'forks',
    fileParallelism: process.env.TIU_VM_PARALLEL !== '1',
    maxWorkers: Number(process.env.TIU_VM_PARALLEL ?? 2) || 1,
    sequence: { concurrent: false },
    globalSetup: ['vm/global-setup.ts'],
    reporters: ['default', ['json', { outputFile: 'vm-test-results.json' }]],
  },
});
