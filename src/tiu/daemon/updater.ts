/**
 * The update service's engine, independent of D-Bus: one update at a time through the states
 * idle → downloading ⇄ paused → downloaded → applying → applied (or failed; Cancel returns to
 * idle from anywhere but applying). Downloads go through `download()` (resumable via Range on a
 * `.part` file): Pause aborts the transfer and keeps the `.part`, Resume starts it again from
 * there, Cancel aborts and deletes the partial and complete files. Apply runs the same
 * `extract()` as `tiu update`, so it holds the root's transaction lock.
 */
import { rm } from 'node:fs/promises';
import { TiuError } from '../../core/errors.ts';
import type { System } from '../../core/system.ts';
import { cacheName, download } from '../device/download.ts';
import { extract } from '../device/extract.ts';
import { tuneForOtherWork } from '../v8tuning.ts';
import { openDevice } from '../device/open.ts';
import type { BootloaderSetting } from '../boot/detect.ts';
import type { SnapperMode } from '../../snapshot/store.ts';

export type UpdaterState = 'idle' | 'available' | 'downloading' | 'paused' | 'downloaded' | 'applying' | 'applied' | 'failed';

export interface UpdaterOptions {
  sys: System;
  root: string;
  /** The update archive's URL ([update] source). */
  source: string | undefined;
  cacheDir: string;
  keyringPem: () => Promise<string>;
  allowedSigners?: string[];
  compatible?: string;
  bootloader?: BootloaderSetting;
  snapper?: SnapperMode;
  /** Bytes per second ([daemon] bandwidth_limit). */
  rateLimit?: number;
  /** Whether downloading is allowed now (e.g. not on a metered connection). */
  mayDownload?: () => Promise<{ ok: boolean; why?: string }>;
  /** Called whenever a published value changed (the D-Bus layer emits PropertiesChanged). */
  onChange?: (changed: Partial<UpdaterStatus>) => void;
}

export interface UpdaterStatus {
  state: UpdaterState;
  source: string;
  downloaded: number;
  /** 0 when unknown. */
  total: number;
  /** The last error, one line with its code (empty when none). */
  error: string;
  /** Snapshot made by the last Apply (0 if none). */
  snapshot: number;
}

export class Updater {
  private readonly o: UpdaterOptions;

  /** The system this updater applies to. */
  get root(): string {
    return this.o.root;
  }
  private s: UpdaterStatus;
  private controller: AbortController | undefined;
  private running: Promise<void> | undefined;
  private stopReason: 'pause' | 'cancel' | undefined;
  private file: string | undefined;
  private lastEmit = 0;

  constructor(o: UpdaterOptions) {
    this.o = o;
    this.s = { state: 'idle', source: o.source ?? '', downloaded: 0, total: 0, error: '', snapshot: 0 };
  }

  get status(): Readonly<UpdaterStatus> {
    return this.s;
  }

  private set(patch: Partial<UpdaterStatus>): void {
    Object.assign(this.s, patch);
    this.o.onChange?.(patch);
  }

  private source(): string {
    if (!this.o.source) throw new TiuError('USAGE', 'no update source configured', { hint: 'set [update] source in /etc/tiu/tiu.conf' });
    return this.o.source;
  }

  /** Asks the server whether the archive is there (HEAD); `available` when it is. */
  async check(): Promise<boolean> {
    const url = this.source();
    let res: Response;
    try {
      res = await fetch(url, { method: 'HEAD', redirect: 'follow', signal: AbortSignal.timeout(30_000) });
    } catch (e) {
      this.set({ error: `DOWNLOAD_FAILED: cannot reach ${url}: ${(e as Error).message}` });
      return false;
    }
    const ok = res.status === 200;
    const total = Number(res.headers.get('content-length') ?? 0) || 0;
    if (ok && (this.s.state === 'idle' || this.s.state === 'failed' || this.s.state === 'applied')) this.set({ state: 'available', total, error: '' });
    return ok;
  }

