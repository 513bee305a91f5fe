/**
 * V8 settings for the two kinds of device work, switched at run time (the launcher sets its own at
 * start-up, bin/tiu.js). Heuristic switches only: V8 reads them when it decides to optimize a
 * function or to collect, so setting them mid-run is safe.
 */
import v8 from 'node:v8';

/**
 * A full extract's heavy work is native (hashing, system calls, the kernel's squashfs
 * decompression): V8's top-tier compiler (TurboFan) only adds memory there, its compilations'
 * zones and code. On the Debian update (5 runs each, alternating): peak RSS 99.2 -> 92.6 MiB,
 * wall time the same (1.06 vs 1.03 s). Maglev, the mid tier, stays: without it too the peak was
 * 86.9 MiB, but the extract 12% slower (the index parsing and planning are JavaScript).
 */
export function tuneForNativeWork(): void {
  v8.setFlagsFromString('--no-turbofan');
}

/**
 * A delta rebuilds files in JavaScript (ELF prediction, bspatch, zstd with dictionaries), on
 * Maglev too. TurboFan compiles on a thread of its own, whose malloc arena kept ~10 MiB of the
 * peak RSS (Debian update, 7 alternating runs each: 106-108 MiB with TurboFan, 96-98 without;
 * `--no-concurrent-recompilation` avoids that as well, but V8 reads it only at start-up). The hot
 * loops are written so that Maglev does not box their numbers as heap objects (delta/le.ts's
 * reads and writes, bsdiff.ts's addBytes: the ELF step made ~100 MB of such garbage): the apply
 * step is then faster than it was with TurboFan (777 vs 869 ms, medians of 7). And V8 favours
 * memory over speed (more frequent, compacting collections: the buffers and short-lived objects
 * of hundreds of rebuilt files otherwise pile up; peak 124 -> ~109 MiB at ~+0.1 s).
 */
export function tuneForDeltaWork(): void {
  v8.setFlagsFromString('--memory-saver-mode');
}

/** Back to V8's defaults, for a process that goes on after an update (the daemon). */
export function tuneForOtherWork(): void {
  v8.setFlagsFromString('--turbofan');
  v8.setFlagsFromString('--no-memory-saver-mode');
}

