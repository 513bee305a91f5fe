/**
 * The repository on disk (build side): a directory any static web server can serve.
 *
 *   <dir>/metadata/N.root.json        every root version (the chain clients follow), root.json = newest
 *   <dir>/metadata/N.targets.json     top-level targets: delegates each device type (paths compatible/VERSION/FILE) to its own role
 *   <dir>/metadata/N.<compatible>.json that device type's targets (consistent snapshots: each version its own name)
 *   <dir>/metadata/N.snapshot.json
 *   <dir>/metadata/timestamp.json     the only file that changes in place
 *   <dir>/targets/<compatible>/<version>/<sha256>.<file>   the archives (hash-prefixed)
 *
 * The newest signed metadata is the repository's whole state: no database. Writes go in the
 * order targets → snapshot → timestamp, each atomic, so a client never sees a timestamp that
 * names files that are not there yet.
 */
import { createHash } from 'node:crypto';
import { readFile, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { Metadata, MetadataKind, MetaFile, Root, Snapshot, Targets, Timestamp, TargetFile } from '@tufjs/models';
import { TiuError } from '../../core/errors.ts';
import { writeAtomic } from './files.ts';
import { signer, type RoleKey, type Role } from './keys.ts';
import { parseImage, type RepoImage } from './model.ts';

export const SPEC_VERSION = '1.0.31';
const DAY = 86_400_000;
/** Default lifetimes: offline roles long, online roles short (a frozen mirror is noticed within a day). */
export const DEFAULT_EXPIRY: Record<Role, number> = { root: 365 * DAY, targets: 90 * DAY, snapshot: 7 * DAY, timestamp: 1 * DAY };

export interface Repo {
  dir: string;
  root: Metadata<Root>;
  /** Top-level targets: no files, only the delegation of each device type to its own role. */
  targets: Metadata<Targets>;
  /** One delegated targets role per device type (`compatible`), so a device reads only its own. */
  roles: Record<string, Metadata<Targets>>;
  snapshot: Metadata<Snapshot>;
  timestamp: Metadata<Timestamp>;
}

export const metadataDir = (dir: string) => join(dir, 'metadata');
export const targetsDir = (dir: string) => join(dir, 'targets');

/** ISO time without milliseconds, as TUF writes it. */
export function isoExpiry(now: Date, ms: number): string {
  return new Date(now.getTime() + ms).toISOString().replace(/\.\d{3}Z$/, 'Z');
}

/** Parses a duration like 30s, 10m, 12h, 7d. */
export function parseDuration(text: string): number {
  const m = /^(\d+)([smhd])$/.exec(text.trim());
  if (!m) throw new TiuError('USAGE', `'${text}' is not a duration like 30s, 10m, 12h or 7d`);
  return Number(m[1]) * { s: 1000, m: 60_000, h: 3_600_000, d: DAY }[m[2] as 's' | 'm' | 'h' | 'd'];
}

function bytesOf(md: Metadata<Root | Targets | Snapshot | Timestamp>): Buffer {
  return Buffer.from(JSON.stringify(md.toJSON(), null, 1) + '\n');
}

async function readJson(path: string): Promise<Record<string, any>> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch {
    throw new TiuError('REPO_INVALID', `${path} is missing: not a tiu repository`, { hint: 'make one with tiu repo init DIR' });
  }
  return JSON.parse(text);
}

/** Reads the newest metadata of a repository. */
export async function loadRepo(dir: string): Promise<Repo> {
  const md = metadataDir(dir);
  const timestamp = Metadata.fromJSON(MetadataKind.Timestamp, await readJson(join(md, 'timestamp.json')));
  const snapshot = Metadata.fromJSON(MetadataKind.Snapshot, await readJson(join(md, `${timestamp.signed.snapshotMeta.version}.snapshot.json`)));
  const tv = snapshot.signed.meta['targets.json']?.version;
  if (!tv) throw new TiuError('REPO_INVALID', `${md}: the snapshot names no targets.json`);
  const targets = Metadata.fromJSON(MetadataKind.Targets, await readJson(join(md, `${tv}.targets.json`)));
  const roles: Record<string, Metadata<Targets>> = {};
  for (const [file, meta] of Object.entries(snapshot.signed.meta)) {
    if (file === 'targets.json') continue;
    const name = file.replace(/\.json$/, '');
    roles[name] = Metadata.fromJSON(MetadataKind.Targets, await readJson(join(md, `${meta.version}.${file}`)));
  }
  const roots = (await readdir(md)).map((f) => /^(\d+)\.root\.json$/.exec(f)).filter((m) => m).map((m) => Number(m![1]));
  const root = Metadata.fromJSON(MetadataKind.Root, await readJson(join(md, `${Math.max(...roots)}.root.json`)));
  return { dir, root, targets, roles, snapshot, timestamp };
}

