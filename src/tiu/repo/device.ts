/**
 * The device's side of repository updates, between the CLI and the pure planner: where its
 * state lives, which channel it follows, what is installed, and fetching a chosen target with
 * tiu's resumable downloader, checked against the target's signed length and sha256.
 */
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { copyFile, mkdir, readFile, stat, unlink } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { join } from 'node:path';
import type { Context } from '../context.ts';
import type { Config } from '../config.ts';
import { TiuError } from '../../core/errors.ts';
import { openDevice } from '../device/open.ts';
import { readRecordedImage } from '../device/state.ts';
import { writeAtomic } from './files.ts';
import { refreshRepository, repoCacheDir, targetUrl, type Refreshed } from './client.ts';
import { imagesFor, CHANNEL_RE, type RepoImage } from './model.ts';
import { phaseBucket } from './phasing.ts';
import { planUpdate, type Installed, type Plan } from './planner.ts';

/** A path of the system at `root` (the configured paths are the running system's). */
export function under(root: string, p: string): string {
  return root === '/' ? p : `${root.replace(/\/+$/, '')}/${p.replace(/^\/+/, '')}`;
}

export interface ChannelState {
  channel: string;
  /** When `tiu channel set` chose it (ISO). */
  since: string;
  previous?: string;
}

const channelFile = (root: string, cfg: Config) => under(root, join(cfg.stateDir, 'channel.json'));

/** The channel explicitly chosen with `tiu channel set`, if any. */
export async function readChannelState(root: string, cfg: Config): Promise<ChannelState | undefined> {
  const text = await readFile(channelFile(root, cfg), 'utf8').catch(() => undefined);
  if (text === undefined) return undefined;
  try {
    const j = JSON.parse(text);
    if (typeof j.channel === 'string' && CHANNEL_RE.test(j.channel) && typeof j.since === 'string') return j as ChannelState;
  } catch {}
  throw new TiuError('CONFIG_INVALID', `${channelFile(root, cfg)} is damaged`, { hint: 'choose the channel again: tiu channel set NAME' });
}

/** Records an explicit channel choice (atomic write). */
export async function writeChannelState(root: string, cfg: Config, channel: string, now = new Date()): Promise<ChannelState> {
  if (!CHANNEL_RE.test(channel)) throw new TiuError('USAGE', `'${channel}' is not a channel name`, { hint: 'like stable, candidate, beta, edge' });
  const old = await readChannelState(root, cfg).catch(() => undefined);
  const s: ChannelState = { channel, since: now.toISOString(), ...(old ? { previous: old.channel } : {}) };
  await writeAtomic(channelFile(root, cfg), JSON.stringify(s, null, 2) + '\n');
  return s;
}

/** The channel to follow: --channel, then `tiu channel set`, then tiu.conf, then stable. */
export async function effectiveChannel(root: string, cfg: Config, flag: string | undefined): Promise<{ channel: string; from: 'option' | 'device state' | 'configuration' }> {
  if (flag !== undefined) {
    if (!CHANNEL_RE.test(flag)) throw new TiuError('USAGE', `'${flag}' is not a channel name`);
    return { channel: flag, from: 'option' };
  }
  const s = await readChannelState(root, cfg);
  if (s) return { channel: s.channel, from: 'device state' };
  return { channel: cfg.channel, from: 'configuration' };
}

/** /etc/machine-id of the system (empty when missing: such devices share one bucket). */
export async function machineId(root: string): Promise<string> {
  return ((await readFile(under(root, '/etc/machine-id'), 'utf8').catch(() => '')) || '').trim();
}

export interface InstalledImage extends Installed {
  compatible: string;
  snapshot: number;
}

/** The image the default snapshot was made from (what an update starts from). */
export async function installedImage(ctx: Context, root: string): Promise<InstalledImage | undefined> {
  await using dev = await openDevice(ctx.sys, root, { snapper: ctx.config.snapper });
  const n = await dev.store.getDefault();
  if (n === undefined) return undefined;
  const rec = await readRecordedImage(dev.snapshotDir(n));
  if (!rec) return undefined;
  return { version: rec.manifest.version, index: rec.manifest.index.sha256, compatible: rec.manifest.compatible, snapshot: n };
}

/** The trusted root file: [update] repository_root, else /etc/tiu/…, else /usr/lib/tiu/… */
export async function trustedRootFile(root: string, cfg: Config): Promise<string> {
  if (cfg.repositoryRoot) return under(root, cfg.repositoryRoot);
  const etc = under(root, '/etc/tiu/repository-root.json');
  return (await stat(etc).then(() => true, () => false)) ? etc : under(root, '/usr/lib/tiu/repository-root.json');
}

/** Target kinds this client can apply; others are not candidates. */
export const APPLICABLE_KINDS: readonly RepoImage['kind'][] = ['full', 'delta'];

/**
 * What `tiu update` fetches for a plan: the chosen path when it is one file (a full image, or
 * one delta whose base is the installed image), and the full image of the same build as the
 * fallback for any delta failure (a chain of deltas is not applied yet: its full image is taken).
 */
export function targetChoice(plan: Plan): { first: RepoImage; fallback?: RepoImage } | undefined {
  const chosen = plan.chosen;
  if (!chosen) return undefined;
  const full = plan.paths.find((p) => p.images.length === 1 && p.last.kind === 'full' && p.last.build === chosen.last.build && p.admitted)?.last;
  if (chosen.images.length === 1 && chosen.last.kind === 'full') return { first: chosen.last };
  if (chosen.images.length === 1 && chosen.last.base === plan.installed?.index) return full ? { first: chosen.last, fallback: full } : { first: chosen.last };
  return full ? { first: full } : undefined;
}

