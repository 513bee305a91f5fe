/** Loading the keyring a command trusts (--keyring over the configured one). */
import { readFile } from 'node:fs/promises';
import { TiuError } from '../../core/errors.ts';
import type { Config } from '../config.ts';

export async function loadKeyring(config: Config, override?: string): Promise<string> {
  const path = override ?? config.keyring;
  try {
    return await readFile(path, 'utf8');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new TiuError('KEYRING_INVALID', `cannot read the keyring ${path}${code === 'ENOENT' ? ': no such file' : `: ${(e as Error).message}`}`, {
      hint: override ? 'check the --keyring path' : 'install the trusted CA certificates there (see docs/trust.md) or pass --keyring',
    });
  }
}
