import { describe, it, expect } from 'vitest';
import fc from 'fast-check';
import { createHash } from 'node:crypto';
import { mergeAccounts, parseAccounts, type AccountFile, type AccountInput } from '../src/etc-merge/accounts.ts';
import { planEtcMerge } from '../src/etc-merge/plan.ts';
import { planReport, planResult } from '../src/etc-merge/report.ts';
import type { EtcEntry, EtcSide } from '../src/etc-merge/types.ts';
import { TiuError } from '../src/core/errors.ts';

const lines = (...l: string[]) => Buffer.from(l.map((x) => x + '\n').join(''), 'latin1');
const text = (b: Buffer | undefined) => b?.toString('latin1');

const PASSWD = ['root:x:0:0:root:/root:/bin/bash', 'daemon:x:1:1:daemon:/usr/sbin:/bin/sh', 'messagebus:x:100:101::/nonexistent:/usr/sbin/nologin'];
const GROUP = ['root:x:0:', 'wheel:x:10:root', 'audio:x:29:pulse,bob', 'messagebus:x:101:'];
const SHADOW = ['root:$6$base$hash:19000:0:99999:7:::', 'daemon:*:19000:0:99999:7:::', 'messagebus:!:19000::::::'];

function merge(files: Partial<Record<AccountFile, AccountInput>>) {
  return mergeAccounts(files);
}

