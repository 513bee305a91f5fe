/**
 * Turning squashfs-tools stderr into TiuErrors with advice. Pure.
 * The messages matched are those squashfs-tools 4.5.1 prints (tried here):
 *   Cannot stat source directory "X" because No such file or directory
 *   Could not create destination file: No such file or directory
 *   Write failed because No space left on device / FATAL ERROR: Failed to write to output filesystem
 *   Failed to read file X            (with -exit-on-error; without it an EMPTY file is stored!)
 *   Destination not block device or regular file
 *   Pseudo modify file "X" does not exist in source filesystem.  Ignoring.
 *   Pseudo file "X" exists in source filesystem "Y". Ignoring, exclude it (-e/-ef) to override.
 *   X already exists as a different pseudo definition.  Ignoring!
 *   X already exists as a non directory..  Ignoring X/y!   (exit 0 even with -exit-on-error)
 *   Unrecognised xattr prefix system.posix_acl_access     (ACLs are dropped, exit 0)
 * With -exit-on-error (always passed) the first three pseudo messages end the run with exit 1.
 */
import { TiuError } from '../core/errors.ts';

export interface FailureContext {
  source: string;
  output: string;
  command: string;
  exitCode: number;
  stderr: string;
}

function lastLines(text: string, n = 3): string {
  return text.trim().split('\n').filter(Boolean).slice(-n).join(' | ');
}

/** Maps a failed mksquashfs run (non-zero exit) to a TiuError naming the path involved. */
export function classifyMksquashfsFailure(ctx: FailureContext): TiuError {
  const { stderr, source, output } = ctx;
  const details = { command: ctx.command, exitCode: ctx.exitCode, stderr };
  let m: RegExpExecArray | null;
  if (/No space left on device|Disk quota exceeded/i.test(stderr)) {
    return new TiuError('NO_SPACE', `no space left writing squashfs image ${output}`, {
      hint: 'free space (tiu cleanup) or choose another output location',
      details,
    });
  }
  if ((m = /Cannot stat source directory "(.*)" because (.*)/.exec(stderr))) {
    return new TiuError(/No such file/.test(m[2]!) ? 'INPUT_NOT_FOUND' : 'TREE_INVALID', `cannot read source directory ${m[1]}: ${m[2]}`, { details });
  }
  if ((m = /Could not create destination file: (.*)/.exec(stderr))) {
    const why = m[1]!;
    if (/No such file/.test(why)) {
      return new TiuError('INPUT_NOT_FOUND', `cannot create squashfs image ${output}: its directory does not exist`, { hint: 'create the output directory first', details });
    }
    if (/Permission denied|Read-only/.test(why)) {
      return new TiuError('PERMISSION', `cannot create squashfs image ${output}: ${why}`, { hint: 'choose a writable output location', details });
    }
    return new TiuError('IO', `cannot create squashfs image ${output}: ${why}`, { details });
  }
  if (/Destination not block device or regular file/.test(stderr)) {
    return new TiuError('INPUT_INVALID', `squashfs output ${output} is not a regular file`, { hint: 'give a file path for the image', details });
  }
  if ((m = /Failed to read file (.*?)(?:, creating empty file)?$/m.exec(stderr))) {
    return new TiuError('TREE_INVALID', `cannot read ${m[1]} in source tree ${source}`, {
      hint: 'make the file readable or exclude it',
      details,
    });
  }
  const pseudo = ignoredPseudoWarnings(stderr);
  if (pseudo.length) {
    return new TiuError('TREE_INVALID', `mksquashfs rejected pseudo definitions building ${output}: ${pseudo.join(' | ')}`, {
      hint: 'a pseudo definition conflicts with the source tree or another definition',
      details,
    });
  }
  const fatal = /FATAL ERROR: (.*)/.exec(stderr);
  const text = fatal ? fatal[1]! : lastLines(stderr);
  return new TiuError('TOOL_FAILED', `mksquashfs failed (exit ${ctx.exitCode}) building ${output} from ${source}${text ? `: ${text}` : ''}`, {
    hint: 'rerun with --debug to see the full command and its output',
    details,
  });
}

/**
 * Warnings in the stderr of a *successful* mksquashfs run that mean the image is not what was
 * asked for (a pseudo definition silently ignored). Returns them; the runner fails on any.
 */
export function ignoredPseudoWarnings(stderr: string): string[] {
  return stderr
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => /\bIgnoring\b/.test(l) || /^Pseudo (modify )?file ".*" (exists in|does not exist in) source filesystem/.test(l) || /already exists as a (different pseudo definition|non directory)/.test(l));
}

/** xattr names mksquashfs dropped (e.g. `system.posix_acl_access`), deduplicated. */
export function droppedXattrPrefixes(stderr: string): string[] {
  const out = new Set<string>();
  for (const m of stderr.matchAll(/Unrecognised xattr prefix (\S+)/g)) out.add(m[1]!);
  return [...out].sort();
}
