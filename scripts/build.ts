/**
 * `npm run build`: bundles tiu (bin/tiu.js, src/, the runtime dependencies) into one ES module,
 * dist/tiu.mjs, with rolldown. The checkout runs the TypeScript sources directly; the bundle is
 * what a package or a device image ships: it starts in a fraction of the time (one file to read
 * and compile instead of ~300 modules), which matters for the health check at every boot on
 * slow hardware (and under QEMU's software emulation, where the VM harness runs it).
 */
import { chmod } from 'node:fs/promises';
import { resolve } from 'node:path';
import { build } from 'rolldown';

const repo = resolve(import.meta.dirname, '..');
const out = process.argv[2] ?? `${repo}/dist/tiu.mjs`;
await build({
  input: `${repo}/bin/tiu.js`,
  platform: 'node',
  // A native addon cannot be bundled: the bundle imports it from node_modules beside it at run
  // time, and falls back to getfattr/setfattr where it is not there (src/tiu/fileindex/xattrs.ts).
  external: ['@napi-rs/xattr'],
  logLevel: 'warn',
  output: { file: out, format: 'esm', codeSplitting: false, minify: false },
});
await chmod(out, 0o755);
process.stderr.write(`build: wrote ${out}\n`);
