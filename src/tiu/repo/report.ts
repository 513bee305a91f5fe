/** Rendering a repository check (`tiu check`, `tiu update`): a stable JSON object and text lines. */
import type { RepoCheck } from './device.ts';
import type { ScoredPath } from './planner.ts';

function pathJson(p: ScoredPath) {
  return {
    images: p.images.map((i) => ({ path: i.path, version: i.version, build: i.build, kind: i.kind, length: i.length, ...(i.base ? { base: i.base } : {}) })),
    version: p.last.version, bytes: p.bytes, reboots: p.reboots, mibAboveSmallest: p.mibAboveSmallest, buildsBelowNewest: p.buildsBelowNewest, score: p.score,
    bucket: p.bucket, phased: p.phased, admitted: p.admitted,
  };
}

/** The `--json` object of `tiu check` (stable keys). */
export function checkJson(c: RepoCheck) {
  return {
    source: 'repository', repository: c.repository, channel: c.channel, channelFrom: c.channelFrom, compatible: c.compatible,
    installed: c.installed ? { version: c.installed.version, index: c.installed.index, snapshot: c.installed.snapshot } : null,
    metadata: { root: c.refreshed.rootVersion, timestamp: c.refreshed.timestampVersion, targets: c.refreshed.targetsVersion },
    machineIdKnown: c.machineIdKnown,
    newest: c.plan.newest ? { version: c.plan.newest.version, build: c.plan.newest.build } : null,
    outcome: c.plan.outcome,
    chosen: c.plan.chosen ? pathJson(c.plan.chosen) : null,
    paths: c.plan.paths.map(pathJson),
  };
}

const OUTCOME: Record<RepoCheck['plan']['outcome'], string> = {
  update: 'update available',
  'up-to-date': 'up to date',
  'phased-out': 'a newer image exists, but its phased rollout does not include this device yet',
  downgrade: 'downgrade (allowed by --allow-downgrade)',
  'downgrade-refused': 'the channel\'s newest image is older than the installed one: refusing to downgrade (--allow-downgrade)',
  'nothing-published': 'nothing published for this device on this channel',
};

export function checkLines(c: RepoCheck): string[] {
  const out = [
    `repository ${c.repository} (root ${c.refreshed.rootVersion}, targets ${c.refreshed.targetsVersion})`,
    `channel ${c.channel} (from ${c.channelFrom}), device ${c.compatible}, installed ${c.installed ? `${c.installed.version} (snapshot ${c.installed.snapshot})` : 'nothing'}`,
    `newest on the channel: ${c.plan.newest ? `${c.plan.newest.version} (build ${c.plan.newest.build})` : 'none'}`,
    `result: ${OUTCOME[c.plan.outcome]}`,
  ];
  if (c.plan.paths.length) out.push('paths (lowest score wins; score = 100×reboots + MiB above smallest + 9001×builds below newest):');
  for (const p of c.plan.paths) {
    const mark = p === c.plan.chosen ? '*' : ' ';
    out.push(` ${mark} ${p.images.map((i) => `${i.kind} ${i.version}`).join(' → ')}: ${p.bytes} bytes, score ${p.score}, phase bucket ${p.bucket} ${p.admitted ? '<' : '≥'} ${p.phased}%${p.admitted ? '' : ' (not yet)'}`);
  }
  return out;
}
