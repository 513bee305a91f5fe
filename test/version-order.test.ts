import { describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import fc from 'fast-check';
import { compareVersions, parseVersion, versionProblem } from '../src/tiu/archive/version-order.ts';

function hasDpkg(): boolean {
  try {
    execFileSync('dpkg', ['--version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

describe('version order', () => {
  it('orders like dpkg on a table', () => {
    const ascending = ['0.9', '1.0~rc1', '1.0', '1.0-1', '1.0-2', '1.0+fix1', '1.0.1', '1.2', '1.9', '1.10', '2', '2.0a', '2.0b', '10', '1:0.1'];
    for (let i = 0; i < ascending.length; i++)
      for (let j = 0; j < ascending.length; j++)
        expect(Math.sign(compareVersions(ascending[i]!, ascending[j]!)), `${ascending[i]} vs ${ascending[j]}`).toBe(Math.sign(i - j));
    expect(compareVersions('1.01', '1.1')).toBe(0);
  });

  it('refuses versions that cannot be ordered', () => {
    expect(versionProblem('latest')).toMatch(/start with a digit/);
    expect(versionProblem('x:1')).toMatch(/epoch/);
    expect(versionProblem('1.0-')).toMatch(/end with/);
    expect(versionProblem('2026.12.05')).toBeUndefined();
    expect(parseVersion('3:1.2-4')).toEqual({ epoch: 3, upstream: '1.2', revision: '4' });
  });

  const part = fc.stringMatching(/^[0-9][0-9a-z.+~]{0,6}$/);
  const version = fc.tuple(fc.option(fc.integer({ min: 0, max: 3 })), part, fc.option(fc.stringMatching(/^[0-9a-z.+~]{1,4}$/))).map(
    ([e, u, r]) => `${e === null ? '' : `${e}:`}${u}${r === null ? '' : `-${r}`}`,
  );

  it('is antisymmetric on random versions', () => {
    fc.assert(
      fc.property(version, version, (a, b) => {
        // (`0 - x`, not `-x`: toBe compares with Object.is, and -0 is not 0 for equal versions
        // such as 1:8 and 1:08, which fast-check finds now and then)
        expect(Math.sign(compareVersions(b, a))).toBe(0 - Math.sign(compareVersions(a, b)));
      }),
      { numRuns: 500 },
    );
  });

  // The unit project runs without tools (npm run test:unit): there this one reports a skip.
  it.skipIf(!hasDpkg())('agrees with dpkg --compare-versions on random versions', () => {
    fc.assert(
      fc.property(version, version, (a, b) => {
        const c = compareVersions(a, b);
        const op = c < 0 ? 'lt' : c > 0 ? 'gt' : 'eq';
        try {
          execFileSync('dpkg', ['--compare-versions', a, op, b], { stdio: 'ignore' });
        } catch {
          throw new Error(`dpkg disagrees: ${a} ${op} ${b}`);
        }
      }),
      { numRuns: 150 },
    );
  });
});
