/**
 * Build-side operations on a repository: init, publish, promote, refresh, rotate-key, status.
 * Each reads the newest signed metadata, decides, and commits new metadata (see repository.ts).
 */
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { copyFile, constants, mkdir, readdir, rename, stat } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { Metadata, Root, TargetFile } from '@tufjs/models';
import { TiuError } from '../../core/errors.ts';
import { compareVersions, versionProblem } from '../archive/version-order.ts';
import type { Manifest } from '../archive/manifest.ts';
import { loadRoleKey, loadRootKeys, newRoleKey, signer, keyFile, ROLES, type Role, type RoleKey } from './keys.ts';
import { commitSnapshot, commitTargets, initRepo, loadRepo, repoImages, targetsDir, writeRoot, DEFAULT_EXPIRY, isoExpiry, type Repo } from './repository.ts';
import { CHANNEL_RE, targetPath, type RepoImage, type TiuTarget } from './model.ts';

export async function sha256File(path: string): Promise<string> {
  const h = createHash('sha256');
  for await (const c of createReadStream(path)) h.update(c as Buffer);
  return h.digest('hex');
}

export function checkChannel(name: string): void {
  if (!CHANNEL_RE.test(name)) throw new TiuError('USAGE', `channel '${name}' is not a valid name`, { hint: 'use lowercase letters, digits and -, like stable, candidate, beta, edge' });
}

export function checkPhase(p: number): void {
  if (!Number.isInteger(p) || p < 0 || p > 100) throw new TiuError('USAGE', `--phased must be a whole percentage 0-100, got ${p}`);
}

async function isEmptyOrMissing(dir: string): Promise<boolean> {
  try {
    return (await readdir(dir)).length === 0;
  } catch {
    return true;
  }
}

/** Most root keys `tiu repo init` makes (a root with more is unusual and costs every client). */
export const MAX_ROOT_KEYS = 16;

/**
 * `tiu repo init`: new keys (refusing to overwrite) and the first metadata. `rootKeys` root keys
 * (root.key.pem, root-2.key.pem, …) of which `threshold` must sign every new root version: give
 * them to different people and keep them apart.
 */
export async function init(dir: string, keysDir: string, now = new Date(), o: { rootKeys?: number; threshold?: number } = {}): Promise<Repo> {
  const n = o.rootKeys ?? 1;
  const k = o.threshold ?? 1;
  if (!Number.isInteger(n) || n < 1 || n > MAX_ROOT_KEYS) throw new TiuError('USAGE', `--root-keys must be 1-${MAX_ROOT_KEYS}, got ${o.rootKeys}`);
  if (!Number.isInteger(k) || k < 1 || k > n) throw new TiuError('USAGE', `--threshold must be 1-${n} (the number of root keys), got ${o.threshold}`);
  if (!(await isEmptyOrMissing(join(dir, 'metadata')))) throw new TiuError('REPO_INVALID', `${dir} already holds a repository`, { hint: 'use another directory, or tiu repo rotate-key to change keys' });
  const files = [...ROLES.map((r) => keyFile(keysDir, r)), ...Array.from({ length: n - 1 }, (_, i) => keyFile(keysDir, 'root', i + 2))];
  for (const f of files) {
    if (await stat(f).then(() => true, () => false)) throw new TiuError('REPO_INVALID', `${f} exists: refusing to overwrite a key`, { hint: 'use another --keys directory' });
  }
  await mkdir(keysDir, { recursive: true, mode: 0o700 });
  const keys = {} as Record<Role, RoleKey>;
  for (const r of ROLES) keys[r] = await newRoleKey(keysDir, r);
  const rootKeys = [keys.root];
  for (let i = 2; i <= n; i++) rootKeys.push(await newRoleKey(keysDir, 'root', i));
  await mkdir(targetsDir(dir), { recursive: true });
  return initRepo(dir, keys, now, { rootKeys, threshold: k });
}

/**
 * The root keys in `keysDir` that the current root trusts; REPO_INVALID when fewer than its
 * threshold are there (a new root signed by fewer would be rejected by every device).
 */
async function signingRootKeys(repo: Repo, keysDir: string): Promise<{ n: number; key: RoleKey }[]> {
  const role = repo.root.signed.roles.root!;
  const have = (await loadRootKeys(keysDir)).filter((k) => role.keyIDs.includes(k.key.key.keyID));
  if (have.length < role.threshold) {
    throw new TiuError('REPO_INVALID', `root version ${repo.root.signed.version} needs ${role.threshold} of its ${role.keyIDs.length} root keys, ${keysDir} holds ${have.length}`, { hint: 'bring the other root key holders\' root-N.key.pem files into the key directory for this operation' });
  }
  return have;
}

