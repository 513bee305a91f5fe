/**
 * One download attempt: curl runs as a child (argv from ./curl.ts), tiu reads its stdout —
 * the response headers first (`-D -`), then the body — and hands the body of a 200/206 to a
 * sink, counting every byte so the size cap holds even when the server announced no length.
 * Nothing here retries; ./fetch.ts decides what an outcome means.
 */
import { readFileSync, rmSync, statSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import type { System } from '../../core/system.ts';
import { curlArgs, isInterim, lastHead, parseHead, type CurlRequest, type ResponseHead } from './curl.ts';

/** Where a body goes. `begin` is called once, when the final response is known to carry data. */
export interface BodySink {
  /** `append` for a 206 continuing at the requested offset; otherwise start from empty. */
  begin(append: boolean): Promise<void>;
  write(chunk: Buffer): Promise<void>;
  close(): Promise<void>;
}

export interface AttemptOutcome {
  /** The final response's head, if one arrived. */
  head?: ResponseHead;
  /** curl's exit code (0 when it completed; -1 when it was killed by tiu or a signal). */
  exitCode: number;
  stderr: string;
  /** Body bytes written to the sink in this attempt. */
  received: number;
  /** Offset the sink's data starts at: `from` for a 206, 0 otherwise. */
  offset: number;
  /** Stopped by tiu because offset + received exceeded `maxBytes`. */
  tooLarge: boolean;
  /** First bytes of an error response's body (for the message). */
  errorBody: string;
  aborted: boolean;
}

const MAX_HEADER_BYTES = 256 * 1024;
const MAX_ERROR_BODY = 64 * 1024;

/** Runs one curl attempt; never throws for transport problems (they are in the outcome). */
export async function runAttempt(
  sys: System,
  req: CurlRequest,
  o: {
    sink: BodySink;
    maxBytes: number;
    signal?: AbortSignal;
    /** Called with a 200/206 head before any body is written; throwing stops the attempt. */
    onHead?: (head: ResponseHead) => Promise<void>;
    onBytes?: (total: number, head: ResponseHead) => void;
  },
): Promise<AttemptOutcome> {
  const child = sys.spawn('curl', curlArgs(req), { stream: true, signal: o.signal });
  let stderr = '';
  child.stderr?.on('data', (c: Buffer) => {
    if (stderr.length < 8192) stderr += c.toString('utf8');
  });
  const out: AttemptOutcome = { exitCode: -1, stderr: '', received: 0, offset: 0, tooLarge: false, errorBody: '', aborted: false };
  let pending: Buffer = Buffer.alloc(0);
  let headerBytes = 0;
  let mode: 'head' | 'body' | 'discard' = 'head';
  let sinkOpen = false;
  const stop = () => child.kill('SIGTERM');
  try {
    for await (const raw of child.stdout as AsyncIterable<Buffer>) {
      let chunk: Buffer = raw;
      while (mode === 'head' && chunk.length > 0) {
        pending = pending.length ? Buffer.concat([pending, chunk]) : chunk;
        chunk = Buffer.alloc(0);
        const end = pending.indexOf('\r\n\r\n');
        if (end < 0) {
          if (pending.length > MAX_HEADER_BYTES) { stop(); break; }
          break;
        }
        headerBytes += end + 4;
        if (headerBytes > MAX_HEADER_BYTES) { stop(); break; }
        const head = parseHead(pending.subarray(0, end).toString('latin1'));
        chunk = pending.subarray(end + 4);
        pending = Buffer.alloc(0);
        if (!head) { stop(); break; }
        if (isInterim(head)) continue;
        out.head = head;
        if (head.status === 200 || head.status === 206) {
          out.offset = head.status === 206 ? (req.from ?? 0) : 0;
          await o.onHead?.(head);
          await o.sink.begin(head.status === 206);
          sinkOpen = true;
          mode = 'body';
        } else {
          mode = 'discard';
        }
      }
      if (chunk.length === 0) continue;
      if (mode === 'body') {
        if (out.offset + out.received + chunk.length > o.maxBytes) {
          out.tooLarge = true;
          stop();
          break;
        }
        await o.sink.write(chunk);
        out.received += chunk.length;
        o.onBytes?.(out.offset + out.received, out.head!);
      } else if (mode === 'discard') {
        if (out.errorBody.length < 512) out.errorBody += chunk.toString('utf8').slice(0, 512);
        out.received += chunk.length;
        if (out.received > MAX_ERROR_BODY) { stop(); break; }
      }
    }
  } catch (e) {
    // A sink that cannot write (ENOSPC, EIO): stop curl, then report the error.
    stop();
    await Promise.resolve(child).catch(() => {});
    throw e;
  } finally {
    if (sinkOpen) await o.sink.close();
  }
  const r = (await child) as unknown as { exitCode?: number; isCanceled?: boolean; code?: string; cause?: { code?: string } };
  out.exitCode = r.exitCode ?? -1;
  out.aborted = !!r.isCanceled || !!o.signal?.aborted;
  out.stderr = stderr;
  if (r.exitCode === undefined && (r.code ?? r.cause?.code) === 'ENOENT') out.stderr = 'curl-missing';
  return out;
}

/**
 * One attempt where curl writes the body straight to `file` (the fast path for archives: no
 * byte passes through Node). tiu watches the file's size every `pollMs` for progress and the
 * size cap (curl's own `--max-filesize` only checks an announced length), and the heads file
 * for the final response (free-space check via `onHead`, which may throw to stop curl).
 *
 * The small file operations here (the heads file, the size) are synchronous on purpose: each
 * is one syscall on a local file, while the first asynchronous one in a process waits for
 * libuv's thread pool to start (~10 ms, measured; a 50 MB archive from a LAN takes ~100 ms).
 * The attempt returns as soon as curl has exited: a poll in flight is awaited, never a tick.
 */
export async function runFileAttempt(
  sys: System,
  req: CurlRequest & { toFile: { file: string; headers: string } },
  o: {
    maxBytes: number;
    signal?: AbortSignal;
    pollMs?: number;
    onHead?: (head: ResponseHead) => Promise<void>;
    onBytes?: (size: number, head: ResponseHead | undefined) => void;
  },
): Promise<AttemptOutcome & { headError?: unknown }> {
  rmSync(req.toFile.headers, { force: true });
  const piped = !!req.toFile.piped;
  // Not piped: curl writes the file itself and its stdout carries nothing.
  // curl checks --max-time only while it is not blocked: writing into the pipe tiu paces (a rate
  // limit), it overran a 2 s deadline by 8 s. The command seam enforces the attempt's time as
  // well, a little after curl would (so that curl's own timeout wins where it can); reported as
  // curl's exit 28.
  const limitMs = Math.max(1, Math.ceil(req.maxSeconds)) * 1000 + 500;
  const child = sys.spawn('curl', curlArgs(req), { stream: true, signal: o.signal, discardStdout: !piped, timeoutMs: limitMs });
  let stderr = '';
  child.stderr?.on('data', (c: Buffer) => {
    if (stderr.length < 8192) stderr += c.toString('utf8');
  });
  // Piped (a rate limit): tiu paces the copy, so curl blocks on the pipe and TCP slows the sender.
  const copying = piped ? pacedCopy(child.stdout!, req.toFile.file, req.from ?? 0, req.rateLimit) : Promise.resolve();
  const out: AttemptOutcome & { headError?: unknown } = { exitCode: -1, stderr: '', received: 0, offset: req.from ?? 0, tooLarge: false, errorBody: '', aborted: false };
  let head: ResponseHead | undefined;
  const readHead = (): ResponseHead | undefined => {
    let text = '';
    try {
      text = readFileSync(req.toFile.headers, 'latin1');
    } catch {
      return undefined;
    }
    const end = text.lastIndexOf('\r\n\r\n');
    return end < 0 ? undefined : lastHead(text.slice(0, end));
  };
  const sizeNow = (): number => {
    try {
      return statSync(req.toFile.file).size;
    } catch {
      return 0;
    }
  };
  const tick = async () => {
    if (!head) {
      head = readHead();
      if (head && (head.status === 200 || head.status === 206)) {
        await o.onHead?.(head).catch((e: unknown) => {
          out.headError = e;
          child.kill('SIGTERM');
        });
      }
    }
    const size = sizeNow();
    if (size > o.maxBytes) {
      out.tooLarge = true;
      child.kill('SIGTERM');
    }
    o.onBytes?.(size, head);
  };
  let polling: Promise<void> | undefined;
  let pollError: unknown;
  const timer = setInterval(() => {
    polling ??= tick().catch((e: unknown) => {
      // A failing progress callback stops this attempt and is reported after curl exited.
      pollError ??= e;
      child.kill('SIGTERM');
    }).finally(() => {
      polling = undefined;
    });
  }, o.pollMs ?? 100);
  const copied = copying.then(() => undefined, (e: unknown) => {
    child.kill('SIGTERM');
    return e;
  });
  const r = (await child) as unknown as { exitCode?: number; isCanceled?: boolean; timedOut?: boolean; code?: string; cause?: { code?: string } };
  clearInterval(timer);
  const copyError = await copied;
  await polling;
  if (copyError) throw copyError;
  if (pollError) throw pollError;
  out.head = readHead();
  const size = sizeNow();
  if (size > o.maxBytes) out.tooLarge = true;
  out.received = Math.max(0, size - out.offset);
  out.exitCode = r.exitCode ?? -1;
  out.aborted = !!r.isCanceled || !!o.signal?.aborted;
  out.stderr = stderr;
  if (r.timedOut && out.exitCode !== 0 && !out.aborted && !out.tooLarge) {
    out.exitCode = 28;
    out.stderr = `Operation timed out after ${limitMs} milliseconds (stopped by tiu: curl was blocked writing)`;
  }
  if (r.exitCode === undefined && (r.code ?? r.cause?.code) === 'ENOENT') out.stderr = 'curl-missing';
  if (out.head && (out.head.status === 200 || out.head.status === 206) && r.exitCode === 0) o.onBytes?.(size, out.head);
  return out;
}

/**
 * Copies curl's stdout into `file` (appending for a resumed request: curl's --continue-at fails
 * with exit 33 rather than send a 200 body, so any body continues at `from`), at most `rate`
 * bytes per second on average from the start.
 */
async function pacedCopy(stream: NodeJS.ReadableStream, file: string, from: number, rate: number | undefined): Promise<void> {
  const fh = await open(file, from > 0 ? 'a' : 'w', 0o600);
  const started = Date.now();
  let copied = 0;
  try {
    for await (const chunk of stream as AsyncIterable<Buffer>) {
      await fh.write(chunk);
      copied += chunk.length;
      if (rate) {
        const ahead = (copied / rate) * 1000 - (Date.now() - started);
        if (ahead > 0) await sleep(ahead);
      }
    }
  } finally {
    await fh.close();
  }
}
