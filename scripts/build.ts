/**
 * `npm run build`: bundles tiu (bin/tiu.js, src/, the runtime dependencies) into ES modules,
 * dist/tiu.mjs and its chunks in dist/lib/, with rolldown. The checkout runs the TypeScript sources directly; the bundle is
 * what a package or a device image ships: it starts in a fraction of the time (one file to read
 * and compile instead of ~300 modules), which matters for the health check at every boot on
 * slow hardware (and under QEMU's software emulation, where the VM harness runs it).
 *
 * Beside the bundle it generates, from the same commander program that serves `--help`, the
 * manual pages (dist/man/tiu.8, dist/man/tiu.conf.5 from docs/configuration.md) and the shell
 * completions (dist/completions/tiu.bash, _tiu, tiu.fish). scripts/install.sh installs them.
 */
import { chmod, mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { basename, dirname, resolve } from 'node:path';
import { build } from 'rolldown';
import { buildProgram, GLOBAL_OPTIONS } from '../src/tiu/cli.ts';
import { describeCommand } from '../src/tiu/docgen/tree.ts';
import { markdownManPage, tiuManPage } from '../src/tiu/docgen/man.ts';
import { bashCompletion, fishCompletion, zshCompletion } from '../src/tiu/docgen/completion.ts';
import { TIU_VERSION } from '../src/tiu/version.ts';

const repo = resolve(import.meta.dirname, '..');
const out = process.argv[2] ?? `${repo}/dist/tiu.mjs`;
// The entry stays small and every lazily imported command (with what only it needs: pkijs for
// archives, tuf-js for repositories, dbus-next for the daemon) becomes its own chunk in lib/
// beside it, so a command compiles only its own code: `tiu check` loads ~1 MB instead of the
// whole 3.3 MB (measured: peak RSS 91 → 77 MiB). Old chunks are removed first (hashed names).
await rm(`${dirname(out)}/lib`, { recursive: true, force: true });
await build({
  input: `${repo}/bin/tiu.js`,
  platform: 'node',
  // A native addon cannot be bundled: the bundle imports it from node_modules beside it at run
  // time, and falls back to getfattr/setfattr where it is not there (src/core/fileindex/xattrs.ts).
  // The same for the download lock's binding (loaded with require; src/tiu/download/lock.ts).
  external: ['@napi-rs/xattr', 'fs-native-extensions'],
  logLevel: 'warn',
  output: { dir: dirname(out), entryFileNames: basename(out), chunkFileNames: 'lib/[name]-[hash].mjs', format: 'esm', minify: false },
});
await chmod(out, 0o755);
process.stderr.write(`build: wrote ${out}\n`);

const dist = dirname(out);
const tree = describeCommand(buildProgram());
const files: Record<string, string> = {
  'man/tiu.8': tiuManPage(tree, { version: TIU_VERSION, globalOptions: GLOBAL_OPTIONS }),
  'man/tiu.conf.5': markdownManPage(await readFile(`${repo}/docs/configuration.md`, 'utf8'), {
    name: 'tiu.conf', section: 5, version: TIU_VERSION, summary: 'configuration of tiu', source: 'docs/configuration.md',
  }),
  'completions/tiu.bash': bashCompletion(tree, GLOBAL_OPTIONS),
  'completions/_tiu': zshCompletion(tree, GLOBAL_OPTIONS),
  'completions/tiu.fish': fishCompletion(tree, GLOBAL_OPTIONS),
};
for (const [name, text] of Object.entries(files)) {
  await mkdir(dirname(`${dist}/${name}`), { recursive: true });
  await writeFile(`${dist}/${name}`, text);
}
process.stderr.write(`build: wrote ${Object.keys(files).map((f) => `${dist}/${f}`).join(', ')}\n`);
