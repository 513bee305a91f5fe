/**
 * The GRUB scripts tiu writes, rendered from data (pure). See docs/boot.md for the design.
 *
 * Upstream GRUB (Debian's) reads btrfs paths from the top-level subvolume and does not know the
 * btrfs default subvolume, so GRUB itself cannot "boot the default snapshot". tiu therefore owns
 * the grub.cfg in GRUB's own directory (`$prefix`, outside every snapshot) — the *selector* — and
 * keeps the number of the default snapshot in grubenv (`tiu_default`), next to the boot-trial
 * state. The selector picks the snapshot, then sources that snapshot's own grub.cfg, which
 * grub-mkconfig generated inside it, with the distribution's `rootflags=subvol=<itself>`
 * replaced by `${tiu_rootflags}`: empty for a normal boot (the kernel mounts the btrfs default
 * subvolume, as fstab expects), `rootflags=subvol=…/N/snapshot` when the selector boots another
 * snapshot than the default (trial fallback, one-shot), which must not mount the default.
 *
 * grubenv variables (all written by tiu; GRUB writes the ones marked *):
 *   tiu_default    snapshot booted by default (mirrors the btrfs default subvolume)
 *   tiu_boot_try   snapshot on trial (= tiu_default after an update, until userspace says good)
 *   tiu_tries *    tries left for the trial; GRUB counts down, at 0 it boots tiu_fallback
 *   tiu_fallback   snapshot to boot when the trial ran out of tries
 *   tiu_oneshot *  snapshot to boot once; GRUB clears it
 * GRUB can only write grubenv on a filesystem without checksums or COW (FAT, ext4), never on
 * btrfs: with GRUB's directory on btrfs, the selector does not count (tiu_env_writable=0).
 */
import { TiuError } from '../../core/errors.ts';

export const GRUB_TRIES = 3;
export const SELECTOR_MARK = '# tiu-selector';
const ENTRY_MARK = '# tiu-entry ';

export interface GrubEntry {
  num: number;
  title: string;
  /** Paths as GRUB reads them: from the btrfs top level, e.g. `/@/.snapshots/5/snapshot/boot/vmlinuz-6.1.0`. */
  kernel: string;
  initrd?: string;
  uuid: string;
  /** Snapshot subvolume path, e.g. `@/.snapshots/5/snapshot`. */
  subvol: string;
  cmdline: string[];
}