  /** Starts (or resumes) the download in the background; returns at once. */
  async startDownload(): Promise<void> {
    if (this.s.state === 'downloading' || this.s.state === 'downloaded' || this.s.state === 'applying') return;
    const url = this.source();
    const allowed = (await this.o.mayDownload?.()) ?? { ok: true };
    if (!allowed.ok) throw new TiuError('DOWNLOAD_FAILED', `not downloading now: ${allowed.why}`, { hint: 'see [daemon] in tiu.conf (docs/dbus.md)' });
    const controller = new AbortController();
    this.controller = controller;
    this.stopReason = undefined;
    this.set({ state: 'downloading', error: '' });
    this.running = download({
      url,
      cacheDir: this.o.cacheDir,
      rateLimit: this.o.rateLimit,
      signal: controller.signal,
      log: this.o.sys.log,
      onProgress: (done, total) => {
        this.s.downloaded = done;
        this.s.total = total ?? 0;
        const now = Date.now();
        if (now - this.lastEmit >= 200) {
          this.lastEmit = now;
          this.o.onChange?.({ downloaded: done, total: total ?? 0 });
        }
      },
    }).then(
      (file) => {
        this.file = file;
        this.set({ state: 'downloaded', downloaded: this.s.total || this.s.downloaded });
      },
      (e: unknown) => {
        if (this.stopReason === 'pause') this.set({ state: 'paused', downloaded: this.s.downloaded });
        else if (this.stopReason !== 'cancel') this.set({ state: 'failed', error: oneLine(e) });
      },
    );
  }

  /** Stops the transfer, keeping what arrived; Resume continues from there. */
  async pause(): Promise<void> {
    if (this.s.state !== 'downloading') throw new TiuError('USAGE', `nothing to pause (state ${this.s.state})`);
    this.stopReason = 'pause';
    this.controller?.abort();
    await this.running;
  }

  async resume(): Promise<void> {
    if (this.s.state !== 'paused') throw new TiuError('USAGE', `nothing to resume (state ${this.s.state})`);
    await this.startDownload();
  }

  /** Stops any transfer and deletes every downloaded byte. */
  async cancel(): Promise<void> {
    if (this.s.state === 'applying') throw new TiuError('BUSY', 'the update is being applied; it cannot be cancelled now');
    this.stopReason = 'cancel';
    this.controller?.abort();
    await this.running;
    await this.forgetDownload();
    this.file = undefined;
    this.set({ state: 'idle', downloaded: 0, error: '' });
  }

  /** Removes every trace of the download: data, validators, and the (unheld) per-URL lock file. */
  private async forgetDownload(): Promise<void> {
    if (!this.o.source) return;
    const final = `${this.o.cacheDir}/${cacheName(this.o.source)}`;
    for (const f of [`${final}.part`, final, `${final}.meta`, `${final}.lock`]) await rm(f, { force: true });
  }

  /** Applies the downloaded archive (verify, extract into a new snapshot, make it the default). */
  async apply(): Promise<number> {
    if (this.s.state !== 'downloaded' || !this.file) throw new TiuError('USAGE', `nothing to apply (state ${this.s.state})`, { hint: 'call Download first and wait for state downloaded' });
    this.set({ state: 'applying' });
    try {
      await using dev = await openDevice(this.o.sys, this.o.root, { lock: true, snapper: this.o.snapper, bootloader: this.o.bootloader });
      const r = await extract(dev, {
        archive: this.file,
        makeDefault: true,
        keyringPem: await this.o.keyringPem(),
        allowedSigners: this.o.allowedSigners,
        compatible: this.o.compatible,
      });
      await rm(this.file, { force: true });
      await this.forgetDownload();
      this.file = undefined;
      this.set({ state: 'applied', snapshot: r.number ?? 0 });
      return r.number ?? 0;
    } catch (e) {
      this.set({ state: 'failed', error: oneLine(e) });
      throw e;
    } finally {
      // (extract() tunes V8 for the update; the daemon goes on with its other work)
      tuneForOtherWork();
    }
  }
}

function oneLine(e: unknown): string {
  return e instanceof TiuError ? `${e.code}: ${e.oneLine()}` : String((e as Error)?.message ?? e);
}
