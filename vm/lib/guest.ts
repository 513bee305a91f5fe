/**
 * What the booted guest reports, read through its serial console: tiu's status, the btrfs
 * default subvolume, the snapshot mounted at /, the kernel command line, the image release.
 */
import { extractJson } from './console.ts';
import type { Vm } from './qemu.ts';
import { GUEST_ARTIFACTS } from './paths.ts';

export interface StatusRow {
  number: number;
  version: string | null;
  booted: boolean;
  default: boolean;
  inProgress: boolean;
  health: 'good' | 'bad' | 'unknown';
  description: string;
}

/** `tiu status --json` in the guest. */
export async function tiuStatus(vm: Vm): Promise<StatusRow[]> {
  const r = await vm.run('tiu status --json', { timeoutMs: 120_000 });
  return extractJson<{ snapshots: StatusRow[] }>(r.output).snapshots;
}

/** Snapshot number in a subvolume path like `@/.snapshots/3/snapshot` (undefined otherwise). */
export function snapshotNumber(path: string): number | undefined {
  const m = path.match(/(?:^|\/)@\/\.snapshots\/(\d+)\/snapshot$/);
  return m ? Number(m[1]) : undefined;
}

/** Facts about the running system, all read inside the guest. */
export interface BootFacts {
  /** The subvolume mounted at / (findmnt FSROOT), e.g. /@/.snapshots/1/snapshot. */
  rootSubvolume: string;
  booted: number | undefined;
  /** `btrfs subvolume get-default /` path. */
  defaultSubvolume: string;
  default: number | undefined;
  cmdline: string;
  /** /usr/share/tiu-vm/release of the running root. */
  release: string;
  uefi: boolean;
}

export async function bootFacts(vm: Vm): Promise<BootFacts> {
  const out = (await vm.run(
    'echo "root=$(findmnt -no FSROOT /)"; echo "default=$(btrfs subvolume get-default / | sed -n "s/.* path //p")"; echo "cmdline=$(cat /proc/cmdline)"; echo "release=$(cat /usr/share/tiu-vm/release)"; echo "uefi=$(test -d /sys/firmware/efi && echo yes || echo no)"',
  )).output;
  const get = (k: string) => out.match(new RegExp(`^${k}=(.*)$`, 'm'))?.[1]?.trim() ?? '';
  const rootSubvolume = get('root');
  const defaultSubvolume = get('default');
  return {
    rootSubvolume,
    booted: snapshotNumber(rootSubvolume.replace(/^\//, '')),
    defaultSubvolume,
    default: snapshotNumber(defaultSubvolume),
    cmdline: get('cmdline'),
    release: get('release'),
    uefi: get('uefi') === 'yes',
  };
}

/** Guest path of an archive built by the harness. */
export function artifact(name: string): string {
  return `${GUEST_ARTIFACTS}/${name}`;
}

/** Numbers of snapshots whose info.xml marks them in progress (read directly, no tiu). */
export async function inProgressOnDisk(vm: Vm): Promise<number[]> {
  const r = await vm.run("grep -l '<key>tiu-in-progress</key>' /.snapshots/*/info.xml 2>/dev/null || true");
  return r.output.split('\n').map((l) => l.match(/\/\.snapshots\/(\d+)\/info\.xml/)?.[1]).filter((x): x is string => !!x).map(Number);
}
