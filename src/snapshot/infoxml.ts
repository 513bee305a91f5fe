/**
 * snapper's per-snapshot metadata file, `/.snapshots/<N>/info.xml`.
 *
 * {@link renderInfoXml} writes byte for byte what snapper (libsnapper's Snapshot::writeInfo with
 * libxml2's xmlDocFormatDump) writes: elements in the order type, num, date, uid, pre_num,
 * description, cleanup, then one <userdata> per key sorted by the key's bytes; optional elements
 * only when set; text escaped as libxml2 does without a declared encoding (`& < >` as entities,
 * CR and every non-ASCII character as `&#xHEX;`). {@link parseInfoXml} is strict: it accepts what
 * snapper writes (also hand-made files with other whitespace, comments, CDATA, character
 * references) and rejects everything else with INPUT_INVALID.
 */
import { XMLParser, XMLValidator } from 'fast-xml-parser';
import { join } from 'node:path';
import { TiuError } from '../core/errors.ts';
import { writeFileAtomic } from '../core/atomic.ts';

export type SnapshotType = 'single' | 'pre' | 'post';

/** The content of one info.xml. */
export interface SnapshotInfo {
  num: number;
  type: SnapshotType;
  /** Creation time, whole seconds (stored as UTC `YYYY-MM-DD HH:MM:SS`). */
  date: Date;
  /** Owner uid for non-root snapshots (snapper omits 0). */
  uid?: number;
  /** For type 'post': the number of the matching 'pre' snapshot. */
  preNum?: number;
  /** '' when absent. */
  description: string;
  /** Cleanup algorithm ('number', 'timeline', ...), '' when absent. */
  cleanup: string;
  userdata: Record<string, string>;
}

/** Largest info.xml tiu reads; snapper's are a few hundred bytes. */
export const MAX_INFO_XML_BYTES = 256 * 1024;
const MAX_UINT = 0xffffffff;

function invalid(message: string, hint = 'the file is damaged; fix or remove it (the snapshot is then listed without metadata)'): TiuError {
  return new TiuError('INPUT_INVALID', message, { hint });
}

/** Throws unless `s` consists only of characters XML 1.0 (and so info.xml) can hold. */
export function assertXmlText(s: string, what: string): void {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c >= 0xd800 && c <= 0xdbff) {
      const d = s.charCodeAt(i + 1);
      if (d >= 0xdc00 && d <= 0xdfff) { i++; continue; }
    }
    const ok = c === 0x09 || c === 0x0a || c === 0x0d || (c >= 0x20 && c < 0xd800) || (c >= 0xe000 && c <= 0xfffd);
    if (!ok) {
      throw new TiuError('INPUT_INVALID', `${what} contains character U+${c.toString(16).toUpperCase().padStart(4, '0')}, which info.xml cannot hold`, {
        hint: 'remove control characters from it',
      });
    }
  }
}

/**
 * Checks userdata as snapper does (keys non-empty, no ',' or '=' in keys and values), plus what its
 * command line would silently change (surrounding whitespace) or cannot store (control characters).
 */
export function validateUserdata(userdata: Record<string, string | null | undefined>): void {
  for (const [key, value] of Object.entries(userdata)) {
    const hint = "userdata keys are non-empty; keys and values contain no ',' or '=' and no leading or trailing spaces";
    if (key === '' || /[,=]/.test(key) || key.trim() !== key) throw new TiuError('INPUT_INVALID', `invalid userdata key '${key}'`, { hint });
    if (value == null) continue;
    if (/[,=]/.test(value) || value.trim() !== value) throw new TiuError('INPUT_INVALID', `invalid userdata value '${value}' for key '${key}'`, { hint });
    assertXmlText(key, 'a userdata key');
    assertXmlText(value, `the userdata value of '${key}'`);
  }
}

/**
 * Applies a userdata patch: a null or '' value removes the key. Pure; returns a new object
 * (built from entries, so a key such as '__proto__' stays an ordinary key).
 */
export function mergeUserdata(base: Record<string, string>, patch: Record<string, string | null | undefined>): Record<string, string> {
  const out = new Map(Object.entries(base));
  for (const [key, value] of Object.entries(patch)) {
    if (value == null || value === '') out.delete(key);
    else out.set(key, value);
  }
  return Object.fromEntries(out);
}

