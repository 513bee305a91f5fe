/**
 * One error model for all of tiu.
 *
 * Every failure that reaches the user is a {@link TiuError} with a stable string `code`
 * (documented, scriptable), a one-line `message` that says what is wrong, and a `hint`
 * that says what to do. Each code maps to a distinct process exit code.
 *
 * Three kinds are kept apart: the user's mistake (`usage`, `input`, `security` — the input
 * was rejected), the system's failure (`system`, `busy`), and our bug (`bug`).
 */

export type ErrorKind = 'usage' | 'input' | 'security' | 'system' | 'busy' | 'bug';

interface CodeInfo {
  exit: number;
  kind: ErrorKind;
}

/** Stable error codes with their exit codes. Never renumber: scripts depend on them. */
export const ERROR_CODES = {
  // 2-9: the command line and plain input
  USAGE: { exit: 2, kind: 'usage' },
  INPUT_NOT_FOUND: { exit: 3, kind: 'input' },
  INPUT_INVALID: { exit: 4, kind: 'input' },
  CONFIG_INVALID: { exit: 5, kind: 'input' },
  // 10-29: archives and their trust
  ARCHIVE_FORMAT: { exit: 10, kind: 'security' },
  ARCHIVE_TRUNCATED: { exit: 11, kind: 'security' },
  ARCHIVE_SIGNATURE: { exit: 12, kind: 'security' },
  ARCHIVE_UNTRUSTED: { exit: 13, kind: 'security' },
  ARCHIVE_EXPIRED: { exit: 14, kind: 'security' },
  ARCHIVE_KEY_USAGE: { exit: 15, kind: 'security' },
  ARCHIVE_SIGNER: { exit: 16, kind: 'security' },
  ARCHIVE_MANIFEST: { exit: 17, kind: 'security' },
  ARCHIVE_VERITY: { exit: 18, kind: 'security' },
  ARCHIVE_INDEX: { exit: 19, kind: 'security' },
  ARCHIVE_COMPATIBLE: { exit: 20, kind: 'input' },
  KEYRING_INVALID: { exit: 21, kind: 'input' },
  KEY_INVALID: { exit: 22, kind: 'input' },
  TREE_INVALID: { exit: 23, kind: 'input' },
  // 30-49: the device
  ROOT_NOT_BTRFS: { exit: 30, kind: 'input' },
  ROOT_LAYOUT: { exit: 31, kind: 'input' },
  BUSY: { exit: 32, kind: 'busy' },
  SNAPSHOT_NOT_FOUND: { exit: 33, kind: 'input' },
  SNAPSHOT_REFUSED: { exit: 34, kind: 'input' },
  SNAPSHOT_FAILED: { exit: 35, kind: 'system' },
  ETC_MERGE: { exit: 36, kind: 'system' },
  APPLY_FAILED: { exit: 37, kind: 'system' },
  DOWNLOAD_FAILED: { exit: 38, kind: 'system' },
  BOOT_FAILED: { exit: 39, kind: 'system' },
  // 40-44: downloads (docs/download.md)
  DOWNLOAD_TOO_LARGE: { exit: 40, kind: 'input' },
  DOWNLOAD_STALLED: { exit: 41, kind: 'system' },
  DOWNLOAD_NO_SPACE: { exit: 42, kind: 'system' },
  DOWNLOAD_TIMEOUT: { exit: 43, kind: 'system' },
  DOWNLOAD_MISMATCH: { exit: 44, kind: 'security' },
  // 45-49: hardening (paths that would leave their root, downgrades, unsafe state files)
  PATH_UNSAFE: { exit: 45, kind: 'security' },
  DOWNGRADE: { exit: 46, kind: 'input' },
  FILE_INVALID: { exit: 47, kind: 'input' },
  XATTR_UNSUPPORTED: { exit: 48, kind: 'system' },
  IMMUTABLE: { exit: 49, kind: 'system' },
  // 50-59: the machine, continued (IO and INTERRUPTED were 64 and 65 until 0.2: sysexits' EX_USAGE
  // and EX_DATAERR, which mean something else)
  IO: { exit: 50, kind: 'system' },
  INTERRUPTED: { exit: 51, kind: 'system' },
  // 60-63: the machine
  TOOL_MISSING: { exit: 60, kind: 'system' },
  TOOL_FAILED: { exit: 61, kind: 'system' },
  NO_SPACE: { exit: 62, kind: 'system' },
  PERMISSION: { exit: 63, kind: 'system' },
  // 80-89: update repositories (TUF metadata, see docs/repository.md)
  REPO_UNAVAILABLE: { exit: 80, kind: 'system' },
  REPO_SIGNATURE: { exit: 81, kind: 'security' },
  REPO_ROLLBACK: { exit: 82, kind: 'security' },
  REPO_EXPIRED: { exit: 83, kind: 'security' },
  REPO_MISMATCH: { exit: 84, kind: 'security' },
  REPO_TOO_LARGE: { exit: 85, kind: 'security' },
  REPO_TARGET: { exit: 86, kind: 'security' },
  REPO_DOWNGRADE: { exit: 87, kind: 'security' },
  REPO_METADATA: { exit: 88, kind: 'security' },
  REPO_INVALID: { exit: 89, kind: 'input' },
  // 90-95: deltas (docs/delta-format.md)
  DELTA_BASE: { exit: 90, kind: 'input' },
  DELTA_CORRUPT: { exit: 91, kind: 'security' },
  DELTA_BASE_MODIFIED: { exit: 92, kind: 'input' },
  DELTA_FORMAT: { exit: 93, kind: 'security' },
  // 100-109: device lifecycle (verify --system, factory-reset, daemon)
  SYSTEM_MODIFIED: { exit: 100, kind: 'security' },
  SYSTEM_UNVERIFIABLE: { exit: 101, kind: 'input' },
  RESET_REFUSED: { exit: 102, kind: 'usage' },
  RESET_FAILED: { exit: 103, kind: 'system' },
  // 70: our bug (sysexits' EX_SOFTWARE, the same meaning)
  INTERNAL: { exit: 70, kind: 'bug' },
} as const satisfies Record<string, CodeInfo>;

