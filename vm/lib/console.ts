/**
 * The serial-console protocol, pure: how a shell command is wrapped so its output and exit code
 * can be found again in the console stream, and how they are found. No I/O.
 *
 * The guest's root shell echoes nothing (`stty -echo`) and has empty prompts, but the console
 * also carries the kernel's and systemd's messages, so every command is bracketed by markers
 * that are unique per command. The marker text never appears literally in what is sent: the
 * shell assembles it with printf (`printf '%s_%s\n' __TIUB abc` prints `__TIUB_abc`), so even
 * an echo of the typed line cannot be mistaken for the marker.
 */

/** A command's result as read back from the console. */
export interface ConsoleResult {
  /** Everything the command wrote (stdout and stderr), CR removed, without the final newline. */
  output: string;
  exitCode: number;
  /** Index in the stream just after the end marker (where the next search may start). */
  end: number;
}

const ID = /^[a-z0-9]+$/;

function checkId(id: string): void {
  if (!ID.test(id)) throw new Error(`console marker id must match ${ID}: '${id}'`);
}

/**
 * The text to type into the guest shell to run `command` (one or more lines of bash), with
 * stdin from /dev/null and stderr merged into stdout. Ends with a newline.
 */
export function wrapCommand(id: string, command: string): string {
  checkId(id);
  // The braces on their own lines keep a trailing comment or `&` in `command` from eating them.
  return `printf '%s_%s\\n' __TIUB ${id}; {\n${command}\n} </dev/null 2>&1; printf '%s_%s_%s\\n' __TIUE ${id} $?\n`;
}

/** The probe typed until the shell answers: finds out whether a shell is reading the console. */
export function probeCommand(id: string): string {
  checkId(id);
  return `printf '%s_%s\\n' __TIUR ${id}\n`;
}

/** True when the answer to the probe `id` is in `stream` (at or after `from`). */
export function probeAnswered(stream: string, id: string, from = 0): boolean {
  return stream.indexOf(`__TIUR_${id}\n`, from) >= 0 || stream.indexOf(`__TIUR_${id}\r`, from) >= 0;
}

/**
 * Finds the result of the command with marker `id` in `stream` (starting at `from`), or
 * undefined while its end marker has not arrived yet.
 */
export function findResult(stream: string, id: string, from = 0): ConsoleResult | undefined {
  checkId(id);
  const begin = `__TIUB_${id}`;
  const b = stream.indexOf(begin, from);
  if (b < 0) return undefined;
  const endRe = new RegExp(`__TIUE_${id}_(\\d+)`, 'g');
  endRe.lastIndex = b + begin.length;
  const e = endRe.exec(stream);
  if (!e) return undefined;
  let output = stream.slice(b + begin.length, e.index).replace(/\r/g, '');
  if (output.startsWith('\n')) output = output.slice(1);
  if (output.endsWith('\n')) output = output.slice(0, -1);
  return { output, exitCode: Number(e[1]), end: e.index + e[0].length };
}

/** Single-quotes `s` for bash. */
export function shellQuote(s: string): string {
  return /^[\w@%+=:,./-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`;
}

/**
 * The first JSON object or array in `text` (tools print it after possible warnings; the console
 * may also interleave a kernel line before it). Throws when there is none.
 */
export function extractJson<T = unknown>(text: string): T {
  const start = text.search(/^[{[]/m);
  if (start < 0) throw new Error(`no JSON in output:\n${text}`);
  const open = text[start]!;
  const close = open === '{' ? '}' : ']';
  const end = text.lastIndexOf(`\n${close}`);
  const body = end > start ? text.slice(start, end + 2) : text.slice(start);
  try {
    return JSON.parse(body) as T;
  } catch (e) {
    throw new Error(`cannot parse JSON (${(e as Error).message}) from output:\n${text}`);
  }
}