/** The repository's images (every target, parsed strictly). */
export function repoImages(repo: Pick<Repo, 'roles'>): RepoImage[] {
  return Object.values(repo.roles).flatMap((r) => Object.values(r.signed.targets).map((t) => parseImage(t.path, t.length, t.hashes, t.custom)));
}

/** The delegation pattern of a device type's role: `<compatible>/<version>/<file>`. */
export function rolePattern(compatible: string): string {
  return `${compatible}/*/*`;
}

/** Writes a root version (N.root.json and root.json). */
export async function writeRoot(dir: string, root: Metadata<Root>): Promise<void> {
  const bytes = bytesOf(root);
  await writeAtomic(join(metadataDir(dir), `${root.signed.version}.root.json`), bytes);
  await writeAtomic(join(metadataDir(dir), 'root.json'), bytes);
}

/**
 * A new root (version 1), consistent snapshots, trusting one key per role with threshold 1 — or,
 * for the root role, every key of `root` (the first is keys.root) with `threshold` of them
 * required (k-of-n offline root keys); signed by all of them.
 */
export function makeRoot(keys: Record<Role, RoleKey>, now: Date, version = 1, o: { rootKeys?: RoleKey[]; threshold?: number } = {}): Metadata<Root> {
  const rootKeys = o.rootKeys ?? [keys.root];
  const threshold = o.threshold ?? 1;
  // @tufjs/models exports no Role builder: build the roles from JSON (as the issue notes).
  const roles = Object.fromEntries((['root', 'targets', 'snapshot', 'timestamp'] as const).map((r) => [r, r === 'root' ? { keyids: rootKeys.map((k) => k.key.keyID), threshold } : { keyids: [keys[r].key.keyID], threshold: 1 }]));
  const keyMap = Object.fromEntries([...rootKeys, keys.targets, keys.snapshot, keys.timestamp].map((k) => [k.key.keyID, k.key.toJSON()]));
  const root = Root.fromJSON({ _type: 'root', spec_version: SPEC_VERSION, version, expires: isoExpiry(now, DEFAULT_EXPIRY.root), consistent_snapshot: true, keys: keyMap, roles });
  const md = new Metadata(root);
  for (const k of rootKeys) md.sign(signer(k), true);
  return md;
}

/**
 * Signs and writes the targets of every device type whose files changed (a new version of its
 * delegated role) and, when the set of device types or the targets key changed, a new top-level
 * targets; then snapshot and timestamp. `targets` is the complete new set of files. The snapshot
 * and timestamp carry length and hashes of what they name, so a client bounds every download by
 * a signed length (endless data) and detects swapped files.
 */
