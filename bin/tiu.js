#!/usr/bin/env node
// Thin launcher: Node.js >= 24 runs the TypeScript sources directly (type stripping).
// `npm run build` bundles this file with everything it imports into dist/tiu.mjs.
import { fileURLToPath } from 'node:url';
import os from 'node:os';
import v8 from 'node:v8';

// Keep V8's young generation at its starting size instead of letting its semi-spaces grow: tiu
// allocates in short bursts, and that growth was ~20 MiB of the peak RSS of `tiu extract`
// (146 -> 127 MiB on the Debian update) with no measurable speed-up. V8 reads this flag at each
// growth decision, so setting it here at start-up takes effect.
v8.setFlagsFromString('--semi-space-growth-factor=1');

// libuv's thread pool (4 threads by default) starts at the first asynchronous file operation:
// sized here, before that, to the cores there are (2 to 4). tiu's hot paths make synchronous
// calls, and on a 2-core device 4 threads only contend with the main thread: `tiu extract` of
// the Debian update ran ~0.1 s faster and 1.5 MiB smaller with 2. A value set by the user wins.
process.env.UV_THREADPOOL_SIZE ??= String(Math.max(2, Math.min(4, os.availableParallelism())));

const [major] = process.versions.node.split('.').map(Number);
if (major < 24) {
  process.stderr.write(`tiu: needs Node.js 24 or newer, this is ${process.version}; run 'npm run setup' in the checkout and use 'npx tiu'\n`);
  process.exit(69);
}
// V8's code cache across runs (NODE_COMPILE_CACHE, if set, is used by Node itself). As root the
// cache lives in /var/cache/tiu (TIU_COMPILE_CACHE to move it): /tmp is a fresh tmpfs at every
// boot, and the health check runs at every boot. One directory per install, stale ones pruned
// (src/tiu/compile-cache.ts). A cache that cannot be written is skipped silently.
if (!process.env.NODE_COMPILE_CACHE && process.getuid?.() === 0) {
  try {
    // (imported here, after the version check: Node 20 cannot load a .ts file)
    const { enableCompileCache } = await import('../src/tiu/compile-cache.ts');
    enableCompileCache(fileURLToPath(import.meta.url), process.env.TIU_COMPILE_CACHE || undefined);
  } catch {}
}
const { main } = await import('../src/tiu/cli.ts');
process.exitCode = await main(process.argv);
