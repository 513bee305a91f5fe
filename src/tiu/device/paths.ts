/**
 * Where tiu keeps its state on a device, and which paths an update never touches. Pure.
 */
import { INDEX_PATH, MANIFEST_COPY_PATH } from '../../core/fileindex/types.ts';

export { INDEX_PATH, MANIFEST_COPY_PATH };

/** Inside each snapshot: tiu's own data (never part of an image's index). */
export const TIU_STATE_DIR = 'usr/lib/tiu/image';
/**
 * Inside each snapshot: the CMS SignedData (DER) the recorded manifest came from, so that
 * `tiu verify --system` can check the signature again against the keyring.
 */
export const SIGNATURE_COPY_PATH = 'usr/lib/tiu/image/manifest.cms';
/** Inside each snapshot: the vendor /etc of the image the snapshot was made from (/etc merge base). */
export const VENDOR_ETC_DIR = 'usr/lib/tiu/vendor-etc';

/** Userdata keys tiu sets on snapshots (snapper-compatible key=value). */
export const UD = {
  inProgress: 'tiu-in-progress',
  version: 'tiu-version',
  compatible: 'tiu-compatible',
  rootHash: 'tiu-root-hash',
  generation: 'tiu-generation',
  health: 'tiu-health',
  pinned: 'tiu-pinned',
  important: 'important',
  /** The snapshot an update started from (its /etc edits are re-merged by `tiu etc sync`). */
  base: 'tiu-base',
} as const;

/** Snapshot directory of number n below a root. */
export function snapshotDir(root: string, n: number): string {
  return `${root.replace(/\/+$/, '')}/.snapshots/${n}/snapshot`;
}

/** Excluded prefixes ('/var' -> 'var'), for the planner's isExcluded. */
export function excludedMatcher(excluded: readonly string[]): (p: string) => boolean {
  // (with their slash, made once: the planner asks for every path of both indexes)
  const prefixes = excluded.map((e) => e.replace(/^\/+|\/+$/g, '')).filter(Boolean).map((x) => x + '/');
  return (p) => {
    for (let i = 0; i < prefixes.length; i++) if (p.startsWith(prefixes[i]!)) return true;
    return false;
  };
}

/** Mount points of the separate subvolumes (see src/snapshot/layout.ts). */
const MOUNTPOINTS = ['.snapshots', 'var', 'home', 'root', 'opt', 'srv', 'usr/local', 'boot/grub2/x86_64-efi', 'boot/grub2/i386-pc'];

/**
 * Paths an update never removes: tiu's own state, the excluded directories themselves, and the
 * mount points of separate subvolumes with their parent directories.
 */
export function protectedMatcher(excluded: readonly string[]): (p: string) => boolean {
  const keep = new Set<string>();
  for (const p of [...MOUNTPOINTS, ...excluded.map((e) => e.replace(/^\/+|\/+$/g, ''))]) {
    const parts = p.split('/');
    for (let i = 1; i <= parts.length; i++) keep.add(parts.slice(0, i).join('/'));
  }
  return (p) => keep.has(p) || isTiuManaged(p);
}

/**
 * Directories whose mtime tiu's own writes after the apply step change (mount points made,
 * state recorded, and beside it the vendor /etc copy, a read-only subvolume that keeps its own
 * time): their image mtimes are restored at the very end.
 */
export function dirsTouchedByTiu(): string[] {
  const out = new Set<string>(['.']);
  for (const p of [...MOUNTPOINTS, TIU_STATE_DIR]) {
    const parts = p.split('/');
    for (let i = 1; i < parts.length; i++) out.add(parts.slice(0, i).join('/'));
    out.add(p);
  }
  return [...out];
}

/** Paths tiu manages inside a snapshot itself. */
export function isTiuManaged(p: string): boolean {
  return p === INDEX_PATH || p === MANIFEST_COPY_PATH || p.startsWith(TIU_STATE_DIR + '/') || p === VENDOR_ETC_DIR || p.startsWith(VENDOR_ETC_DIR + '/');
}
