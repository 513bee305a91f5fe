/**
 * The order of image versions. Pure: no I/O.
 *
 * A version is a manifest token (`[A-Za-z0-9._+:~@-]`, see manifest.ts) compared the way
 * dpkg compares Debian versions (deb-version(7)), which is also what `sort -V` users expect:
 * `[epoch:]upstream[-revision]`; within each part, alternating runs of non-digits (compared
 * character by character, letters before non-letters, `~` before everything, even the end)
 * and digits (compared as integers). So `1.9 < 1.10`, `2.0~rc1 < 2.0 < 2.0+fix1 < 2.0.1`,
 * `1:0.1 > 9.9`. `@` is treated like the other non-letters.
 *
 * tiu create rejects versions that do not start with a digit (after an optional epoch), so
 * that "latest" or "release" can never be compared by accident.
 */

export interface ParsedVersion {
  epoch: number;
  upstream: string;
  revision: string;
}

const EPOCH = /^(\d{1,9}):(.+)$/;

/** Splits a version into epoch, upstream and revision, or returns a reason it is not orderable. */
export function parseVersion(v: string): ParsedVersion | string {
  let epoch = 0;
  let rest = v;
  const m = EPOCH.exec(v);
  if (m) {
    epoch = Number(m[1]);
    rest = m[2]!;
  } else if (v.includes(':')) {
    return 'an epoch before ":" must be a number';
  }
  const dash = rest.lastIndexOf('-');
  const upstream = dash > 0 ? rest.slice(0, dash) : rest;
  const revision = dash > 0 ? rest.slice(dash + 1) : '';
  if (!/^[0-9]/.test(upstream)) return 'it must start with a digit (after an optional "N:" epoch)';
  if (dash > 0 && revision === '') return 'it must not end with "-"';
  return { epoch, upstream, revision };
}

/** Throws-free check for builders: undefined when orderable, else the reason. */
export function versionProblem(v: string): string | undefined {
  const p = parseVersion(v);
  return typeof p === 'string' ? p : undefined;
}

function order(c: string | undefined): number {
  if (c === undefined) return 0;
  if (c === '~') return -1;
  if (/[A-Za-z]/.test(c)) return c.charCodeAt(0);
  return c.charCodeAt(0) + 256;
}

/** dpkg's verrevcmp on one part. */
function comparePart(a: string, b: string): number {
  let i = 0;
  let j = 0;
  while (i < a.length || j < b.length) {
    let firstDiff = 0;
    while ((i < a.length && !isDigit(a[i]!)) || (j < b.length && !isDigit(b[j]!))) {
      const ac = i < a.length && !isDigit(a[i]!) ? order(a[i]) : 0;
      const bc = j < b.length && !isDigit(b[j]!) ? order(b[j]) : 0;
      if (ac !== bc) return ac - bc;
      i++;
      j++;
    }
    while (a[i] === '0') i++;
    while (b[j] === '0') j++;
    while (i < a.length && isDigit(a[i]!) && j < b.length && isDigit(b[j]!)) {
      if (!firstDiff) firstDiff = a.charCodeAt(i) - b.charCodeAt(j);
      i++;
      j++;
    }
    if (i < a.length && isDigit(a[i]!)) return 1;
    if (j < b.length && isDigit(b[j]!)) return -1;
    if (firstDiff) return firstDiff;
  }
  return 0;
}

function isDigit(c: string): boolean {
  return c >= '0' && c <= '9';
}

/**
 * Compares two versions: negative if a < b, 0 if equal in order, positive if a > b.
 * Versions that are not orderable (see parseVersion) compare as plain strings after all
 * orderable ones, so a sort never throws; callers that must refuse them check parseVersion.
 */
export function compareVersions(a: string, b: string): number {
  const pa = parseVersion(a);
  const pb = parseVersion(b);
  if (typeof pa === 'string' || typeof pb === 'string') {
    if (typeof pa !== 'string') return -1;
    if (typeof pb !== 'string') return 1;
    return a < b ? -1 : a > b ? 1 : 0;
  }
  if (pa.epoch !== pb.epoch) return pa.epoch - pb.epoch;
  const u = comparePart(pa.upstream, pb.upstream);
  if (u !== 0) return Math.sign(u);
  return Math.sign(comparePart(pa.revision, pb.revision));
}
