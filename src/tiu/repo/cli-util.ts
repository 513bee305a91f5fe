/** Small helpers shared by the repository commands. */
import { resolve } from 'node:path';

/** The key directory: --keys, else `<repo dir>.keys` next to (never inside) the served tree. */
export function keysDirOf(dir: string, keys: string | undefined): string {
  return keys ?? `${resolve(dir).replace(/\/+$/, '')}.keys`;
}

/** Parses a whole percentage option. */
export function percent(text: string | undefined, fallback: number): number {
  if (text === undefined) return fallback;
  return /^\d{1,3}$/.test(text) ? Number(text) : NaN;
}