export interface RepoCheck {
  repository: string;
  channel: string;
  channelFrom: string;
  compatible: string;
  installed: InstalledImage | undefined;
  machineIdKnown: boolean;
  refreshed: Refreshed;
  plan: Plan;
}

/** Refreshes the metadata and plans the update for this device. Changes nothing but the metadata cache. */
export async function checkRepository(ctx: Context, o: { root: string; repository?: string; channel?: string; allowDowngrade?: boolean }): Promise<RepoCheck> {
  const repository = o.repository ?? ctx.config.repository;
  if (!repository) throw new TiuError('USAGE', 'no update repository: pass --repository URL', { hint: 'or set [update] repository in /etc/tiu/tiu.conf' });
  const { channel, from } = await effectiveChannel(o.root, ctx.config, o.channel);
  const installed = await installedImage(ctx, o.root);
  const compatible = ctx.config.compatible ?? installed?.compatible;
  if (!compatible) throw new TiuError('ROOT_LAYOUT', `${o.root} has no image installed by tiu and no [device] compatible`, { hint: 'set [device] compatible in /etc/tiu/tiu.conf' });
  const refreshed = await refreshRepository({
    url: repository, trustedRootFile: await trustedRootFile(o.root, ctx.config), cacheDir: repoCacheDir(under(o.root, ctx.config.stateDir), repository), log: ctx.log, compatible, sys: ctx.sys,
  });
  const id = await machineId(o.root);
  if (!id) ctx.log.warn('no /etc/machine-id: phasing puts this device in the bucket of every device without one');
  const usable = imagesFor(refreshed.images, compatible, channel).filter((i) => APPLICABLE_KINDS.includes(i.kind));
  const plan = planUpdate({ images: usable, channel, installed, bucket: (v) => phaseBucket(id, v), allowDowngrade: o.allowDowngrade });
  return { repository, channel, channelFrom: from, compatible, installed, machineIdKnown: id !== '', refreshed, plan };
}

async function sha256File(path: string): Promise<string> {
  const h = createHash('sha256');
  for await (const c of createReadStream(path)) h.update(c as Buffer);
  return h.digest('hex');
}

/**
 * Fetches one target into the download cache and checks its length and sha256 against the
 * signed target; a file that does not match is deleted (a rerun starts over, it does not resume
 * bad bytes) and REPO_TARGET is thrown.
 */
export async function fetchTarget(ctx: Context, img: RepoImage, o: { targetsBase: string; cacheDir: string; rateLimit?: number; onProgress?: (done: number, total: number | undefined) => void; signal?: AbortSignal }): Promise<string> {
  const url = targetUrl(o.targetsBase, img);
  let file: string;
  if (url.startsWith('file://')) {
    const src = fileURLToPath(url);
    const st = await stat(src).catch(() => undefined);
    if (!st?.isFile()) throw new TiuError('REPO_UNAVAILABLE', `target ${img.path} is missing in the repository (${src})`, { hint: 'the repository copy is incomplete' });
    if (st.size !== img.length) throw new TiuError('REPO_TARGET', `target ${img.path} is ${st.size} bytes, the signed metadata says ${img.length}`, { hint: 'the repository copy is damaged or tampered with' });
    await mkdir(o.cacheDir, { recursive: true, mode: 0o700 });
    file = join(o.cacheDir, `${img.sha256}.${img.path.split('/').pop()}`);
    await copyFile(src, file);
  } else {
    // The downloader enforces the signed length (cap and exact size), checks the signed sha256
    // and deletes what does not match (with its cache metadata), so no bad byte is resumed from.
    const dl = ctx.config.download;
    // Loaded here: `tiu check` never downloads a target and should not pay for the downloader.
    const { download } = await import('../device/download.ts');
    try {
      file = await download({
        url, cacheDir: o.cacheDir, log: ctx.log, sys: ctx.sys, rateLimit: o.rateLimit ?? (dl.limitRate || undefined), onProgress: o.onProgress, signal: o.signal,
        expectedSize: img.length, expectedSha256: img.sha256, stallSeconds: dl.stallTimeout, deadlineSeconds: dl.timeout, retries: dl.retries,
      });
    } catch (e) {
      if (e instanceof TiuError && e.code === 'DOWNLOAD_TOO_LARGE') {
        throw new TiuError('REPO_TOO_LARGE', `target ${img.path}: the server sends more than the signed ${img.length} bytes`, { hint: 'the server or mirror sends other bytes: nothing was installed', cause: e });
      }
      if (e instanceof TiuError && e.code === 'DOWNLOAD_MISMATCH') {
        throw new TiuError('REPO_TARGET', `target ${img.path} does not match the signed metadata (${e.message})`, { hint: 'the server or mirror sent other bytes: nothing was installed; try again or another mirror', cause: e });
      }
      throw e;
    }
  }
  const size = (await stat(file)).size;
  const digest = size === img.length ? await sha256File(file) : undefined;
  if (digest !== img.sha256) {
    await unlink(file).catch(() => {});
    throw new TiuError('REPO_TARGET', `target ${img.path} does not match the signed metadata (${size === img.length ? 'sha256 differs' : `${size} bytes, expected ${img.length}`})`, { hint: 'the server or mirror sent other bytes: nothing was installed; try again or another mirror' });
  }
  return file;
}
