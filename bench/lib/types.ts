/** The benchmark's result document (written as bench/results/latest.json). */
import type { Medians, Sample } from './stats.ts';
import type { ContentDiff } from './treediff.ts';
import type { Breakdown } from './breakdown.ts';

/** One tool or procedure, measured `runs.length` times. */
export interface Row {
  id: string;
  label: string;
  runs: Sample[];
  median: Medians;
  /** Size of what it produced (build side). */
  artifactBytes?: number;
  /** Set when it could not be measured: the reason. */
  error?: string;
  note?: string;
}

export interface VerifyRow extends Row {
  archiveBytes: number;
  /** Bytes tiu verify hashes (verity data area). */
  dataBytes: number;
}

export interface DeviceCase {
  id: 'v1-v2' | 'v1-v1';
  label: string;
  /** Content-changed bytes between the two images (the floor for disk growth). */
  changed?: ContentDiff;
  rows: Row[];
}

export interface Target {
  name: string;
  goal: string;
  measured: string;
  status: 'met' | 'not met' | 'not measured';
}

export interface BenchReport {
  meta: {
    date: string;
    host: string;
    kernel: string;
    cpus: number;
    cpuModel: string;
    memGiB: number;
    node: string;
    runs: number;
    workDir: string;
    tools: Record<string, string>;
    loadAtStart: number;
    loadAtEnd?: number;
    durationS?: number;
  };
  corpus: {
    v1?: string;
    v2?: string;
    /** v1 -> v2 content difference of the two images' trees. */
    diff?: ContentDiff;
    error?: string;
  };
  build: {
    settings?: { compression: string; level: string; blockSize: number; excludes: string[] };
    rows: Row[];
    /** One extra `tiu --debug create` of the v2 tree, split into phases and commands. */
    breakdown?: Breakdown;
    error?: string;
  };
  verity: {
    opensslMBps?: number;
    rows: { name: string; MBps: number; pctOfOpenssl: number }[];
    error?: string;
  };
  verify: { rows: VerifyRow[]; error?: string };
  /** The v2 archive from nginx on 127.0.0.1: tiu's downloader against curl -o. */
  download: { archiveBytes?: number; rows: Row[]; error?: string; large?: { bytes: number; rows: Row[] } };
  /** `tiu check` against 100 versions × 20 device types (bench/phases/repo-check.ts); downloads by row id (last run). */
  repoCheck?: { targets: number; rows: Row[]; downloads: Record<string, { bytes: number; files: string[] }>; error?: string };
  device: {
    cases: DeviceCase[];
    notes: string[];
    /** `tiu status` on the golden device (v1 installed). */
    status?: Row;
    /** One extra `tiu --debug extract` v1 -> v2 run, split into phases and commands. */
    breakdown?: Breakdown;
    error?: string;
  };
  /** Peak RSS of Node.js doing nothing and of `tiu --version` (the floor under every tiu figure). */
  memoryFloor?: { nodeKiB: number; tiuVersionKiB: number };
  deltas: {
    casyncNewChunks?: number;
    casyncNewChunkBytes?: number;
    casyncV2StoreBytes?: number;
    ostreeStaticDeltaBytes?: number;
    ostreeStaticDeltaS?: number;
    errors: string[];
  };
  targets: Target[];
  notMeasured: { what: string; reason: string }[];
  /** The delta phase's section (bench/phases/delta.ts), markdown. */
  delta?: string;
  /** The delta phase's sizes (v1 → v2): tiu's delta and ostree's static delta on the same trees. */
  deltaBytes?: { tiu: number; ostree?: number };
  /** Delta phase: medians of applying the delta and the full archive onto a v1 device (bundle). */
  deltaApply?: { delta: { wallS: number; rssMiB: number }; full: { wallS: number; rssMiB: number } };
}

export function emptyReport(meta: BenchReport['meta']): BenchReport {
  return {
    meta,
    corpus: {},
    build: { rows: [] },
    verity: { rows: [] },
    verify: { rows: [] },
    download: { rows: [] },
    device: { cases: [], notes: [] },
    deltas: { errors: [] },
    targets: [],
    notMeasured: [],
  };
}
