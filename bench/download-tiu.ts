/**
 * `node bench/download-tiu.ts URL CACHE_DIR`: one download through tiu's downloader
 * (src/tiu/device/download.ts), unconditional, as the download benchmark measures it.
 * Prints the downloaded file's path.
 */
import { download } from '../src/tiu/device/download.ts';
import { createLogger } from '../src/tiu/log.ts';

const [url, cacheDir] = process.argv.slice(2);
if (!url || !cacheDir) {
  process.stderr.write('usage: node bench/download-tiu.ts URL CACHE_DIR\n');
  process.exit(2);
}
process.stdout.write(`${await download({ url, cacheDir, log: createLogger('warn'), conditional: false })}\n`);