/** libxml2's text escaping without an output encoding. */
function escapeText(s: string): string {
  let out = '';
  for (const ch of s) {
    const cp = ch.codePointAt(0)!;
    if (ch === '&') out += '&amp;';
    else if (ch === '<') out += '&lt;';
    else if (ch === '>') out += '&gt;';
    else if (cp === 0x0d || cp >= 0x80) out += `&#x${cp.toString(16).toUpperCase()};`;
    else out += ch;
  }
  return out;
}

/** `YYYY-MM-DD HH:MM:SS` in UTC, as snapper's datetime(t, utc=true, classic=true). */
export function formatSnapperDate(date: Date): string {
  if (Number.isNaN(date.getTime())) throw new TiuError('INTERNAL', 'snapshot date is invalid');
  return date.toISOString().slice(0, 19).replace('T', ' ');
}

/** Parses snapper's UTC `YYYY-MM-DD HH:MM:SS` (old snapper appended ' GMT'); undefined if invalid. */
export function parseSnapperDate(text: string): Date | undefined {
  const m = /^(\d{4})-(\d{2})-(\d{2}) (\d{2}):(\d{2}):(\d{2})(?: GMT)?$/.exec(text);
  if (!m) return undefined;
  const [y, mo, d, h, mi, s] = m.slice(1).map(Number) as [number, number, number, number, number, number];
  const date = new Date(Date.UTC(y, mo - 1, d, h, mi, s));
  // Reject 2024-02-30 and 25:00:00, which Date.UTC would roll over.
  if (date.getUTCFullYear() !== y || date.getUTCMonth() !== mo - 1 || date.getUTCDate() !== d || date.getUTCHours() !== h || date.getUTCMinutes() !== mi || date.getUTCSeconds() !== s) {
    return undefined;
  }
  return date;
}

function checkNum(n: number | undefined, what: string, min: number): void {
  if (n === undefined) return;
  if (!Number.isInteger(n) || n < min || n > MAX_UINT) throw new TiuError('INTERNAL', `${what} ${n} is not a valid snapshot number`);
}

/** Compares strings by their UTF-8 bytes, as std::map<string,...> orders snapper's userdata. */
function compareUtf8(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8'));
}

/**
 * Renders info.xml exactly as snapper writes it. Pure. Throws INPUT_INVALID for text info.xml
 * cannot hold or userdata snapper would reject, INTERNAL for impossible numbers or dates.
 */
export function renderInfoXml(info: SnapshotInfo): string {
  checkNum(info.num, 'num', 1);
  checkNum(info.uid, 'uid', 0);
  if (info.type === 'post') checkNum(info.preNum ?? -1, 'pre_num', 1);
  if (!['single', 'pre', 'post'].includes(info.type)) throw new TiuError('INTERNAL', `unknown snapshot type '${info.type}'`);
  assertXmlText(info.description, 'the description');
  assertXmlText(info.cleanup, 'the cleanup algorithm');
  validateUserdata(info.userdata);
  const el = (name: string, text: string, indent = '  ') => `${indent}<${name}>${escapeText(text)}</${name}>\n`;
  let xml = '<?xml version="1.0"?>\n<snapshot>\n';
  xml += el('type', info.type);
  xml += el('num', String(info.num));
  xml += el('date', formatSnapperDate(info.date));
  if (info.uid) xml += el('uid', String(info.uid));
  if (info.type === 'post') xml += el('pre_num', String(info.preNum));
  if (info.description) xml += el('description', info.description);
  if (info.cleanup) xml += el('cleanup', info.cleanup);
  for (const key of Object.keys(info.userdata).sort(compareUtf8)) {
    xml += `  <userdata>\n${el('key', key, '    ')}${el('value', info.userdata[key]!, '    ')}  </userdata>\n`;
  }
  return `${xml}</snapshot>\n`;
}

const PREDEFINED: Record<string, string> = { lt: '<', gt: '>', amp: '&', quot: '"', apos: "'" };

