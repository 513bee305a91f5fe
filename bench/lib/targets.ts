/**
 * The targets from the issues, judged against a result document. Pure: data in, verdicts out.
 * A target whose inputs are missing is "not measured", with the reason in `measured`.
 */
import { fmtBytes, fmtRatio, fmtS, ratio } from './stats.ts';
import type { BenchReport, Row, Target } from './types.ts';

export const LIMITS = {
  createVsBaseline: 1.05,
  verityVsOpenssl: 0.8,
  /** "Flat": peak RSS on the largest archive at most this many KiB above the one on the smallest (issue #14: 16 MiB). */
  verifyFlatKiB: 16 * 1024,
  extractVsRsyncInplace: 0.8,
  /** "Growth ≈ changed bytes": at most this factor of the content-changed bytes. */
  growthVsChanged: 1.25,
  identicalGrowthBytes: 64 * 1024,
  /** Issue #14: df growth at most this factor of snapshot + rsync --inplace --no-whole-file's. */
  growthVsRsyncInplace: 1.05,
  peakRssKiB: 100 * 1024,
  downloadVsCurl: 0.8,
  repoCheckS: 1,
  statusS: 0.2,
  repoCheckBytes: 64 * 1024,
} as const;

function row(rows: readonly Row[] | undefined, id: string): Row | undefined {
  const r = rows?.find((x) => x.id === id);
  return r && !r.error && r.runs.length ? r : undefined;
}

function why(rows: readonly Row[] | undefined, ...ids: string[]): string {
  for (const id of ids) {
    const r = rows?.find((x) => x.id === id);
    if (!r) return `no measurement of ${id}`;
    if (r.error) return `${id} not measured: ${r.error}`;
  }
  return 'missing input';
}

function judge(name: string, goal: string, ok: boolean | undefined, measured: string): Target {
  return { name, goal, measured, status: ok === undefined ? 'not measured' : ok ? 'met' : 'not met' };
}

const mib = (kib: number | undefined) => (kib === undefined ? '–' : `${(kib / 1024).toFixed(0)} MiB`);

