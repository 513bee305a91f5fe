/**
 * When an update may carry the local /etc over unmerged (src/tiu/device/etc-carry.ts): the new
 * image's vendor /etc must be the base's, entry for entry, with hardlinks resolved. Pure.
 */
import { describe, it, expect } from 'vitest';
import { etcTreeOfIndex, isEtc, sameVendorEtc } from '../src/tiu/device/etc-carry.ts';
import type { IndexEntry } from '../src/core/fileindex/types.ts';

const dir = (path: string): IndexEntry => ({ path, type: 'dir', mode: 0o755, uid: 0, gid: 0, mtime: 1_600_000_000 });
const file = (path: string, sha: string, o: Partial<IndexEntry> = {}): IndexEntry => ({ path, type: 'file', mode: 0o644, uid: 0, gid: 0, mtime: 1_600_000_000, size: 3, sha256: sha.repeat(64), ...o });

const base: IndexEntry[] = [dir('.'), dir('etc'), file('etc/hostname', 'a'), dir('etc/ssh'), file('etc/ssh/sshd_config', 'b'), dir('usr'), file('usr/bin', 'c')];

describe('sameVendorEtc', () => {
  it('holds when only files outside /etc differ', () => {
    const next = base.map((e) => (e.path === 'usr/bin' ? file('usr/bin', 'd') : e));
    expect(sameVendorEtc(base, next)).toBe(true);
  });

  it('fails on any difference in /etc: content, mode, owner, time, xattrs, an entry added or removed, the /etc directory itself', () => {
    const change = (p: string, o: Partial<IndexEntry>) => base.map((e) => (e.path === p ? { ...e, ...o } : e));
    expect(sameVendorEtc(base, change('etc/hostname', { sha256: 'e'.repeat(64) }))).toBe(false);
    expect(sameVendorEtc(base, change('etc/hostname', { mode: 0o600 }))).toBe(false);
    expect(sameVendorEtc(base, change('etc/hostname', { uid: 1 }))).toBe(false);
    expect(sameVendorEtc(base, change('etc/hostname', { mtime: 1 }))).toBe(false);
    expect(sameVendorEtc(base, change('etc/hostname', { xattrs: { 'user.x': 'eA==' } }))).toBe(false);
    expect(sameVendorEtc(base, change('etc', { mode: 0o700 }))).toBe(false);
    expect(sameVendorEtc(base, [...base, file('etc/new', 'f')])).toBe(false);
    expect(sameVendorEtc(base, base.filter((e) => e.path !== 'etc/ssh/sshd_config'))).toBe(false);
    expect(sameVendorEtc(base, base.filter((e) => !isEtc(e.path)))).toBe(false);
  });

  it('resolves hardlinks: an /etc file linked to a changed leader changed; a link across /etc in the new image is refused', () => {
    // etc/hostname is the 2nd member of a group led by etc/ssh/sshd_config: its content is the leader's.
    const linked = (sha: string) => base.map((e) => (e.path === 'etc/ssh/sshd_config' ? file(e.path, sha) : e.path === 'etc/hostname' ? { ...file(e.path, 'x'), sha256: undefined, size: undefined, hardlink: 'etc/ssh/sshd_config' } : e));
    expect(sameVendorEtc(linked('b'), linked('b'))).toBe(true);
    expect(sameVendorEtc(linked('b'), linked('z'))).toBe(false);
    expect(etcTreeOfIndex(linked('b')).get('hostname')).toMatchObject({ sha256: 'b'.repeat(64), size: 3 });
    expect(etcTreeOfIndex(linked('b')).get('hostname')!.hardlink).toBeUndefined();
    // A file outside /etc in the same group as one inside: /etc cannot be left to itself.
    const across = [...base, { ...file('usr/lib/os-release', 'x'), sha256: undefined, size: undefined, hardlink: 'etc/hostname' }];
    expect(sameVendorEtc(across, across)).toBe(false);
  });

  it('isEtc takes whole components', () => {
    expect(isEtc('etc')).toBe(true);
    expect(isEtc('etc/x')).toBe(true);
    expect(isEtc('etcx')).toBe(false);
    expect(isEtc('usr/etc')).toBe(false);
  });
});
