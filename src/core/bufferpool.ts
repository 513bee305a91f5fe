/**
 * Spare buffers of one size, reused from one file to the next: a fresh buffer per (mostly small)
 * file kept the garbage collector busy and the RSS up with memory freed but not yet returned.
 */

export interface BufferPool {
  /** A buffer of the pool's size (its contents are arbitrary). */
  take(): Buffer;
  /** Gives `b` back once nothing uses it or a view of it any more; kept if the pool has room. */
  give(b: Buffer): void;
  /** Lets go of the spare buffers (once a step that used the pool is over: they are not freed otherwise). */
  drain(): void;
}

/** A pool of `size`-byte buffers that keeps at most `keep` spare ones. */
export function bufferPool(size: number, keep: number): BufferPool {
  const spare: Buffer[] = [];
  return {
    take: () => spare.pop() ?? Buffer.allocUnsafe(size),
    give: (b) => {
      if (spare.length < keep) spare.push(b);
    },
    drain: () => {
      spare.length = 0;
    },
  };
}
