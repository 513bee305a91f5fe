/**
 * A device transaction (after tukit's `Transaction`): constructing it changes nothing; `begin()`
 * creates the new snapshot marked in progress; `finalize()` makes it read-only, clears the mark
 * and, as the single last step, makes it the default; disposing it before `finalize()` deletes
 * the snapshot. SIGINT/SIGTERM abort the work (the snapshot is deleted); after SIGKILL or a
 * power cut the in-progress mark lets the next tiu command find and delete it.
 */
import { TiuError } from '../../core/errors.ts';
import type { System } from '../../core/system.ts';
import { UD } from './paths.ts';
import type { Device } from './open.ts';
import { cleanupStaleMounts } from '../archive/mount.ts';
import { removeSyncpoint } from './etc.ts';
import { onInterrupt, registerCleanup, testHook } from '../guard.ts';

/** Directories that are separate subvolumes inside each snapshot (carried by snapshotting). */
export const NESTED_SUBVOLUMES = ['etc'] as const;


/** Deletes a snapshot including its nested subvolumes (/etc). */
export async function deleteSnapshot(dev: Device, num: number): Promise<void> {
  await removeSyncpoint(dev.sys, dev.snapshotDir(num));
  await dev.store.delete(num);
}

/** Deletes snapshots left in progress by an interrupted run (never the default or the mounted one). */
export async function cleanupInterrupted(dev: Device): Promise<number[]> {
  const { sys, store } = dev;
  await cleanupStaleMounts(sys);
  const removed: number[] = [];
  const def = await store.getDefault();
  const mounted = await store.getMounted();
  for (const s of await store.list()) {
    if (s.userdata[UD.inProgress] !== 'yes' || s.num === def || s.num === mounted) continue;
    sys.log.info(`removing snapshot ${s.num} left over by an interrupted tiu run`);
    await deleteSnapshot(dev, s.num);
    removed.push(s.num);
  }
  return removed;
}

export interface BeginOptions {
  /** The snapshot to start from; undefined starts from an empty subvolume (tiu install). */
  from: number | undefined;
  description: string;
  userdata: Record<string, string>;
  /** snapper's cleanup algorithm (default 'number'; '' for none, as the installed snapshot 1). */
  cleanup?: 'number' | '';
}

export class Transaction implements AsyncDisposable {
  readonly dev: Device;
  readonly sys: System;
  num: number | undefined;
  private finalized = false;
  private readonly abort = new AbortController();
  /** Unregisters the internal-error cleanup (src/tiu/guard.ts). */
  private unguard: (() => void) | undefined;
  /** Gives SIGINT/SIGTERM back to the guard. */
  private unsignal: (() => void) | undefined;
  private readonly onSignal = (sig: NodeJS.Signals) => {
    this.sys.log.warn(`${sig} received: discarding the new snapshot`);
    this.abort.abort(new TiuError('INTERRUPTED', `interrupted by ${sig}; the new snapshot was discarded, the default is unchanged`));
  };

  constructor(dev: Device) {
    this.dev = dev;
    this.sys = dev.sys;
  }

  get signal(): AbortSignal {
    return this.abort.signal;
  }

  get dir(): string {
    if (this.num === undefined) throw new TiuError('INTERNAL', 'transaction not begun');
    return this.dev.snapshotDir(this.num);
  }

  /** Creates the writable snapshot (marked in progress) of `from`, with its nested /etc. */
  async begin(o: BeginOptions): Promise<number> {
    this.unsignal = onInterrupt(this.onSignal);
    this.num = await this.dev.store.create({
      from: o.from,
      description: o.description,
      userdata: { ...o.userdata, [UD.inProgress]: 'yes' },
      cleanup: o.cleanup ?? 'number',
      readWrite: true,
      nested: NESTED_SUBVOLUMES,
    });
    // If tiu dies of an internal error, the guard deletes this unfinished snapshot first.
    this.unguard = registerCleanup(() => this[Symbol.asyncDispose]());
    await testHook('transaction');
    return this.num;
  }

  throwIfAborted(): void {
    if (this.abort.signal.aborted) throw this.abort.signal.reason;
  }

  /**
   * Seals the snapshot: read-only, generation recorded, in-progress cleared, then (optionally)
   * the default — the only step that changes what boots, and the last one.
   */
  async finalize(o: { makeDefault: boolean; userdata?: Record<string, string> }): Promise<void> {
    this.throwIfAborted();
    const num = this.num!;
    const generation = await this.dev.store.seal(num);
    this.throwIfAborted();
    await this.dev.store.setUserdata(num, { ...o.userdata, [UD.generation]: String(generation), [UD.inProgress]: null });
    this.finalized = true;
    this.detach();
    if (o.makeDefault) await this.dev.store.setDefault(num);
  }

  private detach(): void {
    this.unguard?.();
    this.unguard = undefined;
    this.unsignal?.();
    this.unsignal = undefined;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    this.detach();
    if (this.finalized || this.num === undefined) return;
    try {
      await deleteSnapshot(this.dev, this.num);
      this.sys.log.info(`discarded snapshot ${this.num}; the default is unchanged`);
    } catch (e) {
      this.sys.log.error(`could not delete the unfinished snapshot ${this.num}: ${(e as Error).message}; the next tiu command removes it`);
    }
  }
}
