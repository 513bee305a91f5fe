/**
 * tiu's own run directories (lock files, image mount points): created fresh, or checked to be a
 * real directory owned by tiu's user and writable by nobody else — so no one but root can plant
 * a symlink in them that tiu would then write through.
 */
import { lstat, mkdir } from 'node:fs/promises';
import { TiuError, fromErrno } from '../core/errors.ts';

/** Makes `dir` (and missing parents) with `mode`, then checks it (see the module comment). */
export async function ensurePrivateDir(dir: string, mode = 0o755): Promise<void> {
  try {
    await mkdir(dir, { recursive: true, mode });
  } catch (e) {
    throw fromErrno(e, `run directory ${dir}`) ?? e;
  }
  const st = await lstat(dir);
  const uid = process.getuid?.() ?? 0;
  const why = st.isSymbolicLink()
    ? 'is a symlink'
    : !st.isDirectory()
      ? 'is not a directory'
      : st.uid !== uid
        ? `is owned by uid ${st.uid}, not ${uid}`
        : (st.mode & 0o022) !== 0
          ? `is writable by group or others (mode ${(st.mode & 0o7777).toString(8)})`
          : undefined;
  if (why) {
    throw new TiuError('PATH_UNSAFE', `run directory ${dir} ${why}; tiu does not use it`, {
      hint: `remove ${dir} (tiu makes it again) or set TIU_RUN_DIR to a directory only root can write`,
    });
  }
}
