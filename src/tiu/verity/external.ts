/**
 * Verifying an archive's blocks with cryptsetup's `veritysetup verify` (userspace, no
 * device-mapper needed) in a child process: the device side's update path runs it on the other
 * core while this thread checks the signature, takes the lock and reads the snapshots (hashing
 * in this thread held it for ~35 ms per 48 MiB, and delayed all of that).
 *
 * veritysetup only says "Verification failed at position N": on a mismatch tiu's own verifier
 * (tree.ts) runs over the same descriptor and throws its error naming the block (hash or data,
 * level, offset). Where veritysetup is missing or fails for any other reason (it cannot open the
 * file, an unknown option), tiu's verifier does the whole check: the result never depends on
 * which one ran.
 */
import type { System } from '../../core/system.ts';
import { TiuError } from '../../core/errors.ts';
import { VERITY_BLOCK_SIZE } from './layout.ts';

/** What veritysetup needs to check one archive (from its signed manifest). */
export interface ExternalVerityParams {
  dataSize: number;
  hashOffset: number;
  salt: string;
  rootHash: string;
}

export type ExternalVerityResult = 'ok' | 'mismatch' | 'unavailable';

/**
 * How veritysetup (cryptsetup 2.x) reports a mismatch: "Verification failed at position N." and
 * "Verification of data area failed." (exit 2) for a data or hash block or non-zero padding,
 * "Verification of root hash failed." (exit 1) for the top block.
 */
const MISMATCH = /^Verification (?:failed at position \d+|of (?:data area|root hash) failed)\.?$/m;

/**
 * The `veritysetup verify` arguments for an archive whose data and tree are both in `file` (the
 * data from 0, the tree at `hashOffset`; format 1, sha256, 4096-byte blocks, no superblock). Pure.
 */
export function veritysetupVerifyArgs(file: string, p: ExternalVerityParams): string[] {
  if (!/^[0-9a-f]{64}$/.test(p.rootHash)) throw new TiuError('INTERNAL', `veritysetupVerifyArgs: bad root hash '${p.rootHash}'`);
  if (!/^(?:[0-9a-f]{2})*$/.test(p.salt)) throw new TiuError('INTERNAL', 'veritysetupVerifyArgs: bad salt');
  return [
    'verify',
    '--no-superblock',
    '--format=1',
    '--hash=sha256',
    `--data-block-size=${VERITY_BLOCK_SIZE}`,
    `--hash-block-size=${VERITY_BLOCK_SIZE}`,
    `--data-blocks=${p.dataSize / VERITY_BLOCK_SIZE}`,
    `--hash-offset=${p.hashOffset}`,
    // (veritysetup takes '-' for an empty salt)
    `--salt=${p.salt === '' ? '-' : p.salt}`,
    '--',
    file,
    file,
    p.rootHash,
  ];
}

/**
 * Runs `veritysetup verify` on `file` (a /proc/self/fd path of the caller's open archive).
 * 'ok': every block matched. 'mismatch': veritysetup found a block that does not (the caller
 * names it with its own verifier). 'unavailable': veritysetup is not installed or could not do
 * the check (the caller verifies by itself). Rejects with INTERRUPTED when `signal` aborts.
 */
export async function veritysetupVerify(sys: System, file: string, p: ExternalVerityParams, signal?: AbortSignal): Promise<ExternalVerityResult> {
  let r;
  try {
    r = await sys.run('veritysetup', veritysetupVerifyArgs(file, p), { allowFailure: true, signal });
  } catch (e) {
    if (e instanceof TiuError && e.code === 'INTERRUPTED') throw signal?.reason ?? e;
    if (e instanceof TiuError && e.code === 'TOOL_MISSING') return 'unavailable';
    throw e;
  }
  if (r.exitCode === 0) return 'ok';
  if (MISMATCH.test(r.stderr)) return 'mismatch';
  sys.log.debug(`veritysetup verify could not check ${file} (exit ${r.exitCode}): ${r.stderr.trim()}; verifying in this process`);
  return 'unavailable';
}
