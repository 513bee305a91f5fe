/**
 * Minimal leveled logger writing to stderr (stdout is reserved for command output and --json).
 */
export type LogLevel = 'error' | 'warn' | 'info' | 'debug';

const ORDER: Record<LogLevel, number> = { error: 0, warn: 1, info: 2, debug: 3 };

export interface Logger {
  level: LogLevel;
  error(msg: string): void;
  warn(msg: string): void;
  info(msg: string): void;
  debug(msg: string): void;
  enabled(level: LogLevel): boolean;
}

export function createLogger(level: LogLevel = 'info', write: (line: string) => void = (l) => process.stderr.write(l + '\n')): Logger {
  const logger: Logger = {
    level,
    enabled: (l) => ORDER[l] <= ORDER[logger.level],
    error: (m) => logger.enabled('error') && write(`tiu: error: ${m}`),
    warn: (m) => logger.enabled('warn') && write(`tiu: warning: ${m}`),
    info: (m) => logger.enabled('info') && write(m),
    debug: (m) => logger.enabled('debug') && write(`tiu: debug: ${m}`),
  } as Logger;
  return logger;
}

/** A logger that records lines, for tests. */
export function createMemoryLogger(level: LogLevel = 'debug'): Logger & { lines: string[] } {
  const lines: string[] = [];
  return Object.assign(createLogger(level, (l) => lines.push(l)), { lines });
}
