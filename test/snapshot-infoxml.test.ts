import { describe, it, expect } from 'vitest';
import fc from 'fast-check';
import { mkdir, readdir, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { parseInfoXml, renderInfoXml, writeInfoXmlAtomic, parseSnapperDate, formatSnapperDate, MAX_INFO_XML_BYTES, type SnapshotInfo } from '../src/snapshot/infoxml.ts';
import { TiuError } from '../src/core/errors.ts';
import { tempDir } from './helpers/env.ts';

/** Written by snapper 0.10.4 (Debian bookworm, libxml2 2.9) for
 *  `snapper create --description 'a "quoted" <desc> & more, ü' --userdata 'tiu=yes,b=2' --cleanup-algorithm number`. */
const SNAPPER_WRITTEN = `<?xml version="1.0"?>
<snapshot>
  <type>single</type>
  <num>2</num>
  <date>2026-11-23 12:25:53</date>
  <description>a "quoted" &lt;desc&gt; &amp; more, &#xFC;</description>
  <cleanup>number</cleanup>
  <userdata>
    <key>b</key>
    <value>2</value>
  </userdata>
  <userdata>
    <key>tiu</key>
    <value>yes</value>
  </userdata>
</snapshot>
`;

function info(over: Partial<SnapshotInfo> = {}): SnapshotInfo {
  return { num: 7, type: 'single', date: new Date('2024-05-06T07:08:09Z'), description: '', cleanup: '', userdata: {}, ...over };
}

function code(fn: () => unknown): string {
  try {
    fn();
  } catch (e) {
    if (e instanceof TiuError) return `${e.code}: ${e.message}`;
    throw e;
  }
  return 'no error';
}

describe('info.xml', () => {
  it('parses what snapper wrote', () => {
    const i = parseInfoXml(SNAPPER_WRITTEN);
    expect(i).toEqual({
      num: 2, type: 'single', date: new Date('2026-11-23T12:25:53Z'),
      description: 'a "quoted" <desc> & more, ü', cleanup: 'number', userdata: { b: '2', tiu: 'yes' },
    });
  });

  it('renders it back byte for byte', () => {
    expect(renderInfoXml(parseInfoXml(SNAPPER_WRITTEN))).toBe(SNAPPER_WRITTEN);
  });

  it('renders in snapper\'s element order, optional elements only when set', () => {
    const xml = renderInfoXml(info({ type: 'post', preNum: 3, uid: 1000, description: 'd', cleanup: 'number', userdata: { z: '1', a: '2' } }));
    const order = [...xml.matchAll(/<(\w+)>/g)].map((m) => m[1]);
    expect(order).toEqual(['snapshot', 'type', 'num', 'date', 'uid', 'pre_num', 'description', 'cleanup', 'userdata', 'key', 'value', 'userdata', 'key', 'value']);
    expect(xml).toContain('<key>a</key>');
    expect(xml.indexOf('<key>a</key>')).toBeLessThan(xml.indexOf('<key>z</key>'));
    const bare = renderInfoXml(info());
    expect(bare).toBe('<?xml version="1.0"?>\n<snapshot>\n  <type>single</type>\n  <num>7</num>\n  <date>2024-05-06 07:08:09</date>\n</snapshot>\n');
    // pre_num is written only for post snapshots, uid only when not 0.
    expect(renderInfoXml(info({ type: 'pre', preNum: 3, uid: 0 }))).not.toMatch(/pre_num|uid/);
  });

  it('escapes like libxml2: & < > as entities, CR and non-ASCII as hex references, the rest literal', () => {
    const xml = renderInfoXml(info({ description: `tab\there\nnl cr\rx 😀 é '"> ]]> ~\u007f` }));
    expect(xml).toContain(`<description>tab\there\nnl cr&#xD;x &#x1F600; &#xE9; '"&gt; ]]&gt; ~\u007f</description>`);
    expect(parseInfoXml(xml).description).toBe(`tab\there\nnl cr\rx 😀 é '"> ]]> ~\u007f`);
  });

  it('orders userdata by UTF-8 bytes like std::map, not by UTF-16 code units', () => {
    // U+1F600 is D83D DE00 in UTF-16 (before U+FF5E) but F0 9F 98 80 in UTF-8 (after EF BD 9E).
    const xml = renderInfoXml(info({ userdata: { '\u{1F600}': 'v', '\uff5e': 'v', b: 'v', B: 'v', a: 'v' } }));
    const rendered = [...xml.matchAll(/<key>(.*?)<\/key>/g)].map((m) => m[1]);
    expect(rendered).toEqual(['B', 'a', 'b', '&#xFF5E;', '&#x1F600;']);
  });

  it('round-trips any valid info: parse(render(x)) = x', () => {
    const xmlChars = /^[\t\n\r\x20-\ud7ff\ue000-\ufffd\u{10000}-\u{10ffff}]*$/u;
    const unit = fc.oneof(fc.constantFrom('<', '>', '&', '"', "'", '\t', '\n', '\r', ' ', 'é', '😀', '\u007f'), fc.string({ unit: 'binary', minLength: 1, maxLength: 1 }));
    const text = fc.string({ unit, maxLength: 30 }).filter((s) => xmlChars.test(s));
    const udText = text.filter((s) => !/[,=]/.test(s) && s.trim() === s);
    const arb = fc.record({
      num: fc.integer({ min: 1, max: 0xffffffff }),
      type: fc.constantFrom('single', 'pre', 'post') as fc.Arbitrary<SnapshotInfo['type']>,
      date: fc.integer({ min: 0, max: 4102444799 }).map((s) => new Date(s * 1000)),
      uid: fc.option(fc.integer({ min: 1, max: 65535 }), { nil: undefined }),
      preNum: fc.integer({ min: 1, max: 1000 }),
      description: text,
      cleanup: fc.constantFrom('', 'number', 'timeline'),
      userdata: fc.dictionary(udText.filter((k) => k !== ''), udText, { maxKeys: 4 }),
    }).map((r) => {
      const x: SnapshotInfo = { num: r.num, type: r.type, date: r.date, description: r.description, cleanup: r.cleanup, userdata: { ...r.userdata } };
      if (r.uid !== undefined) x.uid = r.uid;
      if (r.type === 'post') x.preNum = r.preNum;
      return x;
    });
    fc.assert(fc.property(arb, (x) => {
      expect(parseInfoXml(renderInfoXml(x))).toEqual(x);
    }), { numRuns: 300 });
  });

  it('treats keys like __proto__ and entity names like toString as plain data', () => {
    const userdata = Object.fromEntries([['__proto__', 'x'], ['toString', 'y'], ['constructor', 'z']]);
    const parsed = parseInfoXml(renderInfoXml(info({ userdata })));
    expect(Object.entries(parsed.userdata)).toEqual([['__proto__', 'x'], ['constructor', 'z'], ['toString', 'y']]);
    expect(Object.getPrototypeOf(parsed.userdata)).toBe(Object.prototype);
    expect(code(() => parseInfoXml(renderInfoXml(info()).replace('<num>', '<description>&toString;</description><num>')))).toMatch(/unknown entity/);
  });

  it('accepts other whitespace, comments, CDATA, decimal references, literal CRLF', () => {
    const xml = '<?xml version="1.0" encoding="UTF-8"?>\r\n<!-- hi --><snapshot><num>3</num>\r\n<type>pre</type><date>2020-01-02 03:04:05 GMT</date>'
      + '<description><![CDATA[a<b]]>&#233;&#x41;x&quot;&apos;</description><userdata><value>v</value><key>k</key></userdata></snapshot>';
    expect(parseInfoXml(xml)).toEqual({ num: 3, type: 'pre', date: new Date('2020-01-02T03:04:05Z'), description: 'a<béAx"\'', cleanup: '', userdata: { k: 'v' } });
  });

  it('rejects garbage with INPUT_INVALID and a reason', () => {
    const ok = (body: string) => `<?xml version="1.0"?>\n<snapshot><type>single</type><num>1</num><date>2024-01-01 00:00:00</date>${body}</snapshot>`;
    expect(code(() => parseInfoXml(ok('')))).toBe('no error');
    const cases: [string, RegExp][] = [
      ['', /no <snapshot>|not well-formed/],
      ['not xml at all', /no <snapshot>|not well-formed/],
      ['<snapshot><type>single</type>', /not well-formed/],
      ['<snap><num>1</num></snap>', /one <snapshot>/],
      [ok('') + '<snapshot/>', /not well-formed|one <snapshot>/],
      ['<!DOCTYPE snapshot [<!ENTITY x "y">]>' + ok('<description>&x;</description>'), /DOCTYPE/],
      [ok('<description>&x;</description>'), /unknown entity/],
      [ok('<description>a & b</description>'), /entity|well-formed/],
      [ok('<description>&#1;</description>'), /not a valid XML character/],
      [ok('<description>&#xD800;</description>'), /not a valid XML character/],
      [ok('<description>\u0001</description>'), /U\+0001/],
      [ok('<num>2</num>'), /<num> appears twice/],
      [ok('<color>red</color>'), /unknown element <color>/],
      [ok('<description lang="en">x</description>'), /attributes/],
      [ok('<description><b>x</b></description>'), /must contain text/],
      [ok('stray text'), /unexpected text/],
      [ok('<userdata><value>v</value></userdata>'), /without a key/],
      [ok('<userdata><key>k</key><key>j</key></userdata>'), /unexpected <key>/],
      [ok('<userdata><key>k</key></userdata><userdata><key>k</key></userdata>'), /appears twice/],
      [ok('').replace('<type>single</type>', '<type>weird</type>'), /<type> must be/],
      [ok('').replace('<type>single</type>', '<type>post</type>'), /needs <pre_num>/],
      [ok('').replace('<num>1</num>', '<num>0</num>'), /<num> is not a valid number/],
      [ok('').replace('<num>1</num>', '<num>-1</num>'), /<num> is not a valid number/],
      [ok('').replace('<num>1</num>', '<num>4294967296</num>'), /<num> is not a valid number/],
      [ok('').replace('<num>1</num>', '<num>1e3</num>'), /<num> is not a valid number/],
      [ok('').replace('<num>1</num>', ''), /no <num>/],
      [ok('').replace('<date>2024-01-01 00:00:00</date>', ''), /no <date>/],
      [ok('').replace('2024-01-01 00:00:00', '2024-02-30 00:00:00'), /<date> is not/],
      [ok('').replace('2024-01-01 00:00:00', '2024-01-01T00:00:00Z'), /<date> is not/],
      [ok(`<description>${'x'.repeat(MAX_INFO_XML_BYTES)}</description>`), /larger than/],
    ];
    for (const [xml, re] of cases) {
      const result = code(() => parseInfoXml(xml));
      expect(result, xml.slice(0, 120)).toMatch(/^INPUT_INVALID: /);
      expect(result, xml.slice(0, 120)).toMatch(re);
    }
  });

  it('refuses to render what snapper could not store or read back', () => {
    expect(code(() => renderInfoXml(info({ description: 'bell\u0007' })))).toMatch(/^INPUT_INVALID: .*U\+0007/);
    expect(code(() => renderInfoXml(info({ description: 'lone \ud800 surrogate' })))).toMatch(/^INPUT_INVALID: .*U\+D800/);
    const bad: Record<string, string>[] = [{ '': 'v' }, { 'a,b': 'v' }, { 'a=b': 'v' }, { k: 'a,b' }, { k: 'a=b' }, { ' k': 'v' }, { k: 'v ' }, { k: 'nl\u0001' }];
    for (const userdata of bad) {
      expect(code(() => renderInfoXml(info({ userdata }))), JSON.stringify(userdata)).toMatch(/^INPUT_INVALID: /);
    }
    expect(code(() => renderInfoXml(info({ num: 0 })))).toMatch(/^INTERNAL: /);
    expect(code(() => renderInfoXml(info({ type: 'post' })))).toMatch(/^INTERNAL: .*pre_num/);
    expect(code(() => renderInfoXml(info({ date: new Date(NaN) })))).toMatch(/^INTERNAL: /);
  });

  it('dates: snapper format in UTC, impossible dates rejected', () => {
    expect(formatSnapperDate(new Date('1999-12-31T23:59:59.999Z'))).toBe('1999-12-31 23:59:59');
    expect(parseSnapperDate('1999-12-31 23:59:59')?.toISOString()).toBe('1999-12-31T23:59:59.000Z');
    for (const bad of ['1999-12-31 24:00:00', '1999-13-01 00:00:00', '1999-12-31  23:59:59', '99-12-31 23:59:59', '']) expect(parseSnapperDate(bad)).toBeUndefined();
  });

  it('writeInfoXmlAtomic: replaces the file whole, leaves no temp files, mode 0600 like snapper', async () => {
    await using d = await tempDir();
    const dir = join(d.path, '5');
    await mkdir(dir);
    await writeInfoXmlAtomic(dir, info({ num: 5, description: 'first' }));
    await writeInfoXmlAtomic(dir, info({ num: 5, description: 'second' }));
    expect(await readdir(dir)).toEqual(['info.xml']);
    const text = await readFile(join(dir, 'info.xml'), 'utf8');
    expect(parseInfoXml(text).description).toBe('second');
    expect((await stat(join(dir, 'info.xml'))).mode & 0o777).toBe(0o600);
    // Invalid content never reaches the disk.
    await expect(writeInfoXmlAtomic(dir, info({ num: 5, description: '\u0000' }))).rejects.toThrow(/U\+0000/);
    expect(await readdir(dir)).toEqual(['info.xml']);
    expect(parseInfoXml(await readFile(join(dir, 'info.xml'), 'utf8')).description).toBe('second');
  });
});
