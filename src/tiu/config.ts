/**
 * Configuration: ini files, later ones override earlier ones key by key:
 *   <configRoot>/usr/lib/tiu/tiu.conf, <configRoot>/usr/lib/tiu/tiu.conf.d/*.conf,
 *   <configRoot>/etc/tiu/tiu.conf, <configRoot>/etc/tiu/tiu.conf.d/*.conf
 * (drop-ins in lexical order), then an explicit `--config FILE`.
 */
import { readFile, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { parse } from 'ini';
import { parseSize } from '../core/size.ts';
import { TiuError } from '../core/errors.ts';
import { BOOTLOADER_SETTINGS, type BootloaderSetting } from './boot/types.ts';
import { SNAPPER_MODES, type SnapperMode } from '../snapshot/modes.ts';
import { readTiuEnv } from '../core/env.ts';

export interface Config {
  /** PEM file with the trusted CA certificates. */
  keyring: string;
  /** If non-empty, the signer certificate's subject CN (or full subject) must be one of these. */
  allowedSigners: string[];
  /** This device's compatible string (archives must match it exactly). */
  compatible: string | undefined;
  /** Paths whose contents an image never carries (leading slash, no trailing slash). */
  exclude: string[];
  compression: string;
  compressionLevel: number | undefined;
  blockSize: number;
  bootloader: BootloaderSetting;
  snapper: SnapperMode;
  /** Snapshots `tiu cleanup` keeps (number algorithm). */
  keep: number;
  /** Update source (file or URL) used by `tiu update` without --source. */
  source: string | undefined;
  /** Where downloads are stored. */
  cacheDir: string;
  /** [download] bounds and cache policy (docs/download.md). */
  download: DownloadConfig;
  /** Update repository base URL (https://, http:// or file://) used by `tiu update`/`tiu check`. */
  repository: string | undefined;
  /** Channel to follow (stable, candidate, beta, edge…) unless `tiu channel set` chose another. */
  channel: string;
  /** The repository's trusted root.json shipped with the system; undefined = /etc/tiu then /usr/lib/tiu. */
  repositoryRoot: string | undefined;
  /** Device state (metadata cache, chosen channel). */
  stateDir: string;
  /** `tiu daemon` ([daemon]): bytes per second for downloads (0 = no limit). */
  daemonBandwidthLimit: number;
  /** `tiu daemon`: download on a metered connection (NetworkManager's Metered property). */
  daemonDownloadOnMetered: boolean;
  /** `tiu daemon`: check and download on start without being asked. */
  daemonAutomaticDownload: boolean;
  /** Files the configuration was read from, in order. */
  files: string[];
}

export interface DownloadConfig {
  /** Keep a downloaded archive after it was applied (default: delete it, keep only its validators). */
  keep: boolean;
  /** Seconds below the minimum speed before a download counts as stalled. */
  stallTimeout: number;
  /** Seconds a whole download may take. */
  timeout: number;
  /** Extra attempts after transient failures. */
  retries: number;
  /** Largest archive accepted, in bytes. */
  maxSize: number;
  /** Default rate limit in bytes per second (0: none). */
  limitRate: number;
}

export const DEFAULT_EXCLUDES = ['/var', '/tmp', '/run', '/proc', '/sys', '/dev', '/home', '/root', '/srv', '/opt', '/usr/local', '/.snapshots', '/mnt', '/media', '/boot/efi', '/boot/grub2/x86_64-efi', '/boot/grub2/i386-pc'];

export const DEFAULT_CONFIG: Config = {
  keyring: '/etc/tiu/keyring.pem',
  allowedSigners: [],
  compatible: undefined,
  exclude: DEFAULT_EXCLUDES,
  compression: 'zstd',
  compressionLevel: undefined,
  blockSize: 131072,
  bootloader: 'auto',
  snapper: 'auto',
  keep: 5,
  source: undefined,
  cacheDir: '/var/cache/tiu',
  download: { keep: false, stallTimeout: 60, timeout: 6 * 3600, retries: 4, maxSize: 64 * 1024 ** 3, limitRate: 0 },
  repository: undefined,
  channel: 'stable',
  repositoryRoot: undefined,
  stateDir: '/var/lib/tiu',
  daemonBandwidthLimit: 0,
  daemonDownloadOnMetered: false,
  daemonAutomaticDownload: false,
  files: [],
};

type Raw = Record<string, unknown>;

function list(v: unknown, separator: RegExp = /[\s,]+/): string[] {
  if (Array.isArray(v)) return v.map((x) => String(x).trim()).filter(Boolean);
  return String(v).split(separator).map((x) => x.trim()).filter(Boolean);
}

function int(v: unknown, key: string, file: string): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0) throw new TiuError('CONFIG_INVALID', `${file}: ${key} must be a whole number, got '${String(v)}'`, { hint: 'fix the configuration file' });
  return n;
}

function bool(v: unknown, key: string, file: string): boolean {
  if (v === true || v === false) return v;
  const t = String(v).toLowerCase();
  if (['yes', 'true', '1', 'on'].includes(t)) return true;
  if (['no', 'false', '0', 'off'].includes(t)) return false;
  throw new TiuError('CONFIG_INVALID', `${file}: ${key} must be yes or no, got '${String(v)}'`, { hint: 'fix the configuration file' });
}

/** A size setting (500k, 2M, 4G); 0 where the setting allows "none". */
function size(v: unknown, key: string, file: string): number {
  if (String(v).trim() === '0') return 0;
  try {
    return parseSize(String(v), key);
  } catch {
    throw new TiuError('CONFIG_INVALID', `${file}: ${key} must be a size like 500k, 2M or 4G, got '${String(v)}'`, { hint: 'fix the configuration file' });
  }
}

