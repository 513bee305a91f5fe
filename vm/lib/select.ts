/**
 * Which scenarios run on which variant: all of them on both (the variants run side by side,
 * vm/vitest.config.ts). TIU_VM_SCENARIOS (comma-separated) overrides the list for both
 * variants, TIU_VM_VARIANTS (bios,uefi) skips a variant.
 */
import type { Scenario } from './suite.ts';
import type { BootMode } from './bootmode.ts';
import type { Variant } from './image.ts';

const ALL: Scenario[] = ['boot', 'dm-verity', 'power-cut', 'repository', 'update', 'health-rollback', 'no-userspace', 'factory-reset'];
// factory-reset and repository do not depend on the boot loader: one variant only (CI budget);
// repository adds no boot of its own when update follows it (update reboots into its snapshot).
const DEFAULT: Record<Variant, Scenario[]> = { bios: ALL.filter((s) => s !== 'factory-reset' && s !== 'repository'), uefi: ALL };

export function scenariosFor(variant: Variant): Scenario[] {
  const variants = (process.env.TIU_VM_VARIANTS ?? 'bios,uefi').split(',');
  if (!variants.includes(variant)) return [];
  const env = process.env.TIU_VM_SCENARIOS;
  if (!env) return DEFAULT[variant];
  const list = env.split(',').map((s) => s.trim()) as Scenario[];
  for (const s of list) if (!ALL.includes(s)) throw new Error(`unknown scenario '${s}' in TIU_VM_SCENARIOS (known: ${ALL.join(', ')})`);
  return list;
}

/** Scenarios that need tiu's boot integration cannot pass with the harness's minimal boot config. */
export function todoFor(mode: BootMode): Partial<Record<Scenario, string>> {
  if (mode === 'tiu') return {};
  const why = "needs tiu's boot integration (health check, boot counting): run with TIU_VM_BOOT_MODE=tiu";
  return { 'health-rollback': why, 'no-userspace': why };
}