/** Quotes a word for GRUB's shell-like script language: single quotes, `'` as `'\''`. */
export function grubQuote(s: string): string {
  if (/[\x00-\x08\x0a-\x1f]/.test(s)) throw new TiuError('INTERNAL', 'control characters cannot be quoted for GRUB');
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

/** Paths, UUIDs and numbers rendered unquoted inside double-quoted GRUB strings must be plain. */
function plain(s: string, what: string): string {
  if (!/^[A-Za-z0-9@._/+~-]+$/.test(s)) throw new TiuError('BOOT_FAILED', `${what} '${s}' has characters tiu does not put into a GRUB script`, { hint: 'use a subvolume layout with plain names (MicroOS: @/.snapshots)' });
  return s;
}

/** Kernel arguments of a tiu entry; `rootflags` is a GRUB word (a variable or a quoted value). */
function linuxArgs(e: GrubEntry, rootflags: string): string {
  return [grubQuote(`root=UUID=${e.uuid}`), rootflags, grubQuote('rw'), ...e.cmdline.map(grubQuote)].join(' ');
}

/**
 * tiu-snapshots.cfg: the entries as data (one `# tiu-entry {json}` line each, read back by
 * {@link parseSnapshotsCfg}), the function `tiu_linux N ROOTFLAGS` that loads snapshot N's kernel
 * and initrd, `tiu_has N`, and `tiu_menu`, the "Snapshots" submenu with one entry per snapshot
 * pinned to it by `rootflags=subvol=`.
 */
export function renderSnapshotsCfg(entries: readonly GrubEntry[], defaultNum: number | undefined): string {
  const sorted = [...entries].sort((a, b) => b.num - a.num);
  const lines: string[] = ['# Written by tiu: do not edit, tiu rewrites this file (see docs/boot.md).'];
  for (const e of sorted) lines.push(ENTRY_MARK + JSON.stringify(e));
  lines.push('function tiu_linux {');
  for (const e of sorted) {
    lines.push(`  if [ "$1" = ${e.num} ]; then`);
    lines.push(`    echo ${grubQuote(`Loading snapshot ${e.num}: ${e.kernel}`)}`);
    lines.push(`    linux ${grubQuote(e.kernel)} ${linuxArgs(e, '$2')}`);
    if (e.initrd) lines.push(`    initrd ${grubQuote(e.initrd)}`);
    lines.push('    return 0');
    lines.push('  fi');
  }
  lines.push('  echo "tiu: snapshot $1 has no boot entry"');
  lines.push('  return 1');
  lines.push('}');
  lines.push('function tiu_has {');
  for (const e of sorted) lines.push(`  if [ "$1" = ${e.num} ]; then return 0; fi`);
  lines.push('  return 1');
  lines.push('}');
  lines.push('function tiu_menu {');
  lines.push(`  submenu ${grubQuote('Snapshots (tiu)')} --id tiu-snapshots {`);
  for (const e of sorted) {
    const title = `Snapshot ${e.num}: ${e.title}${e.num === defaultNum ? ' (default)' : ''}`;
    lines.push(`    menuentry ${grubQuote(title)} --id ${grubQuote(`tiu-snapshot-${e.num}`)} {`);
    lines.push(`      tiu_linux ${e.num} ${grubQuote(`rootflags=subvol=${plain(e.subvol, 'subvolume')}`)}`);
    lines.push('    }');
  }
  lines.push('  }');
  lines.push('}');
  return `${lines.join('\n')}\n`;
}

/** The entries recorded in a tiu-snapshots.cfg (lines that do not parse are skipped). */
export function parseSnapshotsCfg(text: string): GrubEntry[] {
  const out: GrubEntry[] = [];
  for (const line of text.split('\n')) {
    if (!line.startsWith(ENTRY_MARK)) continue;
    try {
      const e = JSON.parse(line.slice(ENTRY_MARK.length)) as GrubEntry;
      if (Number.isInteger(e.num) && e.num > 0 && typeof e.kernel === 'string' && typeof e.subvol === 'string' && typeof e.uuid === 'string' && Array.isArray(e.cmdline)) out.push(e);
    } catch {}
  }
  return out.sort((a, b) => a.num - b.num);
}

export interface SelectorOptions {
  uuid: string;
  /** Path of the snapshots subvolume from the top level, e.g. `@/.snapshots`. */
  snapshotsSubvol: string;
  /** Whether GRUB can write grubenv where it lies (not on btrfs). */
  envWritable: boolean;
  /** Used when grubenv has no tiu_default (e.g. deleted): the default at the time of writing. */
  defaultNum: number | undefined;
  /** Snapshots to try, in order, when the chosen one has neither a grub.cfg nor an entry. */
  candidates: readonly number[];
}

/**
 * The selector: GRUB's `$prefix/grub.cfg`. Loads the tiu_* variables from `$prefix/grubenv`,
 * applies one-shot and trial logic (see the module comment), then sources the chosen
 * snapshot's grub.cfg (boot/grub or boot/grub2) or, without one, offers tiu's own entry for it;
 * the "Snapshots (tiu)" submenu comes last.
 */
export function renderSelector(o: SelectorOptions): string {
  const snaps = `/${plain(o.snapshotsSubvol.replace(/^\/+|\/+$/g, ''), 'snapshots subvolume')}`;
  const uuid = plain(o.uuid, 'filesystem UUID');
  const candidates = [...new Set(o.candidates)].filter((n) => Number.isInteger(n) && n > 0);
  const tries: string[] = [];
  for (let t = GRUB_TRIES; t >= 1; t--) tries.push(`${t === GRUB_TRIES ? 'if' : 'elif'} [ "\${tiu_tries}" = ${t} ]; then set tiu_tries=${t - 1}`);
  return `${SELECTOR_MARK}
# Written by tiu: do not edit, tiu rewrites this file (see docs/boot.md).
# Boots the snapshot in grubenv's tiu_default, which tiu keeps equal to the btrfs default
# subvolume; counts boot tries of a new snapshot and falls back to tiu_fallback.
insmod part_gpt
insmod part_msdos
insmod btrfs
search --no-floppy --fs-uuid --set=root ${uuid}
set tiu_env="\${prefix}/grubenv"
set tiu_env_writable=${o.envWritable ? 1 : 0}
set tiu_default=""
set tiu_fallback=""
set tiu_boot_try=""
set tiu_tries=""
set tiu_oneshot=""
if [ -s "\${tiu_env}" ]; then
  load_env --file "\${tiu_env}" tiu_default tiu_fallback tiu_boot_try tiu_tries tiu_oneshot
fi
if [ -z "\${tiu_default}" ]; then
  set tiu_default="${o.defaultNum ?? ''}"
fi
set tiu_boot="\${tiu_default}"
set tiu_mode=default
if [ -n "\${tiu_oneshot}" ]; then
  set tiu_boot="\${tiu_oneshot}"
  set tiu_mode=oneshot
  set tiu_oneshot=""
  if [ "\${tiu_env_writable}" = 1 ]; then
    save_env --file "\${tiu_env}" tiu_oneshot
  fi
elif [ -n "\${tiu_boot_try}" ]; then
  if [ "\${tiu_boot_try}" = "\${tiu_default}" ]; then
    ${tries.join('\n    ')}
    else
      set tiu_tries=0
      if [ -n "\${tiu_fallback}" ]; then
        set tiu_boot="\${tiu_fallback}"
        set tiu_mode=fallback
      fi
    fi
    if [ "\${tiu_env_writable}" = 1 ]; then
      save_env --file "\${tiu_env}" tiu_tries
    fi
  fi
fi
if [ -f "\${prefix}/tiu-snapshots.cfg" ]; then
  source "\${prefix}/tiu-snapshots.cfg"
fi
set tiu_cfg=""
for tiu_n in \${tiu_boot} ${candidates.join(' ')}; do
  if [ -f "${snaps}/\${tiu_n}/snapshot/boot/grub/grub.cfg" ]; then
    set tiu_cfg="${snaps}/\${tiu_n}/snapshot/boot/grub/grub.cfg"
  elif [ -f "${snaps}/\${tiu_n}/snapshot/boot/grub2/grub.cfg" ]; then
    set tiu_cfg="${snaps}/\${tiu_n}/snapshot/boot/grub2/grub.cfg"
  fi
  if [ -n "\${tiu_cfg}" ]; then
    set tiu_boot="\${tiu_n}"
    break
  fi
  if tiu_has "\${tiu_n}"; then
    set tiu_boot="\${tiu_n}"
    break
  fi
done
if [ "\${tiu_boot}" = "\${tiu_default}" ]; then
  set tiu_rootflags=""
else
  set tiu_rootflags="rootflags=subvol=${snaps.slice(1)}/\${tiu_boot}/snapshot"
fi
# Menu entries run in a new context that only sees exported variables.
export tiu_rootflags
export tiu_boot
if [ -n "\${tiu_cfg}" ]; then
  source "\${tiu_cfg}"
else
  menuentry "tiu: snapshot \${tiu_boot}" --id tiu-boot {
    tiu_linux "\${tiu_boot}" "\${tiu_rootflags}"
  }
fi
if [ "\${tiu_mode}" = fallback ]; then
  echo "tiu: snapshot \${tiu_default} did not boot in ${GRUB_TRIES} tries; booting snapshot \${tiu_boot}"
fi
tiu_menu
`;
}

/**
 * Unpins a grub.cfg generated by grub-mkconfig inside snapshot `subvol`: every
 * `rootflags=subvol=<subvol>` (with or without leading slash) becomes `${tiu_rootflags}`, so the
 * entry mounts the btrfs default unless the selector pins it. Pure; returns the count replaced.
 */
export function unpinGrubCfg(text: string, subvol: string): { text: string; count: number } {
  const bare = subvol.replace(/^\/+/, '');
  const esc = bare.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  const re = new RegExp(`rootflags=subvol=/?${esc}(?=[\\s'"]|$)`, 'gm');
  let count = 0;
  const out = text.replace(re, () => {
    count++;
    return '${tiu_rootflags}';
  });
  return { text: out, count };
}