export async function commitTargets(repo: Repo, targets: Record<string, TargetFile>, k: { targets: RoleKey; snapshot: RoleKey; timestamp: RoleKey }, now: Date): Promise<Repo> {
  const md = metadataDir(repo.dir);
  const groups: Record<string, Record<string, TargetFile>> = {};
  for (const [path, t] of Object.entries(targets)) (groups[path.slice(0, path.indexOf('/'))] ??= {})[path] = t;
  const keyID = k.targets.key.keyID;
  const roles: Record<string, Metadata<Targets>> = { ...repo.roles };
  const bytes: Record<string, Buffer> = {};
  for (const [name, files] of Object.entries(groups)) {
    const old = repo.roles[name];
    const same = old && old.signatures[keyID] && JSON.stringify(new Targets({ version: 1, specVersion: SPEC_VERSION, expires: 'x', targets: files }).toJSON().targets) === JSON.stringify(old.signed.toJSON().targets);
    if (same) continue;
    const t = new Metadata(new Targets({ version: (old?.signed.version ?? 0) + 1, specVersion: SPEC_VERSION, expires: isoExpiry(now, DEFAULT_EXPIRY.targets), targets: files }));
    t.sign(signer(k.targets));
    roles[name] = t;
    bytes[name] = bytesOf(t);
    await writeAtomic(join(md, `${t.signed.version}.${name}.json`), bytes[name]!);
  }
  const names = Object.keys(roles).sort();
  const delegations = { keys: { [keyID]: k.targets.key.toJSON() }, roles: names.map((name) => ({ name, keyids: [keyID], threshold: 1, paths: [rolePattern(name)], terminating: true })) };
  let top = repo.targets;
  if (JSON.stringify(top.signed.toJSON().delegations ?? null) !== JSON.stringify(delegations) || !top.signatures[keyID]) {
    top = new Metadata(Targets.fromJSON({ _type: 'targets', spec_version: SPEC_VERSION, version: repo.targets.signed.version + 1, expires: isoExpiry(now, DEFAULT_EXPIRY.targets), targets: {}, delegations }));
    top.sign(signer(k.targets));
    await writeAtomic(join(md, `${top.signed.version}.targets.json`), bytesOf(top));
  }
  return commitSnapshot({ ...repo, targets: top, roles }, k, now);
}

/** Signs a new snapshot naming the current targets and roles, and a new timestamp naming that snapshot. */
export async function commitSnapshot(repo: Repo, k: { snapshot: RoleKey; timestamp: RoleKey }, now: Date, o: { snapshotExpiry?: number; timestampExpiry?: number } = {}): Promise<Repo> {
  const metaOf = (m: Metadata<Targets>) => {
    const b = bytesOf(m);
    return new MetaFile({ version: m.signed.version, length: b.length, hashes: { sha256: sha256(b) } });
  };
  const meta: Record<string, MetaFile> = { 'targets.json': metaOf(repo.targets) };
  for (const [name, r] of Object.entries(repo.roles)) meta[`${name}.json`] = metaOf(r);
  const s = new Metadata(new Snapshot({ version: repo.snapshot.signed.version + 1, specVersion: SPEC_VERSION, expires: isoExpiry(now, o.snapshotExpiry ?? DEFAULT_EXPIRY.snapshot), meta }));
  s.sign(signer(k.snapshot));
  const sb = bytesOf(s);
  await writeAtomic(join(metadataDir(repo.dir), `${s.signed.version}.snapshot.json`), sb);
  const ts = new Metadata(new Timestamp({
    version: repo.timestamp.signed.version + 1, specVersion: SPEC_VERSION, expires: isoExpiry(now, o.timestampExpiry ?? DEFAULT_EXPIRY.timestamp),
    snapshotMeta: new MetaFile({ version: s.signed.version, length: sb.length, hashes: { sha256: sha256(sb) } }),
  }));
  ts.sign(signer(k.timestamp));
  await writeAtomic(join(metadataDir(repo.dir), 'timestamp.json'), bytesOf(ts));
  return { ...repo, snapshot: s, timestamp: ts };
}

export function sha256(b: Buffer): string {
  return createHash('sha256').update(b).digest('hex');
}

/** The first metadata of a new repository: root 1, empty targets 1, snapshot 1, timestamp 1. */
export async function initRepo(dir: string, keys: Record<Role, RoleKey>, now: Date, o: { rootKeys?: RoleKey[]; threshold?: number } = {}): Promise<Repo> {
  const root = makeRoot(keys, now, 1, o);
  await writeRoot(dir, root);
  // Version-0 placeholders so the commit functions make version 1 of each.
  const zero = {
    dir, root, roles: {},
    targets: new Metadata(new Targets({ version: 0, specVersion: SPEC_VERSION, expires: isoExpiry(now, 0) })),
    snapshot: new Metadata(new Snapshot({ version: 0, specVersion: SPEC_VERSION, expires: isoExpiry(now, 0) })),
    timestamp: new Metadata(new Timestamp({ version: 0, specVersion: SPEC_VERSION, expires: isoExpiry(now, 0) })),
  };
  return commitTargets(zero, {}, keys, now);
}
