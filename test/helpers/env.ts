/** Shared test helpers: temp dirs, the real system layer, and loop-mounted btrfs filesystems. */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createSystem, type System } from '../../src/core/system.ts';
import { createLogger } from '../../src/core/log.ts';
import { TiuError } from '../../src/core/errors.ts';

export function testSystem(): System {
  return createSystem(createLogger(process.env.TIU_TEST_DEBUG ? 'debug' : 'warn'));
}

/** A temp dir removed by the returned dispose function (use with `await using`). */
export async function tempDir(prefix = 'tiu-test-'): Promise<{ path: string } & AsyncDisposable> {
  const path = await mkdtemp(join(process.env.TIU_TEST_TMP ?? tmpdir(), prefix));
  return {
    path,
    async [Symbol.asyncDispose]() {
      await rm(path, { recursive: true, force: true });
    },
  };
}

/** The TiuError code `f` throws, 'not a TiuError' for anything else, undefined when it returns. */
export function errorCodeOf(f: () => unknown): string | undefined {
  try {
    f();
  } catch (e) {
    return e instanceof TiuError ? e.code : 'not a TiuError';
  }
  return undefined;
}