function targetFileOf(img: RepoImage): TargetFile {
  const { path, length, sha256, ...tiu } = img;
  return new TargetFile({ path, length, hashes: { sha256 }, unrecognizedFields: { custom: { tiu } } });
}

function targetMap(images: readonly RepoImage[]): Record<string, TargetFile> {
  return Object.fromEntries(images.map((i) => [i.path, targetFileOf(i)]));
}

/** Where a published target's file is stored in the repository (hash-prefixed name). */
export function storedTargetFile(dir: string, img: { path: string; sha256: string }): string {
  return join(targetsDir(dir), dirname(img.path), `${img.sha256}.${basename(img.path)}`);
}

async function onlineKeys(keysDir: string) {
  return { snapshot: await loadRoleKey(keysDir, 'snapshot'), timestamp: await loadRoleKey(keysDir, 'timestamp') };
}

export interface PublishOptions {
  dir: string;
  keysDir: string;
  archive: string;
  /** The archive's manifest, already verified against the keyring by the caller. */
  manifest: Manifest;
  channel: string;
  phased: number;
  kind?: 'full' | 'delta';
  base?: string;
  now?: Date;
}

/**
 * `tiu publish`: copies the archive into targets/ (hash-prefixed name) and signs a new targets
 * entry. Refuses an unorderable version and one not newer than every version already
 * published for the same device, so build numbers follow version order.
 */
export async function publish(o: PublishOptions): Promise<RepoImage> {
  const now = o.now ?? new Date();
  checkChannel(o.channel);
  checkPhase(o.phased);
  const m = o.manifest;
  const problem = versionProblem(m.version);
  if (problem) throw new TiuError('REPO_INVALID', `version '${m.version}' cannot be ordered: ${problem}`, { hint: 'rebuild the archive with a version like 2026.12.1' });
  const repo = await loadRepo(o.dir);
  const k = { targets: await loadRoleKey(o.keysDir, 'targets'), ...(await onlineKeys(o.keysDir)) };
  const images = repoImages(repo);
  const same = images.filter((i) => i.compatible === m.compatible);
  const kind = o.kind ?? 'full';
  const dup = same.find((i) => i.version === m.version && i.kind === kind && i.base === o.base);
  if (dup) throw new TiuError('REPO_INVALID', `${m.compatible} ${m.version} is already published (build ${dup.build})`, { hint: 'publish a new version, or promote this one to another channel' });
  const newer = kind === 'full' ? same.find((i) => i.kind === 'full' && compareVersions(i.version, m.version) >= 0) : undefined;
  if (newer) throw new TiuError('REPO_INVALID', `${m.compatible} ${m.version} is not newer than the published ${newer.version}`, { hint: 'versions must grow with every publication (devices refuse downgrades)' });
  const sha256 = await sha256File(o.archive);
  const length = (await stat(o.archive)).size;
  const path = targetPath(m.compatible, m.version, basename(o.archive));
  const file = storedTargetFile(o.dir, { path, sha256 });
  await mkdir(dirname(file), { recursive: true });
  await copyFile(o.archive, `${file}.tmp`, constants.COPYFILE_FICLONE);
  await rename(`${file}.tmp`, file);
  const sameFull = same.find((i) => i.version === m.version && i.kind === 'full');
  const tiu: TiuTarget = {
    compatible: m.compatible, version: m.version,
    // A delta ends in an image that has (or will have) a full target: share its build number.
    build: sameFull?.build ?? Math.max(0, ...same.map((i) => i.build)) + 1,
    kind, index: m.index.sha256, ...(o.base ? { base: o.base } : {}), update: m.version, part: 'image',
    channels: { [o.channel]: { phased: o.phased, since: isoExpiry(now, 0) } }, created: isoExpiry(now, 0),
  };
  const img: RepoImage = { ...tiu, path, length, sha256 };
  await commitTargets(repo, targetMap([...images, img]), k, now);
  return img;
}

/**
 * `tiu repo promote`: adds channel `to` (phased as given, default 100) to every target of
 * `version` that is on channel `from`. From and to the same channel changes only the phase.
 */
export async function promote(o: { dir: string; keysDir: string; version: string; from: string; to: string; phased?: number; compatible?: string; now?: Date }): Promise<RepoImage[]> {
  const now = o.now ?? new Date();
  checkChannel(o.from);
  checkChannel(o.to);
  if (o.phased !== undefined) checkPhase(o.phased);
  const repo = await loadRepo(o.dir);
  const images = repoImages(repo);
  const hits = images.filter((i) => i.version === o.version && i.channels[o.from] && (o.compatible === undefined || i.compatible === o.compatible));
  if (hits.length === 0) throw new TiuError('REPO_INVALID', `no image of version ${o.version} on channel ${o.from}`, { hint: 'see tiu repo status' });
  const k = { targets: await loadRoleKey(o.keysDir, 'targets'), ...(await onlineKeys(o.keysDir)) };
  for (const h of hits) {
    const old = h.channels[o.to];
    h.channels = { ...h.channels, [o.to]: { phased: o.phased ?? 100, since: old?.since ?? isoExpiry(now, 0) } };
  }
  await commitTargets(repo, targetMap(images), k, now);
  return hits;
}

