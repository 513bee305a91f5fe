/**
 * The pure half of the download transport: curl's argv for one attempt, the parsing of the
 * response headers curl writes ahead of the body (`-D -`), and what a curl exit status means.
 *
 * Why curl (Debian's, run as a child through the System seam) and not Node's fetch: Node 24's
 * bundled undici asserts `!this.paused` and kills the whole process when a server closes the
 * connection while the reader applies backpressure (issue #18) — outside every try/catch. curl
 * is the most widely deployed HTTP client there is, maintained with its own security process,
 * handles TLS, proxies (the usual *_proxy variables), redirects, rate limiting
 * (`--limit-rate`) and stall detection (`--speed-limit/--speed-time`) itself, and a crash of
 * the child can only fail one attempt, never tiu. For archives curl writes the `.part` itself
 * (`toFile`: no byte through Node, as fast as `curl -o`) and tiu watches its size; for small
 * metadata tiu reads heads and body from curl's stdout and counts every byte.
 */

/** What one attempt asks curl for. */
export interface CurlRequest {
  url: string;
  /** Resume: ask for bytes from here on (`Range: bytes=N-`). */
  from?: number;
  /** Validator of the partial data (ETag or Last-Modified): a changed file comes back whole. */
  ifRange?: string;
  /** Conditional request: answer 304 if unchanged. */
  ifNoneMatch?: string;
  ifModifiedSince?: string;
  rateLimit?: number;
  /** Abort when slower than `stallBytesPerSecond` for this many seconds. */
  stallSeconds: number;
  /** Seconds this attempt may take at most (the rest of the overall deadline). */
  maxSeconds: number;
  /** Refuse before the transfer when the announced length exceeds this. */
  maxFilesize?: number;
  /** Allow file:// (metadata fetches only). */
  allowFile?: boolean;
  /**
   * curl writes the body to this file itself (appending from `from` with `--continue-at`, which
   * fails with exit 33 if the server answers 200) and the heads to `headers`; `--fail` keeps
   * error bodies out of the file. Without it, heads and body go to stdout.
   */
  /**
   * Body to a file, heads to their own file. `piped`: curl writes the body to stdout and tiu
   * copies it into `file` (used to enforce a rate limit: curl's own --limit-rate lets the first
   * burst through unthrottled, e.g. Debian 12's curl 7.88 fetched 3 MB at "1M" in 0.1 s).
   */
  toFile?: { file: string; headers: string; piped?: boolean };
}

/** Lowest speed that is not a stall: 1 KiB/s, or a quarter of a lower rate limit. */
export function stallBytesPerSecond(rateLimit: number | undefined): number {
  return rateLimit ? Math.max(1, Math.min(1024, Math.floor(rateLimit / 4))) : 1024;
}

/** curl's argv (without the program name) for one attempt. Pure. */
export function curlArgs(r: CurlRequest): string[] {
  const protocols = r.allowFile ? '=http,https,file' : '=http,https';
  const a = [
    '--silent', '--show-error', '--no-progress-meter',
    // Heads (of every response, redirects included) ahead of the body, or to their own file.
    ...(r.toFile ? ['--dump-header', r.toFile.headers, '--output', r.toFile.piped ? '-' : r.toFile.file, '--fail'] : ['--dump-header', '-', '--output', '-']),
    '--location', '--max-redirs', '5',
    '--proto', protocols, '--proto-redir', '=http,https',
    '--user-agent', 'tiu',
    '--connect-timeout', String(Math.max(1, Math.min(30, Math.ceil(r.maxSeconds)))),
    '--speed-limit', String(stallBytesPerSecond(r.rateLimit)),
    '--speed-time', String(Math.max(1, Math.ceil(r.stallSeconds))),
    '--max-time', String(Math.max(1, Math.ceil(r.maxSeconds))),
    // Never inflate: the bytes on disk must be the bytes signed.
    '--header', 'Accept-Encoding: identity',
  ];
  if (r.rateLimit) a.push('--limit-rate', String(r.rateLimit));
  if (r.maxFilesize !== undefined) a.push('--max-filesize', String(r.maxFilesize));
  if (r.from) a.push(...(r.toFile ? ['--continue-at', String(r.from)] : ['--header', `Range: bytes=${r.from}-`]));
  if (r.from && r.ifRange) a.push('--header', `If-Range: ${r.ifRange}`);
  if (r.ifNoneMatch) a.push('--header', `If-None-Match: ${r.ifNoneMatch}`);
  if (r.ifModifiedSince) a.push('--header', `If-Modified-Since: ${r.ifModifiedSince}`);
  // `--` is not understood by every curl for URLs; --url is.
  a.push('--url', r.url);
  return a;
}