describe('accounts merge', () => {
  it('keeps a user added on the device (passwd, shadow, group)', () => {
    const r = merge({
      passwd: { base: lines(...PASSWD), local: lines(...PASSWD, 'alice:x:1000:1000:Alice:/home/alice:/bin/bash'), next: lines(...PASSWD) },
      shadow: { base: lines(...SHADOW), local: lines(...SHADOW, 'alice:$y$local$pw:19500:0:99999:7:::'), next: lines(...SHADOW) },
      group: { base: lines(...GROUP), local: lines(...GROUP, 'alice:x:1000:'), next: lines(...GROUP) },
    });
    expect(text(r.files.passwd)).toBe(text(lines(...PASSWD, 'alice:x:1000:1000:Alice:/home/alice:/bin/bash')));
    expect(text(r.files.shadow)).toContain('alice:$y$local$pw:');
    expect(text(r.files.group)).toContain('alice:x:1000:\n');
    expect(r.notes).toEqual([]);
  });

  it('adds a system user the vendor added, after the device entries', () => {
    const vendor = 'systemd-oom:x:990:990:systemd Userspace OOM Killer:/:/usr/sbin/nologin';
    const r = merge({ passwd: { base: lines(...PASSWD), local: lines(...PASSWD), next: lines(...PASSWD, vendor) } });
    expect(text(r.files.passwd)).toBe(text(lines(...PASSWD, vendor)));
  });

  it('both at once: device users in device order first, vendor additions appended in vendor order', () => {
    const r = merge({
      passwd: {
        base: lines(...PASSWD),
        local: lines('alice:x:1000:1000::/home/alice:/bin/bash', ...PASSWD, 'bob:x:1001:1001::/home/bob:/bin/bash'),
        next: lines('svc-b:x:991:991::/:/usr/sbin/nologin', ...PASSWD, 'svc-a:x:992:992::/:/usr/sbin/nologin'),
      },
    });
    expect(text(r.files.passwd)!.split('\n').map((l) => l.split(':')[0])).toEqual(['alice', 'root', 'daemon', 'messagebus', 'bob', 'svc-b', 'svc-a', '']);
  });

  it('a uid collision is a conflict: the vendor account is not added (nor its shadow/subuid entries), nothing remapped', () => {
    const alice = 'alice:x:1000:1000::/home/alice:/bin/bash';
    const r = merge({
      passwd: { base: lines(...PASSWD), local: lines(...PASSWD, alice), next: lines(...PASSWD, 'svc:x:1000:1000::/var/lib/svc:/usr/sbin/nologin') },
      shadow: { base: lines(...SHADOW), local: lines(...SHADOW, 'alice:$y$pw:1::::::'), next: lines(...SHADOW, 'svc:!:1::::::') },
      subuid: { local: lines('alice:100000:65536'), next: lines('svc:200000:65536') },
    });
    expect(text(r.files.passwd)).toBe(text(lines(...PASSWD, alice)));
    expect(text(r.files.shadow)).not.toContain('svc:');
    expect(text(r.files.subuid)).toBe('alice:100000:65536\n');
    const note = r.notes.find((n) => n.file === 'passwd')!;
    expect(note.reason).toMatch(/'svc' not added: uid 1000 is held by 'alice'/);
    expect(r.notes.map((n) => n.file).sort()).toEqual(['passwd', 'shadow', 'subuid']);
  });

  it('a gid collision skips the vendor group and the vendor users whose primary group it was', () => {
    const r = merge({
      group: { base: lines(...GROUP), local: lines(...GROUP, 'devs:x:990:alice'), next: lines(...GROUP, 'svc:x:990:') },
      passwd: { base: lines(...PASSWD), local: lines(...PASSWD), next: lines(...PASSWD, 'svc:x:990:990::/:/usr/sbin/nologin') },
      gshadow: { local: lines('devs:!::alice'), next: lines('svc:!::') },
    });
    expect(text(r.files.group)).toBe(text(lines(...GROUP, 'devs:x:990:alice')));
    expect(text(r.files.passwd)).toBe(text(lines(...PASSWD)));
    expect(text(r.files.gshadow)).toBe('devs:!::alice\n');
    expect(r.notes.map((n) => n.reason).join('\n')).toMatch(/gid 990 is held by 'devs'[\s\S]*primary group 990/);
  });

  it("a vendor's own duplicate id (root and toor) is not a collision", () => {
    const r = merge({ passwd: { base: lines(...PASSWD), local: lines(...PASSWD), next: lines(...PASSWD, 'toor:x:0:0::/root:/bin/sh') } });
    expect(text(r.files.passwd)).toContain('toor:x:0:0');
    expect(r.notes).toEqual([]);
  });

  it('keeps a local password change; applies the vendor change of another field and of an untouched account', () => {
    const r = merge({
      shadow: {
        base: lines(...SHADOW),
        local: lines('root:$6$local$changed:19600:0:99999:7:::', SHADOW[1]!, SHADOW[2]!),
        next: lines('root:$6$base$hash:19000:0:99999:14:::', 'daemon:!:19000:0:99999:7:::', SHADOW[2]!),
      },
    });
    expect(text(r.files.shadow)).toBe(text(lines('root:$6$local$changed:19600:0:99999:14:::', 'daemon:!:19000:0:99999:7:::', SHADOW[2]!)));
    expect(r.notes).toEqual([]);
  });

  it('applies a vendor shell change to an account the device did not change', () => {
    const r = merge({
      passwd: { base: lines(...PASSWD), local: lines(...PASSWD, 'alice:x:1000:1000::/home/alice:/bin/bash'), next: lines(PASSWD[0]!, 'daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin', PASSWD[2]!) },
    });
    expect(text(r.files.passwd)).toContain('daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n');
    expect(text(r.files.passwd)).toContain('alice:');
  });

  it('a field both sides changed differently: the device value wins, noted without the values', () => {
    const r = merge({
      shadow: { base: lines(...SHADOW), local: lines('root:$6$local$x:19000:0:99999:7:::'), next: lines('root:$6$vendor$y:19000:0:99999:7:::') },
    });
    expect(text(r.files.shadow)).toBe('root:$6$local$x:19000:0:99999:7:::\n');
    expect(r.notes).toHaveLength(1);
    expect(r.notes[0]!.reason).toMatch(/password changed on this device and by the vendor/);
    expect(r.notes[0]!.reason).not.toMatch(/\$6\$/);
  });

  it('group members merge as sets: both add, one side removes', () => {
    const r = merge({
      group: {
        base: lines('wheel:x:10:root', 'audio:x:29:pulse,bob', 'video:x:44:carol,dave'),
        local: lines('wheel:x:10:root,alice', 'audio:x:29:pulse', 'video:x:44:carol,dave,erin'),
        next: lines('wheel:x:10:root,admin', 'audio:x:29:pulse,bob,pipewire', 'video:x:44:dave'),
      },
      gshadow: { base: lines('wheel:!:root:root'), local: lines('wheel:!:root,alice:root,alice'), next: lines('wheel:!::root,admin') },
    });
    expect(text(r.files.group)).toBe(text(lines('wheel:x:10:root,alice,admin', 'audio:x:29:pulse,pipewire', 'video:x:44:dave,erin')));
    expect(text(r.files.gshadow)).toBe('wheel:!:alice:root,alice,admin\n');
  });

  it('vendor removals: applied to untouched accounts, not to accounts changed on the device; device removals stay', () => {
    const r = merge({
      passwd: {
        base: lines(...PASSWD, 'games:x:5:60:games:/usr/games:/usr/sbin/nologin', 'news:x:9:9:news:/var/spool/news:/usr/sbin/nologin'),
        local: lines(...PASSWD, 'games:x:5:60:games:/usr/games:/bin/bash'),
        next: lines(PASSWD[0]!, 'daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin', 'news:x:9:9:News:/var/spool/news:/usr/sbin/nologin'),
      },
    });
    // messagebus: removed by the vendor, untouched -> gone. games: removed by the vendor, changed locally -> kept.
    // news: removed on the device, changed by the vendor -> stays removed, noted.
    expect(text(r.files.passwd)).toBe(text(lines(PASSWD[0]!, 'daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin', 'games:x:5:60:games:/usr/games:/bin/bash')));
    expect(r.notes.map((n) => n.name).sort()).toEqual(['games', 'news']);
  });

  it('subuid ranges: vendor additions added unless they overlap a device range of another user', () => {
    const r = merge({ subuid: { base: lines('a:100000:65536'), local: lines('a:100000:65536', 'alice:165536:65536'), next: lines('a:100000:65536', 'svc:165536:10', 'svc2:300000:100') } });
    expect(text(r.files.subuid)).toBe(text(lines('a:100000:65536', 'alice:165536:65536', 'svc2:300000:100')));
    expect(r.notes[0]!.reason).toMatch(/overlaps 'alice'/);
  });

  it('keeps comments, blank and NIS lines of the device file and non-UTF-8 bytes', () => {
    const gecos = 'Jos\xe9 (latin1)';
    const r = merge({ passwd: { base: lines(...PASSWD), local: lines('# local', ...PASSWD, `jose:x:1002:1002:${gecos}:/home/jose:/bin/sh`, '', '+@netgroup'), next: lines(...PASSWD, 'new:x:999:999::/:/bin/false') } });
    expect(text(r.files.passwd)).toBe(text(lines('# local', ...PASSWD, `jose:x:1002:1002:${gecos}:/home/jose:/bin/sh`, '', '+@netgroup', 'new:x:999:999::/:/bin/false')));
  });

  it.each([
    ['passwd', 'root:x:0:0:root:/root', /expected 7 colon-separated fields, found 6/],
    ['passwd', 'root:x:zero:0:root:/root:/bin/sh', /uid is not a number/],
    ['passwd', ':x:0:0:root:/root:/bin/sh', /invalid entry name/],
    ['group', 'a:x:1:\na:x:2:', /line 2: duplicate entry 'a'/],
    ['subuid', 'a:1', /expected 3/],
    ['shadow', 'root:*:1:2', /expected 9/],
  ] as const)('rejects a malformed %s (%s)', (file, body, msg) => {
    let err: unknown;
    try {
      merge({ [file]: { local: Buffer.from(body + '\n'), next: Buffer.from('') } });
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(TiuError);
    expect((err as TiuError).code).toBe('ETC_MERGE');
    expect((err as TiuError).message).toMatch(/local \/etc\//);
    expect((err as TiuError).message).toMatch(msg);
  });

  it('parses strictly but accepts empty files and a missing final newline', () => {
    expect(parseAccounts('passwd', '').lines).toEqual([]);
    expect(parseAccounts('passwd', 'root:x:0:0::/root:/bin/sh').byName.get('root')?.[6]).toBe('/bin/sh');
  });
});

describe('accounts merge: properties', () => {
  const NAMES = ['root', 'daemon', 'bin', 'sys', 'alice', 'bob', 'svc'];
  const entryArb = (name: string, i: number) =>
    fc.record({ shell: fc.constantFrom('/bin/sh', '/bin/bash', '/usr/sbin/nologin'), gecos: fc.constantFrom('', 'x', 'y') }).map((f) => `${name}:x:${i}:${i}:${f.gecos}:/home/${name}:${f.shell}`);
  const fileArb = fc.tuple(...NAMES.map((n, i) => fc.option(entryArb(n, i), { nil: undefined }))).map((e) => e.filter((x): x is string => x !== undefined));
  const editArb = (base: string[]) =>
    fc.tuple(fileArb, fc.array(fc.boolean(), { minLength: NAMES.length, maxLength: NAMES.length })).map(([other, pick]) => {
      // Per name: keep base's entry or take the other tree's (changed, added or removed).
      return NAMES.flatMap((n, i) => {
        const src = pick[i] ? other : base;
        return src.filter((l) => l.startsWith(n + ':'));
      });
    });

  it('local = base -> the vendor entries; new = base -> exactly the device file', () => {
    fc.assert(
      fc.property(
        fileArb.chain((b) => fc.tuple(fc.constant(b), editArb(b))),
        ([b, changed]) => {
          const asSet = (x: Buffer | undefined) => new Set(text(x)!.split('\n').filter(Boolean));
          const v = merge({ passwd: { base: lines(...b), local: lines(...b), next: lines(...changed) } });
          expect(asSet(v.files.passwd)).toEqual(new Set(changed));
          const l = merge({ passwd: { base: lines(...b), local: lines(...changed), next: lines(...b) } });
          expect(text(l.files.passwd)).toBe(text(lines(...changed)));
          expect(l.notes).toEqual([]);
        },
      ),
      { numRuns: 300 },
    );
  });
});

describe('accounts through the planner', () => {
  const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
  const file = (path: string, b: Buffer, mode: number, gid = 0): EtcEntry => ({ path, type: 'file', mode, uid: 0, gid, mtime: 0, size: b.length, sha256: sha(b) });

  it('merges passwd and shadow by entry, keeps shadow mode/group, records conflicts in the report', async () => {
    const content: Record<EtcSide, Record<string, Buffer>> = {
      base: { passwd: lines(...PASSWD), shadow: lines(...SHADOW) },
      local: { passwd: lines(...PASSWD, 'alice:x:1000:1000::/home/alice:/bin/bash'), shadow: lines(...SHADOW, 'alice:$y$pw:1::::::') },
      new: { passwd: lines(...PASSWD, 'svc:x:1000:1000::/:/usr/sbin/nologin', 'oom:x:990:990::/:/usr/sbin/nologin'), shadow: lines(...SHADOW, 'svc:!:1::::::', 'oom:!:1::::::') },
    };
    const tree = (side: EtcSide) =>
      new Map<string, EtcEntry>([
        ['passwd', file('passwd', content[side].passwd!, 0o644)],
        ['shadow', file('shadow', content[side].shadow!, side === 'local' ? 0o640 : 0o600, 42)],
      ]);
    const trees = { base: tree('base'), local: tree('local'), new: tree('new') };
    const p = await planEtcMerge(trees.base, trees.local, trees.new, (s, path) => content[s][path]);
    const merged = p.actions.filter((a) => a.op === 'merged');
    expect(merged.map((a) => a.path)).toEqual(['passwd', 'shadow']);
    const shadow = merged[1]!;
    expect(shadow.op === 'merged' && text(shadow.content)).toBe(text(lines(...SHADOW, 'alice:$y$pw:1::::::', 'oom:!:1::::::')));
    expect(planResult(p, trees.new).get('shadow')).toMatchObject({ mode: 0o640, gid: 42 });
    const report = planReport(p);
    expect(report.merged).toEqual(['passwd', 'shadow']);
    expect(report.conflicts.map((c) => c.path)).toEqual(['passwd', 'shadow']);
    expect(report.conflicts.every((c) => c.tiunew === undefined)).toBe(true);
  });

  it('an account file the device did not change while the vendor did is the vendor version', async () => {
    const b = lines(...PASSWD);
    const n = lines(...PASSWD, 'oom:x:990:990::/:/usr/sbin/nologin');
    const trees = { base: new Map([['passwd', file('passwd', b, 0o644)]]), local: new Map([['passwd', file('passwd', b, 0o644)]]), new: new Map([['passwd', file('passwd', n, 0o644)]]) };
    const p = await planEtcMerge(trees.base, trees.local, trees.new, (s) => (s === 'new' ? n : b));
    expect(planReport(p).takenFromVendor).toEqual(['passwd']);
  });
});
