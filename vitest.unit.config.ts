import { defineConfig } from 'vitest/config';

/**
 * `npm run test:unit`: the pure tests (plans, parsers, merges, manifests, path resolution,
 * orders). They need no root, no loop devices and no external tools, so they run anywhere,
 * e.g. as an unprivileged user on a laptop without btrfs-progs. `.ci/run` runs them that way (as
 * `nobody`, with only Node on PATH), so a pure test that starts needing root or a tool fails there.
 */
export const UNIT_TESTS = [
  'test/apply-plan.test.ts',
  'test/boot-units.test.ts',
  'test/compile-cache.test.ts',
  'test/etc-carry.test.ts',
  'test/etc-merge-accounts.test.ts',
  'test/layering.test.ts',
  'test/policy.test.ts',
  'test/fileindex.test.ts',
  'test/repo-plan.test.ts',
  'test/repo-build.test.ts',
  'test/sign-fuzz.test.ts',
  'test/sign-units.test.ts',
  'test/snapshot-infoxml.test.ts',
  'test/snapshot-pure.test.ts',
  'test/squashfs-parse.test.ts',
  'test/verity-layout.test.ts',
  'test/version-order.test.ts',
];

export default defineConfig({
  test: {
    include: UNIT_TESTS,
    testTimeout: 180_000,
    pool: 'forks',
    reporters: ['default', ['json', { outputFile: process.env.TIU_UNIT_REPORT ?? 'unit-test-results.json' }]],
  },
});