/** One response's status line and headers (names lower-cased). */
export interface ResponseHead {
  status: number;
  reason: string;
  headers: Map<string, string>;
}

/** Parses one header block (without the blank line). Returns undefined if it is not HTTP. */
export function parseHead(block: string): ResponseHead | undefined {
  const lines = block.split(/\r?\n/);
  const m = /^HTTP\/[\d.]+\s+(\d{3})\s*(.*)$/.exec(lines[0] ?? '');
  if (!m) return undefined;
  const headers = new Map<string, string>();
  for (const l of lines.slice(1)) {
    const i = l.indexOf(':');
    if (i > 0) headers.set(l.slice(0, i).trim().toLowerCase(), l.slice(i + 1).trim());
  }
  return { status: Number(m[1]), reason: m[2]!.trim(), headers };
}

/** The final response's head from a `--dump-header` file (the last complete non-interim block). */
export function lastHead(text: string): ResponseHead | undefined {
  let last: ResponseHead | undefined;
  for (const block of text.split(/\r?\n\r?\n/)) {
    const h = parseHead(block.trim());
    if (h && !isInterim(h)) last = h;
  }
  return last;
}

/** Whether curl goes on after this response (informational, or a redirect it follows). */
export function isInterim(h: ResponseHead): boolean {
  return (h.status >= 100 && h.status < 200) || ([301, 302, 303, 307, 308].includes(h.status) && h.headers.has('location'));
}

/** The total length from `Content-Range: bytes a-b/total`, if given. */
export function contentRangeTotal(h: ResponseHead): { start: number; total: number | undefined } | undefined {
  const m = /^bytes\s+(\d+)-(\d+)\/(\d+|\*)$/i.exec(h.headers.get('content-range') ?? '');
  if (!m) return undefined;
  return { start: Number(m[1]), total: m[3] === '*' ? undefined : Number(m[3]) };
}

/** Seconds from a Retry-After header (delta seconds or an HTTP date), capped; undefined if absent. */
export function retryAfterSeconds(value: string | undefined, now = Date.now(), cap = 120): number | undefined {
  if (value === undefined) return undefined;
  if (/^\d+$/.test(value.trim())) return Math.min(cap, Number(value.trim()));
  const t = Date.parse(value);
  if (Number.isNaN(t)) return undefined;
  return Math.min(cap, Math.max(0, Math.ceil((t - now) / 1000)));
}

/** How an attempt ended, from curl's exit status and stderr. */
export type CurlFailure =
  | { kind: 'transient'; what: string }
  | { kind: 'stalled'; what: string }
  | { kind: 'deadline'; what: string }
  | { kind: 'too-large'; what: string }
  | { kind: 'no-range'; what: string }
  | { kind: 'fatal'; what: string };

/** Classifies a non-zero curl exit (see curl(1) EXIT CODES). Pure. */
export function classifyCurlExit(code: number, stderr: string): CurlFailure {
  const what = stderr.trim().split('\n').pop()?.replace(/^curl: \(\d+\)\s*/, '') || `curl exit ${code}`;
  switch (code) {
    case 28:
      return /too slow/i.test(stderr) ? { kind: 'stalled', what } : { kind: 'deadline', what };
    case 63:
      return { kind: 'too-large', what };
    case 33:
      return { kind: 'no-range', what };
    case 5: case 6: case 7: case 16: case 18: case 35: case 52: case 55: case 56: case 92:
      return { kind: 'transient', what };
    default:
      return { kind: 'fatal', what };
  }
}

/** Whether an HTTP status is worth retrying. */
export function retryableStatus(status: number): boolean {
  return status === 408 || status === 429 || (status >= 500 && status <= 599 && status !== 501 && status !== 505);
}

/** Exponential backoff with a cap: 1 s, 2 s, 4 s, ... 30 s. */
export function backoffSeconds(attempt: number): number {
  return Math.min(30, 2 ** Math.max(0, attempt - 1));
}