/** Decodes the five predefined entities and character references; anything else is rejected. */
function decodeText(raw: string, where: string): string {
  // XML end-of-line handling: literal CR LF and CR become LF (a CR survives only as &#xD;).
  const text = raw.replace(/\r\n?/g, '\n');
  assertXmlTextOr(text, where);
  return text.replace(/&([^;&]{0,10});?/g, (all, name: string) => {
    if (!all.endsWith(';')) throw invalid(`info.xml: unterminated entity in <${where}>`);
    if (Object.hasOwn(PREDEFINED, name)) return PREDEFINED[name]!;
    const m = /^#(?:x([0-9a-fA-F]{1,6})|([0-9]{1,7}))$/.exec(name);
    if (!m) throw invalid(`info.xml: unknown entity '&${name};' in <${where}>`);
    const cp = m[1] !== undefined ? parseInt(m[1], 16) : parseInt(m[2]!, 10);
    const valid = cp === 0x09 || cp === 0x0a || cp === 0x0d || (cp >= 0x20 && cp <= 0xd7ff) || (cp >= 0xe000 && cp <= 0xfffd) || (cp >= 0x10000 && cp <= 0x10ffff);
    if (!valid) throw invalid(`info.xml: character reference '&${name};' in <${where}> is not a valid XML character`);
    return String.fromCodePoint(cp);
  });
}

function assertXmlTextOr(text: string, where: string): void {
  try {
    assertXmlText(text, `<${where}>`);
  } catch (e) {
    throw invalid(`info.xml: ${(e as Error).message}`);
  }
}

type Node = Record<string, unknown>;

/** The single element name of a preserveOrder node, or '#text'/'#cdata'/'#comment'. */
function nodeName(node: Node): string {
  const names = Object.keys(node).filter((k) => k !== ':@');
  if (names.length !== 1) throw invalid('info.xml: malformed node');
  return names[0]!;
}

function children(node: Node, name: string): Node[] {
  const c = node[name];
  if (!Array.isArray(c)) throw invalid(`info.xml: malformed <${name}>`);
  return c as Node[];
}

/** Text content of a leaf element: text and CDATA only, no child elements, no attributes. */
function leafText(node: Node, name: string): string {
  if (node[':@']) throw invalid(`info.xml: <${name}> must not have attributes`);
  let out = '';
  for (const child of children(node, name)) {
    const n = nodeName(child);
    if (n === '#text') out += decodeText(String(child['#text']), name);
    else if (n === '#cdata') {
      for (const t of children(child, '#cdata')) {
        const text = String((t as Node)['#text'] ?? '').replace(/\r\n?/g, '\n');
        assertXmlTextOr(text, name);
        out += text;
      }
    } else if (n !== '#comment') throw invalid(`info.xml: <${name}> must contain text, not <${n}>`);
  }
  return out;
}

/** Child elements of a container, ignoring comments and whitespace; other text is an error. */
function elements(node: Node, name: string): { name: string; node: Node }[] {
  if (node[':@']) throw invalid(`info.xml: <${name}> must not have attributes`);
  const out: { name: string; node: Node }[] = [];
  for (const child of children(node, name)) {
    const n = nodeName(child);
    if (n === '#comment') continue;
    if (n === '#text' || n === '#cdata') {
      if (n === '#text' && /^[ \t\r\n]*$/.test(String(child['#text']))) continue;
      throw invalid(`info.xml: unexpected text inside <${name}>`);
    }
    out.push({ name: n, node: child });
  }
  return out;
}

function parseNum(text: string, what: string, min: number): number {
  const t = text.trim();
  if (!/^\d{1,10}$/.test(t) || Number(t) < min || Number(t) > MAX_UINT) throw invalid(`info.xml: <${what}> is not a valid number: '${text}'`);
  return Number(t);
}

const parser = new XMLParser({
  preserveOrder: true,
  trimValues: false,
  parseTagValue: false,
  parseAttributeValue: false,
  processEntities: false,
  ignoreAttributes: false,
  ignoreDeclaration: false,
  ignorePiTags: false,
  commentPropName: '#comment',
  cdataPropName: '#cdata',
});

