#!/usr/bin/env node
// Thin launcher: Node.js >= 24 runs the TypeScript sources directly (type stripping).
const [major] = process.versions.node.split('.').map(Number);
if (major < 24) {
  process.stderr.write(`tiu: needs Node.js 24 or newer, this is ${process.version}; run 'npm run setup' in the checkout and use 'npx tiu'\n`);
  process.exit(69);
}
const { main } = await import('../src/tiu/cli.ts');
process.exitCode = await main(process.argv);
