/**
 * `node bench/download-tiu.ts URL CACHE_DIR`: one download through tiu's downloader
 * (src/tiu/device/download.ts), unconditional, as the download benchmark measures it.
 * Prints `{"path": …, "transferS": …}`: transferS is the time of the download() call alone,
 * without Node's start and module loading (which `tiu update` pays once, not per byte).
 */
import { download } from '../src/tiu/device/download.ts';
import { createLogger } from '../src/core/log.ts';

const [url, cacheDir] = process.argv.slice(2);
if (!url || !cacheDir) {
  process.stderr.write('usage: node bench/download-tiu.ts URL CACHE_DIR\n');
  process.exit(2);
}
const t0 = performance.now();
const path = await download({ url, cacheDir, log: createLogger('warn'), conditional: false });
process.stdout.write(`${JSON.stringify({ path, transferS: (performance.now() - t0) / 1000 })}\n`);