export type ErrorCode = keyof typeof ERROR_CODES;

export interface TiuErrorOptions {
  /** What the user should do about it. Printed after the message. */
  hint?: string;
  cause?: unknown;
  /** Structured context for --json and --debug output. */
  details?: Record<string, unknown>;
}

export class TiuError extends Error {
  readonly code: ErrorCode;
  readonly hint: string | undefined;
  readonly details: Record<string, unknown> | undefined;

  constructor(code: ErrorCode, message: string, options: TiuErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'TiuError';
    this.code = code;
    this.hint = options.hint;
    this.details = options.details;
  }

  get exitCode(): number {
    return ERROR_CODES[this.code].exit;
  }

  get kind(): ErrorKind {
    return ERROR_CODES[this.code].kind;
  }

  /** The one line shown to the user: `message (hint)`, newlines folded. */
  oneLine(): string {
    const text = this.hint ? `${this.message}; ${this.hint}` : this.message;
    return text.replace(/\s*\n\s*/g, ' ');
  }
}

/** Adds context from an outer layer while keeping code, hint and cause. */
export function withContext(err: unknown, context: string): unknown {
  if (err instanceof TiuError) {
    return new TiuError(err.code, `${context}: ${err.message}`, { hint: err.hint, cause: err, details: err.details });
  }
  return err;
}

/** Maps a Node.js system error (errno) to a TiuError with advice, or returns undefined. */
export function fromErrno(err: unknown, what: string): TiuError | undefined {
  if (!(err instanceof Error) || !('code' in err) || typeof err.code !== 'string') return undefined;
  const code = err.code;
  switch (code) {
    case 'ENOENT':
      return new TiuError('INPUT_NOT_FOUND', `${what}: no such file or directory`, { cause: err, hint: 'check the path' });
    case 'EACCES':
    case 'EPERM':
      return new TiuError('PERMISSION', `${what}: permission denied`, { cause: err, hint: 'run as root' });
    case 'ENOSPC':
    case 'EDQUOT':
      return new TiuError('NO_SPACE', `${what}: no space left on device`, { cause: err, hint: 'free space (tiu cleanup) or choose another output location' });
    case 'EROFS':
      return new TiuError('PERMISSION', `${what}: read-only file system`, { cause: err, hint: 'remount read-write or choose another location' });
    case 'ENOTDIR':
    case 'EISDIR':
      return new TiuError('INPUT_INVALID', `${what}: ${code === 'ENOTDIR' ? 'not a directory' : 'is a directory'}`, { cause: err });
    case 'EIO':
      return new TiuError('IO', `${what}: input/output error`, { cause: err, hint: 'check the disk (dmesg)' });
    default:
      return undefined;
  }
}

/** Normalizes anything thrown into a TiuError (unknown errors become INTERNAL: our bug). */
export function toTiuError(err: unknown, what = 'tiu'): TiuError {
  if (err instanceof TiuError) return err;
  const mapped = fromErrno(err, what);
  if (mapped) return mapped;
  const message = err instanceof Error ? err.message : String(err);
  return new TiuError('INTERNAL', `internal error: ${message}`, {
    cause: err,
    hint: 'run with --debug for the stack',
  });
}
