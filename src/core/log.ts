/**
 * Minimal leveled logger writing to stderr (stdout is reserved for command output and --json).
 *
 * Under systemd, when stderr is the journal's stream (sd_journal_stream_fd; systemd.exec(5):
 * `JOURNAL_STREAM` holds the stream's "device:inode", to be compared with fstat of fd 2), each
 * line starts with its syslog priority, `<3>` error … `<7>` debug, which journald strips and
 * records, so `journalctl -p err -u tiu-update` finds tiu's errors.
 */
import { fstatSync } from 'node:fs';

export type LogLevel = 'error' | 'warn' | 'info' | 'debug';

const ORDER: Record<LogLevel, number> = { error: 0, warn: 1, info: 2, debug: 3 };

/** syslog(3) priorities: LOG_ERR, LOG_WARNING, LOG_INFO, LOG_DEBUG. */
export const PRIORITY: Record<LogLevel, number> = { error: 3, warn: 4, info: 6, debug: 7 };

export interface Logger {
  level: LogLevel;
  error(msg: string): void;
  warn(msg: string): void;
  info(msg: string): void;
  debug(msg: string): void;
  enabled(level: LogLevel): boolean;
}

/**
 * Whether `JOURNAL_STREAM` (the environment's value) names the file `fd` is (its "dev:ino").
 * A child that inherited the variable but whose stderr was redirected elsewhere gets false.
 */
export function isJournalStream(journalStream: string | undefined, fd = 2, stat: (fd: number) => { dev: number; ino: number } = fstatSync): boolean {
  const m = journalStream ? /^(\d+):(\d+)$/.exec(journalStream) : null;
  if (!m) return false;
  try {
    const st = stat(fd);
    return String(st.dev) === m[1] && String(st.ino) === m[2];
  } catch {
    return false;
  }
}

/** Prefixes every line of `text` with the priority of `level` (journald reads one per line). */
export function withPriority(level: LogLevel, text: string): string {
  return text
    .split('\n')
    .map((l) => `<${PRIORITY[level]}>${l}`)
    .join('\n');
}

let journal: boolean | undefined;
/** Whether this process's stderr is the journal (decided once). */
export function stderrIsJournal(): boolean {
  journal ??= isJournalStream(process.env.JOURNAL_STREAM);
  return journal;
}

/** Writes `text` (one or more lines, no trailing newline) to stderr at `level`. */
export function writeStderr(level: LogLevel, text: string): void {
  process.stderr.write(`${stderrIsJournal() ? withPriority(level, text) : text}\n`);
}

export function createLogger(level: LogLevel = 'info', write: (line: string, level: LogLevel) => void = (l, lv) => writeStderr(lv, l)): Logger {
  const logger: Logger = {
    level,
    enabled: (l) => ORDER[l] <= ORDER[logger.level],
    error: (m) => logger.enabled('error') && write(`tiu: error: ${m}`, 'error'),
    warn: (m) => logger.enabled('warn') && write(`tiu: warning: ${m}`, 'warn'),
    info: (m) => logger.enabled('info') && write(m, 'info'),
    debug: (m) => logger.enabled('debug') && write(`tiu: debug: ${m}`, 'debug'),
  } as Logger;
  return logger;
}
