/** Where the VM harness keeps things. Environment variables override the defaults. */
import { resolve } from 'node:path';

/** The checkout (shared read-only with the guest as 9p tag `tiu`). */
export const REPO = resolve(import.meta.dirname, '../..');
/** Cached guest trees, archives and base disks (outside the repository). */
export const CACHE_DIR = process.env.TIU_VM_CACHE ?? '/var/cache/tiu-vm';
/** Per-run overlays, UEFI variable stores and serial logs. */
export const RUN_DIR = process.env.TIU_VM_RUN ?? '/var/tmp/tiu-vm-run';
/** Serial logs of failed scenarios. */
export const LOG_DIR = `${REPO}/vm/logs`;
/** The image build scripts (their contents are part of the cache keys). */
export const IMAGE_DIR = `${REPO}/vm/image`;
/** Node 24 of the checkout (the same binary runs in the guest). */
export const NODE = `${REPO}/node_modules/node/bin/node`;
export const OVMF_CODE = process.env.TIU_VM_OVMF_CODE ?? '/usr/share/OVMF/OVMF_CODE_4M.fd';
export const OVMF_VARS = process.env.TIU_VM_OVMF_VARS ?? '/usr/share/OVMF/OVMF_VARS_4M.fd';
/** The compatible string of the guest images. */
export const COMPATIBLE = 'tiu-vm-x86_64';
/** Guest paths of the 9p shares. */
export const GUEST_TIU = '/opt/tiu';
export const GUEST_ARTIFACTS = '/opt/tiu-artifacts';