function positive(v: unknown, key: string, file: string): number {
  const n = int(v, key, file);
  if (n === 0) throw new TiuError('CONFIG_INVALID', `${file}: ${key} must be at least 1`, { hint: 'fix the configuration file' });
  return n;
}

function oneOf<T extends string>(v: unknown, allowed: readonly T[], key: string, file: string): T {
  if (!allowed.includes(String(v) as T)) throw new TiuError('CONFIG_INVALID', `${file}: ${key} must be one of ${allowed.join(', ')}, got '${String(v)}'`, { hint: 'fix the configuration file' });
  return String(v) as T;
}

/** Applies one parsed ini document onto `cfg` (pure). Unknown keys are rejected, so typos surface. */
export function applyIni(cfg: Config, doc: Raw, file: string): Config {
  const out = { ...cfg };
  const sections: Record<string, Raw> = {};
  for (const [k, v] of Object.entries(doc)) {
    if (v && typeof v === 'object' && !Array.isArray(v)) sections[k] = v as Raw;
    else throw new TiuError('CONFIG_INVALID', `${file}: key '${k}' must be inside a [section]`, { hint: 'see docs/configuration.md' });
  }
  for (const [section, values] of Object.entries(sections)) {
    for (const [key, v] of Object.entries(values)) {
      const id = `${section}.${key}`;
      switch (id) {
        case 'trust.keyring': out.keyring = String(v); break;
        // Subjects contain spaces and commas: one per line (allowed_signers[] = …) or ';'-separated.
        case 'trust.allowed_signers': out.allowedSigners = list(v, /;/); break;
        case 'device.compatible': out.compatible = String(v); break;
        case 'device.bootloader': out.bootloader = oneOf(v, BOOTLOADER_SETTINGS, id, file); break;
        case 'device.snapper': out.snapper = oneOf(v, SNAPPER_MODES, id, file); break;
        case 'cleanup.keep': out.keep = int(v, id, file); break;
        case 'update.source': out.source = String(v); break;
        case 'update.cache_dir': out.cacheDir = String(v); break;
        case 'download.keep': out.download = { ...out.download, keep: bool(v, id, file) }; break;
        case 'download.stall_timeout': out.download = { ...out.download, stallTimeout: positive(v, id, file) }; break;
        case 'download.timeout': out.download = { ...out.download, timeout: positive(v, id, file) }; break;
        case 'download.retries': out.download = { ...out.download, retries: int(v, id, file) }; break;
        case 'download.max_size': out.download = { ...out.download, maxSize: size(v, id, file) }; break;
        case 'download.limit_rate': out.download = { ...out.download, limitRate: size(v, id, file) }; break;
        case 'update.repository': out.repository = String(v); break;
        case 'update.channel': out.channel = String(v); break;
        case 'update.repository_root': out.repositoryRoot = String(v); break;
        case 'update.state_dir': out.stateDir = String(v); break;
        case 'daemon.bandwidth_limit': out.daemonBandwidthLimit = int(v, id, file); break;
        case 'daemon.download_on_metered': out.daemonDownloadOnMetered = oneOf(String(v), ['true', 'false'] as const, id, file) === 'true'; break;
        case 'daemon.automatic_download': out.daemonAutomaticDownload = oneOf(String(v), ['true', 'false'] as const, id, file) === 'true'; break;
        case 'create.exclude': out.exclude = list(v); break;
        case 'create.compression': out.compression = String(v); break;
        case 'create.compression_level': out.compressionLevel = int(v, id, file); break;
        case 'create.block_size': out.blockSize = int(v, id, file); break;
        default:
          throw new TiuError('CONFIG_INVALID', `${file}: unknown setting '${id}'`, { hint: 'see docs/configuration.md for the settings tiu knows' });
      }
    }
  }
  out.files = [...cfg.files, file];
  return out;
}

async function readIfExists(path: string): Promise<string | undefined> {
  try {
    return await readFile(path, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new TiuError('CONFIG_INVALID', `cannot read ${path}: ${(e as Error).message}`);
  }
}

async function dropIns(dir: string): Promise<string[]> {
  try {
    return (await readdir(dir)).filter((f) => f.endsWith('.conf')).sort().map((f) => join(dir, f));
  } catch {
    return [];
  }
}

/** Loads the layered configuration. `configRoot` defaults to `/` (tests pass a temp dir). */
export async function loadConfig(options: { configRoot?: string; file?: string } = {}): Promise<Config> {
  const root = options.configRoot ?? readTiuEnv().configRoot ?? '/';
  const files = [
    join(root, 'usr/lib/tiu/tiu.conf'),
    ...(await dropIns(join(root, 'usr/lib/tiu/tiu.conf.d'))),
    join(root, 'etc/tiu/tiu.conf'),
    ...(await dropIns(join(root, 'etc/tiu/tiu.conf.d'))),
  ];
  let cfg: Config = { ...DEFAULT_CONFIG, keyring: join(root, 'etc/tiu/keyring.pem') };
  for (const f of files) {
    const text = await readIfExists(f);
    if (text !== undefined) cfg = applyIni(cfg, parse(text), f);
  }
  if (options.file) {
    const text = await readIfExists(options.file);
    if (text === undefined) throw new TiuError('INPUT_NOT_FOUND', `configuration file ${options.file} does not exist`, { hint: 'check the --config path' });
    cfg = applyIni(cfg, parse(text), options.file);
  }
  return cfg;
}
