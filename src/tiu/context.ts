/** What every command receives: the system seam, the logger, the configuration, output. */
import type { Config } from './config.ts';
import type { Logger } from '../core/log.ts';
import type { System } from '../core/system.ts';
import type { TiuEnv } from '../core/env.ts';

export interface Context {
  sys: System;
  log: Logger;
  config: Config;
  debug: boolean;
  /** The TIU_* variables, read once at start. */
  env: TiuEnv;
  /** Writes a line of command output to stdout. */
  out: (text: string) => void;
}
