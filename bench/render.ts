/**
 * Re-renders latest.md from latest.json (targets re-evaluated), e.g. after changing the report
 * layout, without measuring again:  node bench/render.ts [results dir, default bench/results]
 */
import { readFile, writeFile } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { renderMarkdown } from './lib/markdown.ts';
import { evaluateTargets } from './lib/targets.ts';
import type { BenchReport } from './lib/types.ts';

const dir = resolve(process.argv[2] ?? join(dirname(fileURLToPath(import.meta.url)), 'results'));
const report = JSON.parse(await readFile(join(dir, 'latest.json'), 'utf8')) as BenchReport;
report.targets = evaluateTargets(report);
await writeFile(join(dir, 'latest.json'), JSON.stringify(report, null, 2) + '\n');
await writeFile(join(dir, 'latest.md'), renderMarkdown(report));
process.stderr.write(`rendered ${join(dir, 'latest.md')}\n`);