/** `tiu repo refresh`: new snapshot and timestamp (online keys only) with fresh expiry. */
export async function refresh(o: { dir: string; keysDir: string; timestampExpiry?: number; snapshotExpiry?: number; now?: Date }): Promise<Repo> {
  const repo = await loadRepo(o.dir);
  return commitSnapshot(repo, await onlineKeys(o.keysDir), o.now ?? new Date(), { timestampExpiry: o.timestampExpiry, snapshotExpiry: o.snapshotExpiry });
}

/**
 * `tiu repo rotate-key <role>`: a new key for the role, in root version N+1 signed by the old
 * root key (and, for root, by the new one too), so a client trusting root N can follow. The old
 * key file is kept as `<role>.key.pem.v<N>` for the record.
 */
export async function rotateKey(o: { dir: string; keysDir: string; role: Role; now?: Date }): Promise<{ rootVersion: number; keyID: string }> {
  const now = o.now ?? new Date();
  const repo = await loadRepo(o.dir);
  const rootKeys = await signingRootKeys(repo, o.keysDir);
  // For root, the key rotated is root.key.pem (the others keep their place in the role).
  const first = rootKeys.find((k) => k.n === 1);
  if (o.role === 'root' && !first) throw new TiuError('REPO_INVALID', `the root key ${keyFile(o.keysDir, 'root')} to rotate is not there`, { hint: 'bring it (--keys DIR)' });
  const old = o.role === 'root' ? first!.key : await loadRoleKey(o.keysDir, o.role);
  const v = repo.root.signed.version;
  await rename(keyFile(o.keysDir, o.role), `${keyFile(o.keysDir, o.role)}.v${v}`);
  const fresh = await newRoleKey(o.keysDir, o.role);
  const json = repo.root.signed.toJSON() as Record<string, any>;
  const keys = { ...json.keys };
  const roles = structuredClone(json.roles);
  roles[o.role].keyids = roles[o.role].keyids.filter((id: string) => id !== old.key.keyID).concat(fresh.key.keyID);
  keys[fresh.key.keyID] = fresh.key.toJSON();
  if (!Object.values<any>(roles).some((r) => r.keyids.includes(old.key.keyID))) delete keys[old.key.keyID];
  const root = new Metadata(Root.fromJSON({ ...json, version: v + 1, expires: isoExpiry(now, DEFAULT_EXPIRY.root), keys, roles }));
  // Signed by the old root keys (the threshold of the trusted root) and, for a root rotation, by
  // the new key too (the new root's threshold counts the new key and the unchanged ones).
  for (const k of rootKeys) root.sign(signer(k.key), true);
  if (o.role === 'root') root.sign(signer(fresh), true);
  await writeRoot(o.dir, root);
  const next = { ...repo, root };
  if (o.role === 'targets') await commitTargets(next, targetMap(repoImages(repo)), { targets: fresh, ...(await onlineKeys(o.keysDir)) }, now);
  else if (o.role === 'snapshot' || o.role === 'timestamp') await commitSnapshot(next, await onlineKeys(o.keysDir), now);
  return { rootVersion: v + 1, keyID: fresh.key.keyID };
}

export interface RepoStatus {
  roles: Record<Role, { version: number; expires: string; keyids: string[] }>;
  images: { path: string; compatible: string; version: string; build: number; kind: string; length: number; channels: Record<string, { phased: number; since: string }> }[];
}

export async function status(dir: string): Promise<RepoStatus> {
  const repo = await loadRepo(dir);
  const ids = (r: Role) => repo.root.signed.roles[r]?.keyIDs ?? [];
  const role = (md: { signed: { version: number; expires: string } }, r: Role) => ({ version: md.signed.version, expires: md.signed.expires, keyids: ids(r) });
  return {
    roles: { root: role(repo.root, 'root'), targets: role(repo.targets, 'targets'), snapshot: role(repo.snapshot, 'snapshot'), timestamp: role(repo.timestamp, 'timestamp') },
    images: repoImages(repo)
      .sort((a, b) => a.compatible.localeCompare(b.compatible) || a.build - b.build)
      .map((i) => ({ path: i.path, compatible: i.compatible, version: i.version, build: i.build, kind: i.kind, length: i.length, channels: i.channels })),
  };
}
