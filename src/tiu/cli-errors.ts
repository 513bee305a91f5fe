/**
 * How a failed command is reported: the documented line on stderr, `tiu: error: <message>;
 * <hint> [CODE]`, and under `--json` also one object on stdout, so a script parses a document
 * whether the command worked or not (docs/errors.md, docs/json.md). Pure formatting.
 */
import { CommanderError } from 'commander';
import { TiuError, ERROR_CODES, type ErrorCode } from '../core/errors.ts';

/** The JSON shape of an error (docs/json.md). */
export interface JsonError {
  error: { code: ErrorCode; message: string; hint: string | null; exit: number };
}

/** The one stderr line for `e` (INTERNAL errors say "internal error" themselves). */
export function errorLine(e: TiuError): string {
  return `tiu: ${e.code === 'INTERNAL' ? '' : 'error: '}${e.oneLine()} [${e.code}]`;
}

export function errorJson(e: TiuError): JsonError {
  return { error: { code: e.code, message: e.message.replace(/\s*\n\s*/g, ' '), hint: e.hint ?? null, exit: ERROR_CODES[e.code].exit } };
}

/**
 * A commander parse error ("error: unknown option '--jsn'\n(Did you mean --json?)") as a USAGE
 * TiuError, with a hint naming the help of the command the user was typing.
 */
export function fromCommanderError(err: CommanderError, command: string | undefined): TiuError {
  const message = err.message.replace(/^error:\s*/, '').replace(/\s*\n\s*/g, ' ').trim();
  return new TiuError('USAGE', message, { hint: `run 'tiu ${command ? `${command} ` : ''}--help' for usage` });
}
