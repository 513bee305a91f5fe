/** Pure parts of the snapshot layer: numbering, mountinfo, snapper's JSON, btrfs output shapes. */
import { describe, it, expect } from 'vitest';
import fc from 'fast-check';
import { nextSnapshotNumber, parseHighWater, snapshotNumberFromName } from '../src/snapshot/numbering.ts';
import { isWritableMount, mountAt, mountContaining, mountedSubvolume, mountsBelow, parseMountinfo, snapshotNumberOf } from '../src/snapshot/mountinfo.ts';
import { parseSnapperJsonList, userdataArg } from '../src/snapshot/snapper.ts';
import { parseSubvolumeList, parseGetDefault, parseDuExclusive } from '../src/snapshot/btrfs-parse.ts';
import { mergeUserdata } from '../src/snapshot/infoxml.ts';
import { parseTransidMarker } from '../src/snapshot/btrfs.ts';

describe('snapshot numbering', () => {
  it('is one more than everything seen, directories and the high-water mark', () => {
    fc.assert(fc.property(fc.array(fc.integer({ min: 1, max: 1e6 })), fc.option(fc.integer({ min: 0, max: 1e6 }), { nil: undefined }), (dirs, hw) => {
      const n = nextSnapshotNumber(dirs, hw);
      expect(dirs.every((d) => d < n)).toBe(true);
      if (hw !== undefined) expect(n).toBeGreaterThan(hw);
      expect(n === 1 || dirs.includes(n - 1) || hw === n - 1).toBe(true);
    }));
    expect(() => nextSnapshotNumber([0xffffffff], undefined)).toThrow(/exhausted/);
  });

  it('reads only canonical names and well-formed marks', () => {
    expect(['1', '42', '4294967295'].map(snapshotNumberFromName)).toEqual([1, 42, 4294967295]);
    expect(['0', '01', '4294967296', '1a', '', '.tiu-last-number', '-1', '1 '].map(snapshotNumberFromName)).toEqual(Array(8).fill(undefined));
    expect(parseHighWater('17\n')).toBe(17);
    expect(parseHighWater('17')).toBe(17);
    for (const bad of ['', 'x', '17\n18\n', ' 17', '-1', '99999999999']) expect(parseHighWater(bad), bad).toBeUndefined();
  });
});

describe('mountinfo', () => {
  const text = [
    '22 1 0:21 / / rw,relatime shared:1 - ext4 /dev/vda rw',
    '43 22 0:39 / /tmp/my\\040dir/top rw,relatime - btrfs /dev/loop0 rw,subvolid=5,subvol=/',
    '44 22 0:39 /@/.snapshots/3/snapshot /tmp/my\\040dir/root rw,relatime shared:5 master:2 - btrfs /dev/loop0 rw,subvolid=258',
    '45 44 0:39 /@/.snapshots /tmp/my\\040dir/root/.snapshots rw - btrfs /dev/loop0 rw',
    '46 44 0:39 /@/.snapshots/7/snapshot /tmp/my\\040dir/root rw - btrfs /dev/loop0 rw',
    'garbage line',
  ].join('\n');

  it('parses fields, unescapes octal, finds the visible mount and the unmount order', () => {
    const e = parseMountinfo(text);
    expect(e).toHaveLength(5);
    expect(e[1]).toMatchObject({ mountId: 43, parentId: 22, root: '/', mountPoint: '/tmp/my dir/top', fsType: 'btrfs', source: '/dev/loop0' });
    expect(e[2]!.root).toBe('/@/.snapshots/3/snapshot');
    // The last mount at a point hides the earlier ones.
    expect(mountAt(e, '/tmp/my dir/root')?.root).toBe('/@/.snapshots/7/snapshot');
    expect(mountAt(e, '/tmp/my dir/nothing')).toBeUndefined();
    expect(mountsBelow(e, '/tmp/my dir')).toEqual(['/tmp/my dir/root', '/tmp/my dir/root/.snapshots', '/tmp/my dir/root', '/tmp/my dir/top']);
    expect(mountsBelow(e, '/tmp/my')).toEqual([]);
  });

  it('names the subvolume a mount shows, and the mount holding a path', () => {
    const lines = [
      '22 1 0:21 / / rw,relatime shared:1 - ext4 /dev/vda rw',
      '47 22 0:39 /@/.snapshots/1/snapshot /r rw,relatime - btrfs /dev/loop2 rw,discard=async,space_cache=v2,subvolid=266,subvol=/@/.snapshots/1/snapshot',
      '48 47 0:39 /@/.snapshots /r/.snapshots rw,relatime - btrfs /dev/loop2 rw,space_cache=v2,subvolid=257,subvol=/@/.snapshots',
      // A bind mount of a directory inside a subvolume: its root is not the subvolume's.
      '49 22 0:39 /@/.snapshots/1 /b ro,relatime - btrfs /dev/loop2 rw,subvolid=257,subvol=/@/.snapshots',
      // An escaped comma in the subvolume's name, and a read-only filesystem.
      '50 22 0:40 /a\\054b /c rw - btrfs /dev/loop3 ro,subvolid=300,subvol=/a\\054b',
      '51 22 0:41 / /top rw - btrfs /dev/loop4 rw,subvolid=5,subvol=/',
      '52 22 0:42 / /x rw - ext4 /dev/loop5 rw',
    ].join('\n');
    const e = parseMountinfo(lines);
    expect(mountedSubvolume(mountAt(e, '/r/.snapshots')!)).toEqual({ id: 257, path: '@/.snapshots' });
    expect(mountedSubvolume(mountAt(e, '/r')!)).toEqual({ id: 266, path: '@/.snapshots/1/snapshot' });
    expect(mountedSubvolume(mountAt(e, '/b')!)).toBeUndefined();
    expect(mountedSubvolume(mountAt(e, '/c')!)).toEqual({ id: 300, path: 'a,b' });
    expect(mountedSubvolume(mountAt(e, '/top')!)).toEqual({ id: 5, path: '' });
    expect(mountedSubvolume(mountAt(e, '/x')!)).toBeUndefined();
    expect(mountContaining(e, '/r/.snapshots/3/snapshot')?.mountId).toBe(48);
    expect(mountContaining(e, '/r/.snapshotsX')?.mountId).toBe(47);
    expect(mountContaining(e, '/elsewhere')?.mountId).toBe(22);
    expect(isWritableMount(mountAt(e, '/r/.snapshots')!)).toBe(true);
    expect(isWritableMount(mountAt(e, '/b')!)).toBe(false);
    expect(isWritableMount(mountAt(e, '/c')!)).toBe(false);
  });

  it('maps subvolume paths to snapshot numbers', () => {
    expect(snapshotNumberOf('/@/.snapshots/3/snapshot', '@/.snapshots')).toBe(3);
    expect(snapshotNumberOf('@/.snapshots/12/snapshot', '@/.snapshots')).toBe(12);
    expect(snapshotNumberOf('5/snapshot', '')).toBe(5);
    for (const p of ['/@/.snapshots/3/snapshot/etc', '/@/.snapshots/03/snapshot', '/@/.snapshots/x/snapshot', '/@', '/@/.snapshotsX/3/snapshot', '/other/.snapshots/3/snapshot', '']) {
      expect(snapshotNumberOf(p, '@/.snapshots'), p).toBeUndefined();
    }
  });
});

