/**
 * The transport tuf-js uses for metadata: http(s) with a timeout, and `file://` for a
 * repository on a USB stick or a disk attached to a VM (tuf-js's own fetcher speaks only HTTP).
 * Every download is bounded by tuf-js's `maxLength` (BaseFetcher counts the bytes and stops at
 * the limit: the endless-data defence); a missing file is a 404 so the root-chain walk ends.
 */
import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import { Readable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { BaseFetcher } from 'tuf-js';
import { DownloadHTTPError } from 'tuf-js/dist/error.js';

export class RepoFetcher extends BaseFetcher {
  private readonly timeoutMs: number;
  constructor(timeoutMs = 30_000) {
    super();
    this.timeoutMs = timeoutMs;
  }

  override async fetch(url: string): Promise<ReadableStream<Uint8Array<ArrayBuffer>>> {
    if (url.startsWith('file://')) {
      const path = fileURLToPath(url);
      const st = await stat(path).catch(() => undefined);
      if (!st || !st.isFile()) throw new DownloadHTTPError(`${path} is not there`, 404);
      return Readable.toWeb(createReadStream(path)) as ReadableStream<Uint8Array<ArrayBuffer>>;
    }
    const res = await fetch(url, { headers: { 'user-agent': 'tiu' }, signal: AbortSignal.timeout(this.timeoutMs), redirect: 'follow' });
    if (!res.ok || !res.body) {
      await res.body?.cancel();
      throw new DownloadHTTPError(`HTTP ${res.status} for ${url}`, res.status);
    }
    return res.body as ReadableStream<Uint8Array<ArrayBuffer>>;
  }
}