/**
 * Parses an info.xml. Pure. Throws INPUT_INVALID (with the reason) for anything that is not a
 * well-formed snapper info.xml: wrong root element, DOCTYPE or entity declarations, attributes,
 * unknown or repeated elements, a missing or invalid type/num/date, pre_num missing on a post
 * snapshot, userdata without a key, or more than {@link MAX_INFO_XML_BYTES}.
 */
export function parseInfoXml(xml: string): SnapshotInfo {
  if (Buffer.byteLength(xml, 'utf8') > MAX_INFO_XML_BYTES) throw invalid(`info.xml is larger than ${MAX_INFO_XML_BYTES} bytes`);
  if (/<!DOCTYPE|<!ENTITY/i.test(xml)) throw invalid('info.xml must not contain a DOCTYPE or entity declarations');
  const valid = XMLValidator.validate(xml);
  if (valid !== true) throw invalid(`info.xml is not well-formed XML: ${valid.err.msg} (line ${valid.err.line})`);
  const top = parser.parse(xml) as Node[];
  let root: Node | undefined;
  for (const node of top) {
    const n = nodeName(node);
    if (n === '?xml' || n === '#comment' || (n === '#text' && /^\s*$/.test(String(node['#text'])))) continue;
    if (n !== 'snapshot' || root) throw invalid(`info.xml: the document must be one <snapshot> element, found <${n}>`);
    root = node;
  }
  if (!root) throw invalid('info.xml: no <snapshot> element');

  const single = new Map<string, string>();
  // A Map, not an object: keys like '__proto__' or 'toString' are plain keys here.
  const userdata = new Map<string, string>();
  for (const { name, node } of elements(root, 'snapshot')) {
    if (name === 'userdata') {
      let key: string | undefined;
      let value: string | undefined;
      for (const item of elements(node, 'userdata')) {
        if (item.name === 'key' && key === undefined) key = leafText(item.node, 'key');
        else if (item.name === 'value' && value === undefined) value = leafText(item.node, 'value');
        else throw invalid(`info.xml: unexpected <${item.name}> in <userdata>`);
      }
      if (!key) throw invalid('info.xml: <userdata> without a key');
      if (userdata.has(key)) throw invalid(`info.xml: userdata key '${key}' appears twice`);
      userdata.set(key, value ?? '');
    } else if (['type', 'num', 'date', 'uid', 'pre_num', 'description', 'cleanup'].includes(name)) {
      if (single.has(name)) throw invalid(`info.xml: <${name}> appears twice`);
      single.set(name, leafText(node, name));
    } else {
      throw invalid(`info.xml: unknown element <${name}>`);
    }
  }

  const type = single.get('type');
  if (type !== 'single' && type !== 'pre' && type !== 'post') throw invalid(`info.xml: <type> must be single, pre or post, not '${type ?? ''}'`);
  const numText = single.get('num');
  if (numText === undefined) throw invalid('info.xml: no <num>');
  const dateText = single.get('date');
  if (dateText === undefined) throw invalid('info.xml: no <date>');
  const date = parseSnapperDate(dateText.trim());
  if (!date) throw invalid(`info.xml: <date> is not 'YYYY-MM-DD HH:MM:SS': '${dateText}'`);
  const info: SnapshotInfo = {
    num: parseNum(numText, 'num', 1),
    type,
    date,
    description: single.get('description') ?? '',
    cleanup: single.get('cleanup') ?? '',
    userdata: Object.fromEntries(userdata),
  };
  const uid = single.get('uid');
  if (uid !== undefined) info.uid = parseNum(uid, 'uid', 0);
  const preNum = single.get('pre_num');
  if (preNum !== undefined) info.preNum = parseNum(preNum, 'pre_num', 1);
  if (type === 'post' && info.preNum === undefined) throw invalid('info.xml: a post snapshot needs <pre_num>');
  return info;
}

/**
 * Writes `dir/info.xml` atomically, as snapper does: a temp file in the same directory
 * (mode 0600, like snapper's mktemp), fsync, rename over info.xml, fsync the directory. A crash
 * leaves either the old or the new file, never an empty one. Creates `dir` if missing.
 */
export async function writeInfoXmlAtomic(dir: string, info: SnapshotInfo): Promise<void> {
  await writeFileAtomic(join(dir, 'info.xml'), renderInfoXml(info), { mode: 0o600 });
}
