/**
 * `node bench/download-curl.ts URL FILE`: plain `curl -o FILE URL`, started from a Node process
 * the way tiu's downloader starts curl (node:child_process) and timed around that spawn the way
 * bench/download-tiu.ts times its download() call. Prints `{"transferS": …}`.
 *
 * The baseline of the judged download row: the same clock and the same cost of starting curl
 * from Node on both sides. The `curl -o` row's wall time also includes the harness starting
 * GNU time and timeout (~30 ms on a loaded machine), which tiu's call does not pay.
 */
import { spawn } from 'node:child_process';

const [url, file] = process.argv.slice(2);
if (!url || !file) {
  process.stderr.write('usage: node bench/download-curl.ts URL FILE\n');
  process.exit(2);
}
const t0 = performance.now();
const code = await new Promise<number | null>((resolve, reject) => {
  const child = spawn('curl', ['--silent', '--show-error', '--fail', '-o', file, url], { stdio: ['ignore', 'ignore', 'inherit'] });
  child.on('error', reject);
  child.on('close', resolve);
});
const transferS = (performance.now() - t0) / 1000;
if (code !== 0) process.exit(1);
process.stdout.write(`${JSON.stringify({ transferS })}\n`);