/** Evaluates every target. */
export function evaluateTargets(r: BenchReport): Target[] {
  const t: Target[] = [];

  const create = row(r.build.rows, 'tiu-create');
  const base = row(r.build.rows, 'mksquashfs+veritysetup');
  const cr = ratio(create?.median.wallS, base?.median.wallS);
  t.push(judge('tiu create wall time', `≤ ${LIMITS.createVsBaseline}× (mksquashfs + veritysetup format)`, cr === undefined ? undefined : cr <= LIMITS.createVsBaseline,
    cr === undefined ? why(r.build.rows, 'tiu-create', 'mksquashfs+veritysetup') : `${fmtS(create!.median.wallS)} vs ${fmtS(base!.median.wallS)} = ${fmtRatio(cr, LIMITS.createVsBaseline)}`));

  const hasher = r.verity.rows.find((x) => x.name.startsWith('BlockHasher.digestAll'));
  t.push(judge('verity hashing throughput, one core', `≥ ${LIMITS.verityVsOpenssl * 100}% of openssl speed sha256 (4096-byte blocks)`,
    hasher && r.verity.opensslMBps ? hasher.MBps >= LIMITS.verityVsOpenssl * r.verity.opensslMBps : undefined,
    hasher && r.verity.opensslMBps ? `${hasher.MBps.toFixed(0)} MB/s vs openssl ${r.verity.opensslMBps.toFixed(0)} MB/s = ${hasher.pctOfOpenssl.toFixed(0)}%` : `not measured: ${r.verity.error ?? (r.verity.rows.length ? 'no BlockHasher row in bench/verity-speed.ts output' : 'the verity phase did not run')}`));

  const vrows = r.verify.rows.filter((x) => !x.error && x.runs.length).sort((a, b) => a.archiveBytes - b.archiveBytes);
  const small = vrows[0];
  const large = vrows[vrows.length - 1];
  const grow = small && large && small !== large && small.median.maxRssKiB !== undefined && large.median.maxRssKiB !== undefined
    ? large.median.maxRssKiB - small.median.maxRssKiB : undefined;
  t.push(judge('tiu verify peak memory flat in archive size', `peak RSS on the largest archive ≤ the smallest's + ${mib(LIMITS.verifyFlatKiB)}`, grow === undefined ? undefined : grow <= LIMITS.verifyFlatKiB,
    grow === undefined ? `not measured: ${r.verify.error ?? 'fewer than two archive sizes measured'}` : vrows.map((v) => `${fmtBytes(v.archiveBytes)}: ${mib(v.median.maxRssKiB)}`).join(', ') + ` (+${mib(grow)})`));

  for (const c of r.device.cases) {
    const tiu = row(c.rows, 'tiu');
    const rs = row(c.rows, 'rsync-inplace');
    const er = ratio(tiu?.median.wallS, rs?.median.wallS);
    t.push(judge(`tiu extract wall time, ${c.label}`, `≤ ${LIMITS.extractVsRsyncInplace}× (btrfs snapshot + rsync -aHAX --delete --inplace --no-whole-file)`, er === undefined ? undefined : er <= LIMITS.extractVsRsyncInplace,
      er === undefined ? why(c.rows, 'tiu', 'rsync-inplace') : `${fmtS(tiu!.median.wallS)} vs ${fmtS(rs!.median.wallS)} = ${fmtRatio(er, LIMITS.extractVsRsyncInplace)}`));
  }

  const upd = r.device.cases.find((c) => c.id === 'v1-v2');
  const updTiu = row(upd?.rows, 'tiu');
  const changed = upd?.changed?.changedBytes;
  const gr = ratio(updTiu?.median.growthBytes, changed);
  t.push(judge('disk growth of an update (v1→v2)', `≈ bytes of files whose content changed (≤ ${LIMITS.growthVsChanged}× ${fmtBytes(changed)})`, gr === undefined ? undefined : gr <= LIMITS.growthVsChanged,
    gr === undefined ? (changed === undefined ? `not measured: ${r.corpus.error ?? 'changed bytes not computed'}` : why(upd?.rows, 'tiu')) : `df growth ${fmtBytes(updTiu!.median.growthBytes)} (${fmtRatio(gr, LIMITS.growthVsChanged)}); btrfs exclusive ${fmtBytes(updTiu!.median.exclusiveBytes)}`));

  const same = r.device.cases.find((c) => c.id === 'v1-v1');
  const sameTiu = row(same?.rows, 'tiu');
  const g = sameTiu?.median.growthBytes;
  t.push(judge('disk growth of an identical image (v1→v1)', `≤ ${fmtBytes(LIMITS.identicalGrowthBytes)}`, g === undefined ? undefined : g <= LIMITS.identicalGrowthBytes,
    g === undefined ? why(same?.rows, 'tiu') : `df growth ${fmtBytes(g)}; btrfs exclusive ${fmtBytes(sameTiu!.median.exclusiveBytes)}`));

  // Issue #14: an update grows the disk at most a little more than snapshot + rsync --inplace.
  for (const c of r.device.cases) {
    const tiu = row(c.rows, 'tiu');
    const rs = row(c.rows, 'rsync-inplace');
    const q = ratio(tiu?.median.growthBytes, rs?.median.growthBytes);
    t.push(judge(`disk growth vs rsync --inplace, ${c.label}`, `≤ ${LIMITS.growthVsRsyncInplace}× (btrfs snapshot + rsync -aHAX --delete --inplace --no-whole-file)`, q === undefined ? undefined : q <= LIMITS.growthVsRsyncInplace,
      q === undefined ? why(c.rows, 'tiu', 'rsync-inplace') : `df growth ${fmtBytes(tiu!.median.growthBytes)} vs ${fmtBytes(rs!.median.growthBytes)} = ${fmtRatio(q, LIMITS.growthVsRsyncInplace)}`));
  }

  for (const c of r.device.cases) {
    const tiu = row(c.rows, 'tiu');
    const k = tiu?.median.maxRssKiB;
    t.push(judge(`tiu extract peak memory, ${c.label}`, `≤ ${mib(LIMITS.peakRssKiB)} including Node`, k === undefined ? undefined : k <= LIMITS.peakRssKiB, k === undefined ? why(c.rows, 'tiu') : mib(k)));
  }
  const vmax = vrows.length ? Math.max(...vrows.map((v) => v.median.maxRssKiB ?? 0)) : undefined;
  t.push(judge('tiu verify peak memory', `≤ ${mib(LIMITS.peakRssKiB)} including Node`, vmax === undefined ? undefined : vmax <= LIMITS.peakRssKiB, vmax === undefined ? `not measured: ${r.verify.error ?? 'no verify runs'}` : `${mib(vmax)} (largest over the archive sizes)`));

  const st = r.device.status && !r.device.status.error && r.device.status.runs.length ? r.device.status : undefined;
  t.push(judge('tiu status wall time', `≤ ${LIMITS.statusS} s (whole process, device with one snapshot)`, st ? st.median.wallS! <= LIMITS.statusS : undefined,
    st ? `${fmtS(st.median.wallS)} (CPU ${st.median.cpuS?.toFixed(2)} s, ${mib(st.median.maxRssKiB)})` : `not measured: ${r.device.status?.error ?? r.device.error ?? 'the device phase did not run'}`));

  const dl = r.download?.rows;
  const dTiu = row(dl, 'tiu-download');
  const dCall = row(dl, 'tiu-download-transfer');
  const dCurl = row(dl, 'curl');
  const dBundle = row(dl, 'tiu-download-bundle');
  const dBundleCall = row(dl, 'tiu-download-bundle-transfer');
  const dCurlCall = row(dl, 'curl-call');
  // Throughput ratio = curl's time / tiu's (same bytes); judged on the download() call as a
  // device runs it (bundled; from source where no bundled call was measured) against curl -o
  // timed the same way (started from Node, clock around the spawn; the `curl -o` row where that
  // was not measured). The source call and the whole processes (Node start included) beside it.
  const judged = dBundleCall ?? dCall;
  const dBase = dCurlCall ?? dCurl;
  const tr = ratio(dBase?.median.wallS, judged?.median.wallS);
  const vsRow = (x: Row | undefined) => `${fmtS(x?.median.wallS)}, ${fmtRatio(ratio(dCurl?.median.wallS, x?.median.wallS))}`;
  t.push(judge('download throughput (v2 archive from nginx, 127.0.0.1)', `≥ ${LIMITS.downloadVsCurl}× curl -o (tiu's download() call${judged === dBundleCall ? ', bundled' : ''}${dBase === dCurlCall ? ', both timed around the spawn of curl from Node' : ''})`, tr === undefined ? undefined : tr >= LIMITS.downloadVsCurl,
    tr === undefined ? (r.download?.error ? `not measured: ${r.download.error}` : why(dl, 'tiu-download-transfer', 'curl'))
      : `${fmtS(judged!.median.wallS)} vs ${fmtS(dBase!.median.wallS)} = ${fmtRatio(tr, LIMITS.downloadVsCurl)} of curl's throughput (against the \`curl -o\` row, ${fmtS(dCurl?.median.wallS)} under GNU time: ${judged === dBundleCall ? `bundled call ${vsRow(dBundleCall)}; ` : ''}call from source ${vsRow(dCall)}; whole process with Node's start ${vsRow(dTiu)}; bundled ${vsRow(dBundle)})`));
  // Memory as a device runs it: the bundle (the source run adds type stripping of every module).
  const dMem = dBundle?.median.maxRssKiB !== undefined ? dBundle : dTiu;
  const dk = dMem?.median.maxRssKiB;
  t.push(judge('download peak memory', `≤ ${mib(LIMITS.peakRssKiB)} including Node (bundled)`, dk === undefined ? undefined : dk <= LIMITS.peakRssKiB, dk === undefined ? why(dl, 'tiu-download') : `${mib(dk)}${dMem === dTiu ? ' (source run)' : ` (source run: ${mib(dTiu?.median.maxRssKiB ?? 0)})`}`));

  const rc = r.repoCheck;
  const un = row(rc?.rows, 'tiu-check-unchanged');
  const unBytes = rc?.downloads['tiu-check-unchanged']?.bytes;
  const unWhy = rc?.error ? `not measured: ${rc.error}` : why(rc?.rows, 'tiu-check-unchanged');
  t.push(judge(`tiu check, ${rc?.targets ?? 2000} targets, nothing changed: time`, `≤ ${LIMITS.repoCheckS} s (whole process)`, un ? un.median.wallS! <= LIMITS.repoCheckS : undefined,
    un ? `${fmtS(un.median.wallS)} (CPU ${un.median.cpuS?.toFixed(2)} s)` : unWhy));
  t.push(judge(`tiu check, nothing changed: peak memory`, `≤ ${mib(LIMITS.peakRssKiB)} including Node`, un ? un.median.maxRssKiB! <= LIMITS.peakRssKiB : undefined, un ? mib(un.median.maxRssKiB) : unWhy));
  t.push(judge(`tiu check, nothing changed: metadata downloaded`, `≤ ${fmtBytes(LIMITS.repoCheckBytes)}`, un && unBytes !== undefined ? unBytes <= LIMITS.repoCheckBytes : undefined, un && unBytes !== undefined ? fmtBytes(unBytes) : unWhy));

  const db = r.deltaBytes;
  const dRatio = db?.ostree ? db.tiu / db.ostree : undefined;
  t.push(judge('delta update download (v1→v2)', '≤ 0.5× ostree static-delta on the same trees', dRatio === undefined ? undefined : dRatio <= 0.5,
    dRatio === undefined ? (db ? 'not measured: ostree made no static delta' : 'not measured: the delta phase did not run') : `${fmtBytes(db!.tiu)} vs ${fmtBytes(db!.ostree!)} = ${fmtRatio(dRatio, 0.5)}`));
  const da = r.deltaApply;
  const daRatio = da ? da.delta.wallS / da.full.wallS : undefined;
  t.push(judge('delta apply wall time (v1→v2)', '≤ 1× tiu extract of the full archive (medians, bundle)', daRatio === undefined ? undefined : daRatio <= 1,
    da ? `${fmtS(da.delta.wallS)} vs ${fmtS(da.full.wallS)} = ${fmtRatio(daRatio, 1)}` : 'not measured: the delta phase did not run'));
  t.push(judge('delta apply peak memory (v1→v2)', `≤ ${mib(LIMITS.peakRssKiB)} including Node`, da ? da.delta.rssMiB * 1024 <= LIMITS.peakRssKiB : undefined,
    da ? `${da.delta.rssMiB} MiB (full archive: ${da.full.rssMiB} MiB)` : 'not measured: the delta phase did not run'));
  return t;
}
