/**
 * The command tree as plain data, read from the commander program that also serves `--help`
 * (buildProgram in cli.ts), so the manual page and the shell completions are generated from the
 * one declaration of commands and options and cannot drift from it. Pure (reads the objects).
 */
import type { EventEmitter } from 'node:events';
import type { Command } from 'commander';

export interface OptionDoc {
  /** As declared, e.g. "--root <dir>", "-o, --out <dir>". */
  flags: string;
  long: string | undefined;
  short: string | undefined;
  description: string;
  /** Takes a value (`<x>` or `[x]`). */
  takesValue: boolean;
  /** Value placeholder, e.g. "dir". */
  valueName: string | undefined;
  defaultValue: string | undefined;
}

export interface CommandDoc {
  /** Words after `tiu`, e.g. ["etc", "diff"]; empty for the program itself. */
  path: string[];
  description: string;
  /** Positional arguments, e.g. ["<archive>", "[n]"]. */
  args: string[];
  options: OptionDoc[];
  /** The command's "Example:" help text, if any. */
  example: string | undefined;
  children: CommandDoc[];
}

/** Text the command's `addHelpText('after', …)` hooks write (commander emits them as events). */
function afterHelpText(cmd: Command): string {
  let text = '';
  // Command is an EventEmitter at run time; its typings leave that out.
  (cmd as unknown as EventEmitter).emit('afterHelp', { error: false, command: cmd, write: (s: string) => (text += s) });
  return text;
}

function optionDoc(o: Command['options'][number]): OptionDoc {
  const valueName = /[<[]([^>\]]+)[>\]]/.exec(o.flags)?.[1];
  const def = o.defaultValue;
  return {
    flags: o.flags,
    long: o.long,
    short: o.short,
    description: o.description,
    takesValue: o.required || o.optional,
    valueName,
    defaultValue: def === undefined || typeof def === 'boolean' ? undefined : String(def),
  };
}

/** The documentation model of `cmd` and everything below it. */
export function describeCommand(cmd: Command, parent: string[] = []): CommandDoc {
  const path = cmd.parent ? [...parent, cmd.name()] : [];
  const example = /\nExample:\n((?: {2}.*\n?)+)/.exec(afterHelpText(cmd))?.[1]?.replace(/^ {2}/gm, '').trimEnd();
  return {
    path,
    description: cmd.description(),
    args: cmd.registeredArguments.map((a) => (a.required ? `<${a.name()}${a.variadic ? '...' : ''}>` : `[${a.name()}${a.variadic ? '...' : ''}]`)),
    options: cmd.options.map(optionDoc),
    example,
    children: cmd.commands.map((c) => describeCommand(c, path)),
  };
}

/** Every command that runs something (the leaves), depth first in declaration order. */
export function leafCommands(doc: CommandDoc): CommandDoc[] {
  return doc.children.flatMap((c) => (c.children.length ? leafCommands(c) : [c]));
}
