/**
 * Device side: applying v2 (an update) and v1 again (an identical image) onto a device that runs
 * v1, with `tiu extract` and with the baselines, each run on a fresh copy of one golden device.
 */
import { mkdir, readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { addRun, errorText, failRow, newRow, rotate, tiuArgv, type BenchContext } from '../lib/context.ts';
import { attachNewBtrfs, deviceWrittenBytes, detach, exclusiveBytes, openDevice, usedBytes, type Device } from '../lib/device.ts';
import { mountImage } from '../lib/image.ts';
import { runTimed, type Step } from '../lib/measure.ts';
import type { Sample } from '../lib/stats.ts';
import { diffContent, scanTree } from '../lib/treediff.ts';
import { breakdown, type StampedLine } from '../lib/breakdown.ts';
import type { DeviceCase, Row } from '../lib/types.ts';
import { newChunks, OSTREE_REFS, prepareCasync, prepareOstree, storeChunks, treeBytes, type CasyncSetup } from './baselines.ts';

interface Procedure {
  id: string;
  label: string;
  note?: string;
  /** Untimed preparation on the fresh device. */
  prepare?(dev: Device): Promise<void>;
  steps(dev: Device): Step[];
  /** What the run created, for `btrfs filesystem du` (undefined: not applicable). */
  created(dev: Device): Promise<string | undefined>;
}

interface Inputs {
  archive: string;
  image: string;
  casync?: { idx: string; store: string };
  ostreeRef: string;
}

const s1 = (d: Device) => join(d.root, '.snapshots/1/snapshot');
const s2 = (d: Device) => join(d.root, '.snapshots/2/snapshot');
const mkdirS2 = async (d: Device) => void (await mkdir(join(d.root, '.snapshots/2'), { recursive: true }));

/** The newest numbered snapshot under <root>/.snapshots. */
async function newestSnapshot(d: Device): Promise<string | undefined> {
  const nums = (await readdir(join(d.root, '.snapshots'))).filter((n) => /^\d+$/.test(n)).map(Number);
  return nums.length ? join(d.root, '.snapshots', String(Math.max(...nums)), 'snapshot') : undefined;
}

export const RSYNC_BASE = ['-aHAX', '--numeric-ids', '--delete'];

/** The procedures measured for one case. */
function procedures(ctx: BenchContext, inp: Inputs, etcNested: boolean, ostreeSrc: string | undefined): Procedure[] {
  const snapshotSteps = (d: Device): Step[] => [
    { argv: ['btrfs', 'subvolume', 'snapshot', s1(d), s2(d)] },
    // A snapshot shows a nested subvolume as an empty directory: snapshot /etc too, as tiu does.
    ...(etcNested ? [{ argv: ['rmdir', join(s2(d), 'etc')] }, { argv: ['btrfs', 'subvolume', 'snapshot', join(s1(d), 'etc'), join(s2(d), 'etc')] }] : []),
  ];
  const rsync = (id: string, label: string, extra: string[]): Procedure => ({
    id,
    label,
    prepare: mkdirS2,
    steps: (d) => [...snapshotSteps(d), { argv: ['rsync', ...RSYNC_BASE, ...extra, inp.image + '/', s2(d) + '/'] }, { argv: ['sync', '-f', s2(d)] }],
    created: async (d) => s2(d),
  });
  const procs: Procedure[] = [
    {
      id: 'snapshot-only',
      label: 'btrfs subvolume snapshot only (floor: the snapshot itself)',
      prepare: mkdirS2,
      steps: (d) => [...snapshotSteps(d), { argv: ['sync', '-f', s2(d)] }],
      created: async (d) => s2(d),
    },
    {
      id: 'tiu',
      label: 'tiu extract',
      steps: (d) => [{ argv: tiuArgv(ctx, '-q', 'extract', inp.archive, '--root', d.root, '--keyring', ctx.keys.keyring) }],
      created: newestSnapshot,
    },
    rsync('rsync', 'snapshot + rsync -aHAX --delete', []),
    rsync('rsync-inplace', 'snapshot + rsync -aHAX --delete --inplace --no-whole-file', ['--inplace', '--no-whole-file']),
    rsync('rsync-checksum', 'snapshot + rsync -aHAX --delete --checksum', ['--checksum']),
    rsync('rsync-inplace-checksum', 'snapshot + rsync … --inplace --no-whole-file --checksum', ['--inplace', '--no-whole-file', '--checksum']),
  ];
  if (inp.casync) {
    const c = inp.casync;
    procs.push({
      id: 'casync',
      label: 'casync extract --seed=<snapshot 1>',
      note: 'into a subdirectory of a new subvolume',
      prepare: mkdirS2,
      steps: (d) => [
        { argv: ['btrfs', 'subvolume', 'create', s2(d)] },
        { argv: ['casync', 'extract', `--store=${c.store}`, `--seed=${s1(d)}`, c.idx, join(s2(d), 'tree')] },
        { argv: ['sync', '-f', s2(d)] },
      ],
      created: async (d) => s2(d),
    });
  }
  if (ostreeSrc) {
    const repo = (d: Device) => join(d.top, 'ostree/repo');
    procs.push({
      id: 'ostree',
      label: 'ostree pull-local + checkout',
      note: 'btrfs exclusive not applicable: the checkout hardlinks into the repo',
      steps: (d) => [
        { argv: ['ostree', 'pull-local', `--repo=${repo(d)}`, ostreeSrc, inp.ostreeRef] },
        { argv: ['ostree', 'checkout', `--repo=${repo(d)}`, inp.ostreeRef, join(d.top, 'ostree/checkouts/new')] },
        { argv: ['sync', '-f', repo(d)] },
      ],
      created: async () => undefined,
    });
  }
  return procs;
}

/**
 * `tiu status` (the whole process, the bundle) on a device holding v1, measured 5 × BENCH_RUNS
 * times after one untimed run: what an admin (and every login banner or prompt) waits for.
 */
async function measureStatus(ctx: BenchContext, golden: string, dir: string): Promise<void> {
  const row = newRow('tiu-status', 'tiu status (whole process)');
  ctx.report.device.status = row;
  try {
    await using dev = await openDevice(ctx.sys, golden, dir);
    const step = { argv: tiuArgv(ctx, 'status', '--root', dev.root) };
    await runTimed(ctx.sys, [step], ctx.timeFile);
    for (let i = 0; i < 5 * ctx.runs; i++) addRun(row, (await runTimed(ctx.sys, [step], ctx.timeFile)).sample);
  } catch (e) {
    failRow(row, e);
  }
}

/** One measured run on a fresh device. */
async function measureOnce(ctx: BenchContext, golden: string, dir: string, p: Procedure): Promise<Sample> {
  await using dev = await openDevice(ctx.sys, golden, dir);
  await p.prepare?.(dev);
  const used0 = await usedBytes(ctx.sys, dev.top);
  const w0 = await deviceWrittenBytes(dev.loop);
  const { sample } = await runTimed(ctx.sys, p.steps(dev), ctx.timeFile);
  sample.growthBytes = (await usedBytes(ctx.sys, dev.top)) - used0;
  sample.devWriteBytes = (await deviceWrittenBytes(dev.loop)) - w0;
  const created = await p.created(dev);
  if (created) sample.exclusiveBytes = await exclusiveBytes(ctx.sys, created);
  return sample;
}

/** The golden device: v1 installed by `tiu install`, plus an OSTree bare repo holding v1 and a checkout. */
async function makeGolden(ctx: BenchContext, dir: string, v1Tiu: string, ostreeSrc: string | undefined): Promise<{ file: string; etcNested: boolean; ostreeOk: boolean; note?: string }> {
  const file = join(dir, 'golden.img');
  const mnt = join(dir, 'golden-top');
  const loop = await attachNewBtrfs(ctx.sys, file, process.env.BENCH_DEVICE_SIZE ?? '8G', mnt);
  try {
    const [node, ...args] = tiuArgv(ctx, '-q', 'install', v1Tiu, '--root', mnt, '--keyring', ctx.keys.keyring);
    await ctx.sys.run(node!, args);
    const etcNested = (await ctx.sys.run('btrfs', ['subvolume', 'show', join(mnt, '@/.snapshots/1/snapshot/etc')], { allowFailure: true })).exitCode === 0;
    let ostreeOk = false;
    let note: string | undefined;
    if (ostreeSrc) {
      try {
        const repo = join(mnt, 'ostree/repo');
        await mkdir(repo, { recursive: true });
        await mkdir(join(mnt, 'ostree/checkouts'), { recursive: true });
        await ctx.sys.run('ostree', ['init', `--repo=${repo}`, '--mode=bare']);
        await ctx.sys.run('ostree', ['pull-local', `--repo=${repo}`, ostreeSrc, OSTREE_REFS.v1]);
        await ctx.sys.run('ostree', ['checkout', `--repo=${repo}`, OSTREE_REFS.v1, join(mnt, 'ostree/checkouts/v1')]);
        ostreeOk = true;
      } catch (e) {
        note = `ostree device repo: ${errorText(e)}`;
      }
    }
    return { file, etcNested, ostreeOk, ...(note ? { note } : {}) };
  } finally {
    await ctx.sys.run('umount', [mnt], { allowFailure: true });
    await detach(ctx.sys, loop);
  }
}

/** Tries casync extract into the root of a new subvolume (known to fail); returns a note. */
async function probeCasyncRoot(ctx: BenchContext, golden: string, dir: string, c: CasyncSetup): Promise<string> {
  await using dev = await openDevice(ctx.sys, golden, dir);
  await mkdirS2(dev);
  await ctx.sys.run('btrfs', ['subvolume', 'create', s2(dev)]);
  const r = await ctx.sys.run('casync', ['extract', `--store=${c.v2.store}`, `--seed=${s1(dev)}`, c.v2.idx, s2(dev)], { allowFailure: true });
  return r.exitCode === 0
    ? 'casync extract into the root of a new subvolume worked here; it is measured into a subdirectory all the same.'
    : `casync extract into the root of a new subvolume fails (exit ${r.exitCode}: ${(r.stderr.trim().split('\n').pop() ?? '').slice(0, 200)}), so it extracts into <new subvolume>/tree.`;
}

/** One untimed `tiu --debug extract` with every stderr line stamped, for the time breakdown. */
async function diagnoseTiuExtract(ctx: BenchContext, golden: string, dir: string, archive: string): Promise<void> {
  await using dev = await openDevice(ctx.sys, golden, dir);
  const lines: StampedLine[] = [];
  const t0 = performance.now();
  const [node, ...args] = tiuArgv(ctx, '--debug', 'extract', archive, '--root', dev.root, '--keyring', ctx.keys.keyring);
  await ctx.sys.run(node!, args, { onLine: (line) => lines.push({ t: (performance.now() - t0) / 1000, line }) });
  ctx.report.device.breakdown = breakdown(lines, (performance.now() - t0) / 1000);
}

export async function benchDevice(ctx: BenchContext, v1Tiu: string, v2Tiu: string): Promise<void> {
  const dir = join(ctx.work, 'device');
  await mkdir(dir, { recursive: true });
  const notes = ctx.report.device.notes;
  await using img1 = await mountImage(ctx.sys, v1Tiu, join(dir, 'img-v1'));
  await using img2 = await mountImage(ctx.sys, v2Tiu, join(dir, 'img-v2'));

  ctx.say('device: sha256 of every file of both images (content-changed bytes)');
  const scan1 = await scanTree(img1.dir);
  const diff = diffContent(scan1, await scanTree(img2.dir));
  ctx.report.corpus.diff = diff;

  ctx.say('device: casync indexes and stores, OSTree repo (untimed)');
  let casync: CasyncSetup | undefined;
  try {
    casync = await prepareCasync(ctx, join(dir, 'casync'), img1.dir, img2.dir);
  } catch (e) {
    ctx.report.notMeasured.push({ what: 'casync extract', reason: `casync make failed: ${errorText(e)}` });
  }
  let ostreeSrc: string | undefined;
  try {
    ostreeSrc = await prepareOstree(ctx, join(dir, 'ostree-src'), img1.dir, img2.dir);
  } catch (e) {
    ctx.report.notMeasured.push({ what: 'ostree pull-local + checkout', reason: `ostree commit failed: ${errorText(e)}` });
  }

  ctx.say('device: golden device (tiu install v1, ostree repo with v1)');
  const golden = await makeGolden(ctx, dir, v1Tiu, ostreeSrc);
  if (ostreeSrc && !golden.ostreeOk) {
    ctx.report.notMeasured.push({ what: 'ostree pull-local + checkout', reason: golden.note ?? 'device repo setup failed' });
    ostreeSrc = undefined;
  }
  notes.push(
    `Every run starts from a fresh copy of one golden loop-file btrfs (${process.env.BENCH_DEVICE_SIZE ?? '8G'}, sparse, in ${dir}): v1 installed by \`tiu install\` (snapshot 1${golden.etcNested ? ', /etc a nested subvolume' : ''}) and an OSTree bare repo holding v1 with a checkout of it. It is mounted like a running system (default subvolume at R, @/.snapshots at R/.snapshots, @/var at R/var) and the top level at T.`,
    'Disk growth (df) = used bytes of the filesystem (statfs, as df) after `btrfs filesystem sync`, after minus before. It includes metadata, which btrfs stores twice (DUP) on this single-device filesystem.',
    'btrfs exclusive = the "Exclusive" column of `btrfs filesystem du -s --raw` of the new snapshot: data extents nothing else shares; no metadata.',
    'Written to device = sectors written of the loop block device (/sys/block/loopN/stat) between the two syncs, ×512: everything the filesystem wrote, metadata and superblocks included.',
    'write_bytes of processes = GNU time "File system outputs" ×512, i.e. the sum of /proc/<pid>/io write_bytes of every process of the run (page-cache bytes the processes dirtied; btrfs metadata is not attributed to them).',
    'Peak RSS = GNU time "Maximum resident set size": the largest single process of the run (for tiu the Node.js process unless a child is larger), not a sum.',
    `rsync baselines: \`btrfs subvolume snapshot\` of snapshot 1${golden.etcNested ? ' and of its nested /etc subvolume (as tiu and transactional-update 5 do)' : ''}, then rsync ${RSYNC_BASE.join(' ')} [variant] from the squashfs image inside the archive, loop-mounted read-only once outside the timing, then \`sync -f\`. --numeric-ids keeps owners from being remapped through the host's user names (correctness, no speed effect). The baselines verify nothing and do not merge /etc; tiu's time includes checking the signature and every verity block of the archive, the /etc merge and its vendor-/etc copy.`,
    'casync: `casync make` of each image tree into its own store, outside the timing; the run creates a new subvolume and extracts with the old snapshot as seed, then `sync -f`.',
    'ostree: an archive-mode repo with both image trees committed, outside the timing (the update server); the run is `ostree pull-local` into the device\'s bare repo (which holds v1) and `ostree checkout` of the new commit (hardlinks), then `sync -f`.',
    'Page cache is warm for every tool (nothing drops caches: the machine is shared); the order of the tools rotates every round.',
  );
  if (casync) {
    try {
      notes.push(await probeCasyncRoot(ctx, golden.file, dir, casync));
    } catch (e) {
      notes.push(`casync root-extraction probe failed to run: ${errorText(e)}`);
    }
  }

  const cases: { c: DeviceCase; inp: Inputs }[] = [
    { c: { id: 'v1-v2', label: 'v1 → v2 (a real Debian security/point update)', changed: diff, rows: [] }, inp: { archive: v2Tiu, image: img2.dir, ostreeRef: OSTREE_REFS.v2, ...(casync ? { casync: casync.v2 } : {}) } },
    { c: { id: 'v1-v1', label: 'v1 → v1 (identical image)', changed: diffContent(scan1, scan1), rows: [] }, inp: { archive: v1Tiu, image: img1.dir, ostreeRef: OSTREE_REFS.v1, ...(casync ? { casync: casync.v1 } : {}) } },
  ];
  const plans = cases.map(({ c, inp }) => {
    const procs = procedures(ctx, inp, golden.etcNested, ostreeSrc);
    c.rows = procs.map((p) => newRow(p.id, p.label, p.note ? { note: p.note } : {}));
    ctx.report.device.cases.push(c);
    return { c, procs };
  });

  for (let i = 0; i < ctx.runs; i++) {
    for (const { c, procs } of plans) {
      for (const p of rotate(procs, i)) {
        const row = c.rows.find((r) => r.id === p.id) as Row;
        if (row.error) continue;
        ctx.say(`device ${i + 1}/${ctx.runs} ${c.id}: ${p.label}`);
        try {
          addRun(row, await measureOnce(ctx, golden.file, dir, p));
        } catch (e) {
          failRow(row, e);
        }
      }
    }
  }

  ctx.say('device: tiu status on the golden device');
  await measureStatus(ctx, golden.file, dir);

  ctx.say('device: one tiu --debug extract v1 -> v2 for the time breakdown (untimed)');
  try {
    await diagnoseTiuExtract(ctx, golden.file, dir, v2Tiu);
  } catch (e) {
    notes.push(`time breakdown of tiu extract failed: ${errorText(e)}`);
  }

  ctx.say('device: delta sizes to beat (casync new chunks, ostree static delta)');
  if (casync) {
    try {
      const n = newChunks(await storeChunks(casync.v1.store), await storeChunks(casync.v2.store));
      Object.assign(ctx.report.deltas, { casyncNewChunks: n.chunks, casyncNewChunkBytes: n.bytes, casyncV2StoreBytes: n.total });
    } catch (e) {
      ctx.report.deltas.errors.push(`casync new chunks: ${errorText(e)}`);
    }
  } else ctx.report.deltas.errors.push('casync new chunks: not measured (casync make failed, see above)');
  if (ostreeSrc) {
    try {
      const { sample } = await runTimed(ctx.sys, [{ argv: ['ostree', 'static-delta', 'generate', `--repo=${ostreeSrc}`, `--from=${OSTREE_REFS.v1}`, `--to=${OSTREE_REFS.v2}`] }], ctx.timeFile);
      ctx.report.deltas.ostreeStaticDeltaBytes = await treeBytes(join(ostreeSrc, 'deltas'));
      ctx.report.deltas.ostreeStaticDeltaS = sample.wallS;
    } catch (e) {
      ctx.report.deltas.errors.push(`ostree static delta: ${errorText(e)}`);
    }
  } else ctx.report.deltas.errors.push('ostree static delta: not measured (no ostree repo, see above)');
  if (!process.env.BENCH_KEEP) await rm(golden.file, { force: true });
}