describe('snapper JSON and arguments', () => {
  it('parses snapper --jsonout list, leaving out "current"', () => {
    const json = JSON.stringify({ root: [
      { subvolume: '/', number: 0, default: false, active: false, type: 'single', 'pre-number': null, date: '', user: 'root', 'used-space': null, cleanup: '', description: 'current', userdata: null },
      { subvolume: '/', number: 4, default: true, active: true, type: 'post', 'pre-number': 3, date: '2026-11-23 12:25:53', user: 'root', cleanup: 'number', description: 'x, "y"', userdata: { a: '1' } },
    ] });
    expect(parseSnapperJsonList(json)).toEqual([{ num: 4, type: 'post', preNum: 3, date: new Date('2026-11-23T12:25:53Z'), cleanup: 'number', description: 'x, "y"', userdata: { a: '1' } }]);
    expect(() => parseSnapperJsonList('not json')).toThrow(/did not print JSON/);
    expect(() => parseSnapperJsonList('{"home": []}')).toThrow(/no 'root' config/);
    expect(() => parseSnapperJsonList('{"root": [{"number": "1"}]}')).toThrow(/unexpected JSON/);
    expect(() => parseSnapperJsonList(JSON.stringify({ root: [{ number: 1, type: 'single', date: 'yesterday' }] }))).toThrow(/bad date/);
  });

  it('builds userdata arguments with snapper\'s removal syntax, merges patches the same way', () => {
    expect(userdataArg({ a: '1', b: null, c: '' })).toBe('a=1,b=,c=');
    expect(mergeUserdata({ a: '1', b: '2', c: '3' }, { a: 'x', b: null, c: '', d: '4' })).toEqual({ a: 'x', d: '4' });
  });
});

describe('btrfs output shapes', () => {
  it('subvolume list with spaces in paths and <FS_TREE> prefixes', () => {
    const out = 'ID 256 gen 7 top level 5 parent_uuid -                                    uuid 0bcfaa2b-9986-4945-9f4b-dc75566ae4d0 path @\n'
      + 'ID 258 gen 20 top level 257 parent_uuid d5b9cdcb-59ba-c340-8633-c57ad46f9ec4 uuid e6f5f347-d462-4946-ab6a-f55f6f280d1a path <FS_TREE>/@/a b\n';
    expect(parseSubvolumeList(out)).toEqual([
      { id: 256, generation: 7, topLevel: 5, parentUuid: undefined, uuid: '0bcfaa2b-9986-4945-9f4b-dc75566ae4d0', path: '@' },
      { id: 258, generation: 20, topLevel: 257, parentUuid: 'd5b9cdcb-59ba-c340-8633-c57ad46f9ec4', uuid: 'e6f5f347-d462-4946-ab6a-f55f6f280d1a', path: '@/a b' },
    ]);
    expect(parseGetDefault('ID 5 (FS_TREE)\n')).toEqual({ id: 5, path: '' });
    expect(parseGetDefault('ID 258 gen 20 top level 257 path @/.snapshots/1/snapshot\n')).toEqual({ id: 258, path: '@/.snapshots/1/snapshot' });
    expect(parseDuExclusive('     Total   Exclusive  Set shared  Filename\n   4096      1234           -  /x y\n')).toBe(1234);
  });
});

describe('btrfs subvolume find-new output', () => {
  it('gives the generation, and refuses anything else', () => {
    expect(parseTransidMarker('transid marker was 13\n')).toBe(13);
    expect(parseTransidMarker('inode 257 file offset 0 len 4096 disk start 0 offset 0 gen 9 flags NONE a\ntransid marker was 9007\n')).toBe(9007);
    for (const bad of ['', 'transid marker was \n', 'transid marker was -1', 'transid marker was 99999999999999999999', 'ERROR: not a subvolume']) {
      expect(() => parseTransidMarker(bad)).toThrow(/unexpected output of 'btrfs subvolume find-new'/);
    }
  });
});
